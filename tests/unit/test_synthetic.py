"""The synthetic logistics generator: determinism, schemas, rules, split windows, clean corpus."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from training import synthetic
from training.synthetic import (
    ANSWER_SCHEMAS,
    FORBIDDEN_IN_CORPUS,
    SYSTEM_PROMPTS,
    TASKS,
    chat_corpus,
    generate,
    pretraining_corpus,
    render_answer,
)
from training.synthetic_corpus import (
    _GOODS_NATURE,
    INTERFACE_FIELDS,
    _reference,
    _scan_log,
    haul,
)
from training.synthetic_tasks import eta_bucket, sample_route
from training.synthetic_vocab import CARRIERS, CITIES, GOODS, VENDORS

N = 150


@pytest.fixture(scope="module")
def data() -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {(t, s): generate(t, N, seed=3, split=s) for t in TASKS for s in ("train", "test")}  # type: ignore[arg-type]


# ---------------------------------------------------------------- determinism and shape


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_records_other_seed_other_records(task: str) -> None:
    a = generate(task, 40, seed=11, split="train")
    assert a == generate(task, 40, seed=11, split="train")
    assert [r["prompt"] for r in a] != [
        r["prompt"] for r in generate(task, 40, seed=12, split="train")
    ]
    val = generate(task, 40, seed=11, split="val")
    assert {r["prompt"] for r in a}.isdisjoint(r["prompt"] for r in val)


def test_the_global_rng_is_neither_used_nor_disturbed() -> None:
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate("route-optimization", 20, seed=1, split="test")
    pretraining_corpus(20, seed=1)
    assert random.random() == expected


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_records_are_chat_records_with_ground_truth(
    data: dict[tuple[str, str], list[dict[str, Any]]], task: str, split: str
) -> None:
    records = data[(task, split)]
    assert len(records) == N
    assert len({r["prompt"] for r in records}) == N, "prompts repeat within a split"
    for r in records:
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert r["task"] == task and r["meta"]["split"] == split
        assert r["messages"][0]["content"] == SYSTEM_PROMPTS[task]
        assert r["messages"][1]["content"] == r["prompt"]
        content = r["messages"][2]["content"]
        assert json.loads(content) == r["answer"]
        assert '": ' not in content and '", "' not in content  # compact separators
        jsonschema.validate(r["answer"], ANSWER_SCHEMAS[task])
        json.dumps(r)  # JSONL-ready


def test_schemas_are_valid_json_schemas_and_refuse_wrong_answers() -> None:
    for schema in ANSWER_SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    bad = {"category": "perishable", "eta_bucket": "tomorrow"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, ANSWER_SCHEMAS["shipment-classification"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"lane_id": "X-1"}, ANSWER_SCHEMAS["route-optimization"])


def test_invoice_money_is_written_as_printed() -> None:
    answer = {
        "invoice_number": "A-1",
        "vendor": "V",
        "date": "2024-01-02",
        "currency": "EUR",
        "total": 24.7,
        "line_items": [{"description": "x", "quantity": 2, "unit_price": 12.35, "amount": 24.7}],
    }
    text = render_answer("invoice-parsing", answer)
    assert '"total":24.70' in text and '"unit_price":12.35' in text
    assert json.loads(text) == answer


# ---------------------------------------------------------------- rules, recomputed here


def _category(cats: list[str]) -> str:
    for c in ("hazardous", "perishable", "fragile", "oversized", "general", "documents"):
        if c in cats:
            return c
    raise AssertionError(cats)


def _eta(service: str, km: int) -> str:
    table = {
        "express": ["same_day", "1-2_days", "3-5_days"],
        "standard": ["1-2_days", "3-5_days", "6+_days"],
        "economy": ["3-5_days", "3-5_days", "6+_days"],
    }
    return table[service][0 if km < 300 else 1 if km < 1000 else 2]


@pytest.mark.parametrize("split", ["train", "test"])
def test_shipment_labels_follow_the_rule(
    data: dict[tuple[str, str], list[dict[str, Any]]], split: str
) -> None:
    seen_cats, seen_eta = set(), set()
    for r in data[("shipment-classification", split)]:
        m = r["meta"]
        cats = [g["category"] for g in m["goods"]]
        assert all(g["item"] in GOODS[g["category"]] for g in m["goods"])
        assert r["answer"] == {
            "category": _category(cats),
            "eta_bucket": _eta(m["service_level"], m["distance_km"]),
        }
        assert f"{m['distance_km']} km" in r["prompt"]
        assert all(
            g["item"].removeprefix("a ").removeprefix("an ") in r["prompt"] for g in m["goods"]
        )
        seen_cats.add(r["answer"]["category"])
        seen_eta.add(r["answer"]["eta_bucket"])
    assert len(seen_cats) == 6 and len(seen_eta) == 4


def test_eta_thresholds() -> None:
    assert eta_bucket("express", 299) == "same_day"
    assert eta_bucket("express", 300) == "1-2_days"
    assert eta_bucket("standard", 999) == "3-5_days"
    assert eta_bucket("standard", 1000) == "6+_days"
    assert eta_bucket("economy", 50) == "3-5_days"


@pytest.mark.parametrize("split", ["train", "test"])
def test_invoice_answers_match_the_printed_figures(
    data: dict[tuple[str, str], list[dict[str, Any]]], split: str
) -> None:
    for r in data[("invoice-parsing", split)]:
        a, m = r["answer"], r["meta"]
        lines = m["line_cents"]
        assert [li["quantity"] for li in a["line_items"]] == [q for q, _, _ in lines]
        assert all(q * u == amt for q, u, amt in lines)
        assert m["subtotal_cents"] == sum(amt for _, _, amt in lines)
        assert m["total_cents"] == m["subtotal_cents"] + m["vat_cents"]
        assert round(a["total"] * 100) == m["total_cents"]
        for field in ("invoice_number", "vendor", "currency"):
            assert a[field] in r["prompt"]
        assert f"{m['total_cents'] // 100}.{m['total_cents'] % 100:02d}" in r["prompt"]
        for li in a["line_items"]:
            assert li["description"] in r["prompt"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_route_choice_follows_the_rule(
    data: dict[tuple[str, str], list[dict[str, Any]]], split: str
) -> None:
    reasons = set()
    for r in data[("route-optimization", split)]:
        lanes, deadline = r["meta"]["lanes"], r["meta"]["deadline_days"]
        on_time = sorted((ln["cost"], ln["id"]) for ln in lanes if ln["transit_days"] <= deadline)
        if on_time:
            assert on_time[0][0] < on_time[1][0] if len(on_time) > 1 else True, "tie in cost"
            reason = "only_on_time" if len(on_time) == 1 else "cheapest_on_time"
            expected = {"lane_id": on_time[0][1], "reason": reason}
        else:
            fastest = sorted((ln["transit_days"], ln["id"]) for ln in lanes)
            assert fastest[0][0] < fastest[1][0], "tie in transit time"
            expected = {"lane_id": fastest[0][1], "reason": "fastest_none_on_time"}
        assert r["answer"] == expected
        assert all(ln["id"] in r["prompt"] for ln in lanes)
        reasons.add(expected["reason"])
    assert len(reasons) == 3


def test_route_answers_are_not_just_the_cheapest_lane(
    data: dict[tuple[str, str], list[dict[str, Any]]],
) -> None:
    records = data[("route-optimization", "train")]
    cheapest = sum(
        r["answer"]["lane_id"] == min(r["meta"]["lanes"], key=lambda ln: ln["cost"])["id"]
        for r in records
    )
    assert cheapest < 0.6 * len(records)


# ---------------------------------------------------------------- the test window


def _names(pool: dict[str, tuple[Any, ...]], window: str) -> set[str]:
    return {x.name if hasattr(x, "name") else x for x in pool[window]}


def test_windows_share_no_city_carrier_or_vendor() -> None:
    for pool in (CITIES, VENDORS):
        assert _names(pool, "train").isdisjoint(_names(pool, "test"))
    assert {c.code for c in CARRIERS["train"]}.isdisjoint(c.code for c in CARRIERS["test"])


@pytest.mark.parametrize("task", TASKS)
def test_train_prompts_never_name_a_test_city_carrier_or_vendor(
    data: dict[tuple[str, str], list[dict[str, Any]]], task: str
) -> None:
    test_words = {c.name for c in CITIES["test"]} | {c.code for c in CARRIERS["test"]}
    test_words |= {v.name for v in VENDORS["test"]}
    train_words = {c.name for c in CITIES["train"]} | {c.code for c in CARRIERS["train"]}
    train_words |= {v.name for v in VENDORS["train"]}
    for r in data[(task, "train")]:
        assert not any(re.search(rf"\b{re.escape(w)}\b", r["prompt"]) for w in test_words)
    for r in data[(task, "test")]:
        assert not any(re.search(rf"\b{re.escape(w)}\b", r["prompt"]) for w in train_words)
    train_prompts = {r["prompt"] for r in data[(task, "train")]}
    assert train_prompts.isdisjoint(r["prompt"] for r in data[(task, "test")])


def test_test_window_is_harder(data: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    def goods(split: str) -> float:
        return mean([len(r["meta"]["goods"]) for r in data[("shipment-classification", split)]])

    def near_threshold(split: str) -> float:
        kms = [r["meta"]["distance_km"] for r in data[("shipment-classification", split)]]
        return mean([min(abs(k - 300) / 300, abs(k - 1000) / 1000) < 0.2 for k in kms])

    def items(split: str) -> float:
        return mean([len(r["answer"]["line_items"]) for r in data[("invoice-parsing", split)]])

    def slack(split: str) -> float:
        rs = data[("route-optimization", split)]
        return mean(
            [
                mean(
                    [
                        abs(ln["transit_days"] - r["meta"]["deadline_days"])
                        for ln in r["meta"]["lanes"]
                    ]
                )
                for r in rs
            ]
        )

    assert goods("test") > goods("train") + 1
    assert near_threshold("test") > near_threshold("train") + 0.2
    assert items("test") > items("train") + 1
    assert slack("test") < slack("train")


# ---------------------------------------------------------------- pre-training corpus


def test_corpus_is_deterministic_and_varied() -> None:
    docs = pretraining_corpus(300, seed=5)
    assert docs == pretraining_corpus(300, seed=5)
    assert docs != pretraining_corpus(300, seed=6)
    assert len(set(docs)) > 290
    assert chat_corpus(30, seed=5) == chat_corpus(30, seed=5)


def _json_objects(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _is_interface_record(text: str) -> bool:
    rows = [json.loads(line) for line in text.splitlines()]
    return all(isinstance(r, dict) and set(r) in _INTERFACE_SHAPES for r in rows)


_INTERFACE_SHAPES = [
    {"zone", "handling", "slots"},
    {"week", "promise", "share"},
    {"audit", "decision", "count"},
    {"field", "type", "required"},
]


def test_corpus_holds_no_task_answer() -> None:
    docs = pretraining_corpus(2000, seed=0)
    chats = chat_corpus(500, seed=0)
    answer_keys = {k for s in ANSWER_SCHEMAS.values() for k in s["properties"]}
    records = [d for d in docs if d.startswith("{") and _is_interface_record(d)]
    assert 100 < len(records) < 300  # about 8% of the documents
    texts = [d for d in docs if d not in records] + [m["content"] for c in chats for m in c]
    for text in texts:
        low = text.lower()
        hits = [w for w in FORBIDDEN_IN_CORPUS if w in low]
        assert not hits, f"{hits} in {text[:200]!r}"
        for obj in _json_objects(text):
            rows = obj if isinstance(obj, list) else [obj]
            for row in rows:
                if isinstance(row, dict):
                    assert not answer_keys & set(row), row
    for p in SYSTEM_PROMPTS.values():
        assert p not in "\n".join(texts)


def test_interface_records_use_labels_apart_from_any_task_input() -> None:
    docs = pretraining_corpus(2000, seed=0)
    records = [d for d in docs if d.startswith("{") and _is_interface_record(d)]
    world = [c.name for w in CITIES.values() for c in w] + [
        c.code for w in CARRIERS.values() for c in w
    ]
    world += [g.removeprefix("a ").removeprefix("an ") for gs in GOODS.values() for g in gs]
    seen_labels: set[str] = set()
    for text in records:
        assert not [w for w in world if w in text], text
        for row in map(json.loads, text.splitlines()):
            # The label is a value; the only answer key that appears is a field's name.
            assert not set(row) & {k for s in ANSWER_SCHEMAS.values() for k in s["properties"]}
            seen_labels |= {v for v in row.values() if isinstance(v, str)}
    labels = set(synthetic.ETA_BUCKETS) | set(synthetic.ROUTE_REASONS)
    labels |= set(synthetic.CATEGORY_PRECEDENCE)
    assert labels <= seen_labels
    keys = {k for s in ANSWER_SCHEMAS.values() for k in s["properties"]}
    keys |= set(
        ANSWER_SCHEMAS["invoice-parsing"]["properties"]["line_items"]["items"]["properties"]
    )
    assert keys == set(INTERFACE_FIELDS) and keys <= seen_labels


def test_forbidden_list_covers_every_label_and_key() -> None:
    labels = set(synthetic.ETA_BUCKETS) | set(synthetic.ROUTE_REASONS)
    labels |= {c for c in synthetic.CATEGORY_PRECEDENCE if c not in ("general", "documents")}
    assert labels <= set(FORBIDDEN_IN_CORPUS)
    assert {"category", "eta_bucket", "lane_id", "reason", "line_items"} <= set(FORBIDDEN_IN_CORPUS)


def test_glossary_names_the_interface_but_pairs_no_document() -> None:
    glossary = "\n".join(synthetic.tokenizer_glossary())
    assert "perishable" in glossary and "unit_price" in glossary
    assert "Contents:" not in glossary and "INVOICE" not in glossary


# ---------------------------------------------------------------- bad input


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown task 'parcel-sorting'"):
        generate("parcel-sorting", 1, seed=0, split="train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        generate("invoice-parsing", 1, seed=0, split="dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be >= 0"):
        generate("invoice-parsing", -1, seed=0, split="train")
    with pytest.raises(ValueError, match="n_docs must be >= 0"):
        pretraining_corpus(-1, seed=0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        chat_corpus(-2, seed=0)
    with pytest.raises(ValueError, match="unknown task"):
        render_answer("nope", {})
    with pytest.raises(ValueError, match="no city pair"):
        sample_route(random.Random(0), "train", 9000, 9999)


def test_underscore_task_names_are_accepted() -> None:
    a = generate("invoice_parsing", 2, seed=0, split="test")
    assert a == generate("invoice-parsing", 2, seed=0, split="test")
    assert generate("route-optimization", 0, seed=0, split="train") == []


def test_import_is_light() -> None:
    code = (
        "import sys, training.synthetic\n"
        "heavy = ('torch', 'transformers', 'tokenizers', 'numpy')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_haul_classes_share_the_eta_thresholds() -> None:
    assert [haul(km) for km in (20, 299, 300, 999, 1000, 3400)] == [
        "short",
        "short",
        "medium",
        "medium",
        "long",
        "long",
    ]
    # The haul class alone never decides the ETA bucket: the service level still matters.
    for km in (150, 600, 2000):
        assert len({eta_bucket(s, km) for s in ("express", "standard", "economy")}) >= 2


def test_goods_knowledge_covers_every_category_without_its_label() -> None:
    assert set(_GOODS_NATURE) == set(GOODS)
    for cat, phrases in _GOODS_NATURE.items():
        assert phrases and all("{item}" in p for p in phrases)
        assert not [w for w in FORBIDDEN_IN_CORPUS for p in phrases if w in p.lower()], cat


def test_scan_logs_repeat_their_ids_in_order() -> None:
    rng = random.Random(4)
    for _ in range(50):
        first, second = _scan_log(rng).split("\n")
        ids1 = first.split(": ", 1)[1]
        ids2 = second.split(": ", 1)[1]
        assert ids1 == ids2 and len(ids1.split(", ")) >= 4
        assert first.split(":")[0] != second.split(":")[0]


def test_reference_notes_copy_from_their_own_document() -> None:
    rng = random.Random(5)
    for _ in range(60):
        doc = _reference(rng)
        body, note = doc.rsplit("\n", 1)
        copied = re.findall(r"Booked (\S+):", note)
        copied += re.findall(r"Paid \S+ \S+ to (.+) for invoice (.+) of \d{4}-", note)[0] if (
            note.startswith("Paid")
        ) else []
        copied += re.findall(r"Delivered (\S+) from", note)
        assert copied and all(c in body for c in copied), doc
