"""Dedup (MinHash LSH), decontamination, the stratified split and the prepare pipeline."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from training.config import parse_config
from training.data import Example
from training.dedup import decontaminate, deduplicate, shingles
from training.errors import DataError
from training.prepare import prepare_data
from training.split import stratified_split

WORDS = (
    "pallet crate frozen fish steel pipes glass vases toner paper lithium batteries "
    "fresh flowers machine parts furniture textiles medicine samples wine bottles"
).split()


def doc(i: int, n_words: int = 30) -> str:
    rng = random.Random(i)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(n_words))


def ex(text: str, source: str, label: str = "a", answer: str = "x") -> Example:
    return Example(
        "chat",
        source,
        messages=[{"role": "user", "content": text}, {"role": "assistant", "content": answer}],
        extra={"task": "t", "answer": {"category": label}},
    )


def test_shingles() -> None:
    assert shingles("A b, c", 2) == {b"a b", b"b ,", b", c"}
    assert shingles("short", 3) == {b"short"}


def test_near_duplicates_are_removed_and_reported() -> None:
    base = doc(1)
    near = base + " extra"  # one more word: Jaccard ~0.97
    other = doc(2)
    kept, removed = deduplicate(
        [ex(base, "f:1"), ex(other, "f:2"), ex(near, "f:3"), ex(base, "f:4")], threshold=0.8
    )
    assert [e.source for e in kept] == ["f:1", "f:2"]
    assert [(r.removed, r.matched) for r in removed] == [("f:3", "f:1"), ("f:4", "f:1")]
    assert removed[1].similarity == 1.0
    assert 0.8 <= removed[0].similarity < 1.0
    assert removed[0].to_dict()["reason"] == "near-duplicate"


def test_threshold_decides() -> None:
    base = doc(3)
    words = base.split()
    half = " ".join(words[:15] + doc(4).split()[:15])  # about a third of shingles shared
    kept_strict, _ = deduplicate([ex(base, "1"), ex(half, "2")], threshold=0.9)
    kept_loose, removed = deduplicate([ex(base, "1"), ex(half, "2")], threshold=0.2)
    assert len(kept_strict) == 2
    assert len(kept_loose) == 1 and removed[0].removed == "2"


def test_decontamination_drops_train_records_close_to_test() -> None:
    test = [ex(doc(10), "test:1"), ex(doc(11), "test:2")]
    train = [ex(doc(10) + " again", "train:1"), ex(doc(12), "train:2"), ex(doc(11), "train:3")]
    kept, removed = decontaminate(train, test, threshold=0.8)
    assert [e.source for e in kept] == ["train:2"]
    assert {(r.removed, r.matched) for r in removed} == {
        ("train:1", "test:1"),
        ("train:3", "test:2"),
    }
    assert all(r.reason == "contaminates test" for r in removed)
    same, none = decontaminate(train, [], threshold=0.8)
    assert same == train and none == []


def pool(n_per_class: dict[str, int]) -> list[Example]:
    out: list[Example] = []
    i = 0
    for label, n in n_per_class.items():
        for _ in range(n):
            out.append(ex(doc(100 + i), f"f:{i}", label=label))
            i += 1
    return out


def sources(split: dict[str, list[Example]]) -> dict[str, list[str]]:
    return {k: [e.source for e in v] for k, v in split.items()}


def test_split_is_deterministic_and_order_independent() -> None:
    items = pool({"a": 50, "b": 30, "c": 20})
    ratios = {"val": 0.1, "test": 0.1}
    one = stratified_split(items, ratios=ratios, key="answer.category", seed=7)
    shuffled = list(items)
    random.Random(0).shuffle(shuffled)
    two = stratified_split(shuffled, ratios=ratios, key="answer.category", seed=7)
    assert sources(one) == sources(two)
    other = stratified_split(items, ratios=ratios, key="answer.category", seed=8)
    assert sources(other) != sources(one)
    all_sources = sorted(s for v in sources(one).values() for s in v)
    assert all_sources == sorted(e.source for e in items)  # a partition


def test_split_is_stratified_80_10_10() -> None:
    items = pool({"a": 50, "b": 30, "c": 20})
    split = stratified_split(items, ratios={"val": 0.1, "test": 0.1}, key="answer.category", seed=0)
    counts = {
        name: {lab: sum(e.answer["category"] == lab for e in part) for lab in "abc"}
        for name, part in split.items()
    }
    assert counts == {
        "train": {"a": 40, "b": 24, "c": 16},
        "val": {"a": 5, "b": 3, "c": 2},
        "test": {"a": 5, "b": 3, "c": 2},
    }


def test_a_class_too_small_for_the_split_is_an_error() -> None:
    items = pool({"a": 40, "rare": 2})
    with pytest.raises(DataError) as info:
        stratified_split(items, ratios={"val": 0.1, "test": 0.1}, key="answer.category", seed=0)
    msg = str(info.value)
    assert "'rare'" in msg and "only 2 record(s)" in msg and "80/10/10" in msg


def test_missing_stratify_key() -> None:
    items = pool({"a": 10})
    with pytest.raises(DataError) as info:
        stratified_split(items, ratios={"val": 0.1}, key="answer.colour", seed=0)
    assert "stratify_by='answer.colour'" in str(info.value) and "f:0" in str(info.value)
    plain = [Example("completion", f"c:{i}", text=doc(i)) for i in range(10)]
    split = stratified_split(plain, ratios={"val": 0.2}, key="task", seed=0)
    assert len(split["val"]) == 2  # no task anywhere: one stratum


# --- the whole pipeline --------------------------------------------------------------


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def chat_record(i: int, label: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": doc(1000 + i)},
            {"role": "assistant", "content": json.dumps({"category": label})},
        ],
        "task": "shipment-classification",
        "answer": {"category": label},
    }


def cfg_for(tmp: Path, **over: Any) -> Any:
    data: dict[str, Any] = {
        "base_model": "/nonexistent",
        "datasets": [{"path": "train.jsonl", "type": "chat"}],
        "stratify_by": "answer.category",
        "output_dir": str(tmp / "run"),
    }
    data.update(over)
    return parse_config(data, config_dir=tmp, cuda_available=False)


def test_prepare_writes_reproducible_splits_and_a_report(tmp_path: Path) -> None:
    records = [chat_record(i, "ab"[i % 2]) for i in range(60)]
    records.append(records[3])  # an exact duplicate
    write(tmp_path / "train.jsonl", records)
    cfg = cfg_for(tmp_path)
    first = prepare_data(cfg)
    assert first.report["sizes"] == {"train": 48, "val": 6, "test": 6}
    assert first.report["dedup"]["removed"] == 1
    assert first.report["class_counts"]["val"] == {"a": 3, "b": 3}
    removed = [json.loads(x) for x in first.paths["removed"].read_text().splitlines()]
    assert removed[0]["removed"].endswith("train.jsonl:61")
    assert removed[0]["matched"].endswith("train.jsonl:4")
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    second = prepare_data(cfg)
    assert json.loads((tmp_path / "run" / "data" / "report.json").read_text()) == report
    assert second.paths["test"].read_bytes() == first.paths["test"].read_bytes()
    back = [json.loads(x) for x in first.paths["test"].read_text().splitlines()]
    assert all("messages" in r and r["answer"]["category"] in "ab" for r in back)


def test_prepare_reports_bad_records_across_files(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", [chat_record(0, "a"), {"messages": "nope"}])
    (tmp_path / "more.jsonl").write_text('{"broken\n')
    cfg = cfg_for(
        tmp_path,
        datasets=[{"path": "train.jsonl", "type": "chat"}, {"path": "more.jsonl", "type": "chat"}],
    )
    with pytest.raises(DataError) as info:
        prepare_data(cfg)
    assert len(info.value.issues) == 2
    assert info.value.issues[0].startswith(f"{tmp_path / 'train.jsonl'}:2: ")
    assert info.value.issues[1].startswith(f"{tmp_path / 'more.jsonl'}:1: malformed JSON")


def test_prepare_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(cfg_for(tmp_path))


def test_explicit_test_set_decontaminates_training_data(tmp_path: Path) -> None:
    records = [chat_record(i, "ab"[i % 2]) for i in range(40)]
    write(tmp_path / "train.jsonl", records)
    write(tmp_path / "test.jsonl", records[:5])  # five test records leaked into training
    cfg = cfg_for(tmp_path, test_datasets=[{"path": "test.jsonl", "type": "chat"}])
    prepared = prepare_data(cfg)
    assert prepared.report["decontamination"]["removed"] == 5
    assert prepared.report["test_source"] == "test_datasets"
    assert len(prepared.test) == 5 and len(prepared.train) + len(prepared.val) == 35
    test_texts = {e.dedup_text() for e in prepared.test}
    assert not test_texts & {e.dedup_text() for e in prepared.train + prepared.val}


def test_nothing_left_after_decontamination_is_an_error(tmp_path: Path) -> None:
    records = [chat_record(i, "a") for i in range(10)]
    write(tmp_path / "train.jsonl", records)
    write(tmp_path / "test.jsonl", records)
    cfg = cfg_for(tmp_path, test_datasets=[{"path": "test.jsonl", "type": "chat"}])
    with pytest.raises(DataError, match="no training records left"):
        prepare_data(cfg)


def test_dedup_of_a_pool_of_copies_leaves_too_little_to_split(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", [chat_record(0, "a")] * 30)
    with pytest.raises(DataError, match="only 1 record"):
        prepare_data(cfg_for(tmp_path))


def test_test_classes_unseen_in_training_are_reported(tmp_path: Path) -> None:
    records = [chat_record(i, "a") for i in range(30)] + [
        chat_record(100 + i, "b") for i in range(3)
    ]
    write(tmp_path / "train.jsonl", records)
    write(tmp_path / "test.jsonl", records[30:])  # every "b" document is a test document
    cfg = cfg_for(tmp_path, test_datasets=[{"path": "test.jsonl", "type": "chat"}])
    prepared = prepare_data(cfg)
    assert prepared.report["test_classes_unseen_in_train"] == ["b"]


def test_a_class_emptied_in_train_by_decontamination_is_an_error(tmp_path: Path) -> None:
    # With dedup off, three copies of the one "b" document land in train, val and test;
    # decontamination then removes the train copy and "b" has nothing to learn from.
    records = [chat_record(i, "a") for i in range(30)] + [chat_record(100, "b")] * 3
    write(tmp_path / "train.jsonl", records)
    cfg = cfg_for(tmp_path, dedup={"enabled": False})
    with pytest.raises(DataError, match=r"after decontamination.*\['b'\] have no training"):
        prepare_data(cfg)


def test_synthetic_sources_are_materialised(tmp_path: Path) -> None:
    cfg = cfg_for(
        tmp_path,
        datasets=[{"synthetic": {"task": "route-optimization", "n": 40, "seed": 3}}],
        test_datasets=[{"synthetic": {"task": "route-optimization", "n": 10, "split": "test"}}],
        stratify_by=None,
    )
    prepared = prepare_data(cfg)
    files = sorted(p.name for p in (tmp_path / "run" / "data" / "sources").iterdir())
    assert files == [
        "00-route-optimization-train-seed3-n40.jsonl",
        "01-route-optimization-test-seed0-n10.jsonl",
    ]
    assert prepared.report["sizes"] == {"train": 36, "val": 4, "test": 10}
    assert all(e.task == "route-optimization" for e in prepared.train)
