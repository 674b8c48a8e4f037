"""The data pipeline of a run: read, validate, deduplicate, split, decontaminate, write.

Everything is written under ``<output_dir>/data/``:

- ``sources/*.jsonl``: synthetic sources, materialised so bad records have a line;
- ``train.jsonl``, ``val.jsonl``, ``test.jsonl``: the normalised splits, which
  ``lora-gateway eval --dataset`` reads back, so evaluation is reproducible;
- ``removed.jsonl``: every record dropped by deduplication or decontamination, with
  the record it matched and the estimated similarity;
- ``report.json``: counts per split and class, removals, and each file's sha256.

Nothing here imports torch: a bad dataset fails before any model loads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import DatasetSpec, TrainConfig
from training.data import Example, read_examples, write_jsonl
from training.dedup import Removal, decontaminate, deduplicate
from training.errors import DataError
from training.split import NO_STRATUM, check_classes_present, class_counts, stratified_split


@dataclass(slots=True)
class PreparedData:
    """The splits of a run and where they were written."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    paths: dict[str, Path]
    report: dict[str, Any] = field(default_factory=dict)


def materialise(spec: DatasetSpec, cfg: TrainConfig, data_dir: Path, index: int) -> Path:
    """The JSONL file of a dataset source (synthetic ones are generated to disk)."""
    if spec.path is not None:
        return cfg.resolve(spec.path)
    assert spec.synthetic is not None
    from training.sources import generate

    s = spec.synthetic
    out = data_dir / "sources" / f"{index:02d}-{s.task}-{s.split}-seed{s.seed}-n{s.n}.jsonl"
    if not out.exists():
        write_jsonl(out, generate(s.task, s.n, seed=s.seed, split=s.split))
    return out


def read_sources(
    specs: list[DatasetSpec], cfg: TrainConfig, data_dir: Path, *, offset: int = 0
) -> list[Example]:
    """Read every source, reporting every bad record of every file at once."""
    examples: list[Example] = []
    issues: list[str] = []
    for i, spec in enumerate(specs):
        path = materialise(spec, cfg, data_dir, offset + i)
        if not path.is_file():
            raise DataError(f"dataset file {path} does not exist")
        good, bad = read_examples(path, spec.type)
        if not good and not bad:
            issues.append(f"{path}: holds no records")
        examples.extend(good)
        issues.extend(bad)
    if issues:
        raise DataError(f"{len(issues)} bad record(s)", issues=issues)
    return examples


def _dedup(
    examples: list[Example], cfg: TrainConfig, what: str
) -> tuple[list[Example], list[Removal]]:
    if not cfg.dedup.enabled:
        return examples, []
    kept, removed = deduplicate(
        examples,
        threshold=cfg.dedup.threshold,
        num_perm=cfg.dedup.num_perm,
        shingle_size=cfg.dedup.shingle_size,
    )
    if not kept:
        raise DataError(f"the {what} set is empty after deduplication")
    return kept, removed


def _decon(
    examples: list[Example], refs: list[Example], cfg: TrainConfig, label: str
) -> tuple[list[Example], list[Removal]]:
    if not cfg.decontaminate:
        return examples, []
    return decontaminate(
        examples,
        refs,
        threshold=cfg.dedup.threshold,
        num_perm=cfg.dedup.num_perm,
        shingle_size=cfg.dedup.shingle_size,
        label=label,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_data(cfg: TrainConfig, *, write: bool = True) -> PreparedData:
    """Run the whole pipeline for a config; raise DataError on any bad input."""
    data_dir = cfg.run_dir / "data"
    pool = read_sources(cfg.datasets, cfg, data_dir)
    explicit = (
        read_sources(cfg.test_datasets, cfg, data_dir, offset=len(cfg.datasets))
        if cfg.test_datasets
        else []
    )
    n_read = {"pool": len(pool), "test_datasets": len(explicit)}
    removals: list[Removal] = []

    pool, removed = _dedup(pool, cfg, "training")
    removals += removed
    if explicit:
        explicit, removed = _dedup(explicit, cfg, "test")
        removals += removed
        # Decontaminate before splitting, so that the split's class counts hold.
        pool, removed = _decon(pool, explicit, cfg, "test")
        removals += removed
        if not pool:
            raise DataError("no training records left after decontamination against the test set")
        ratios = {"val": cfg.val_set_size}
    else:
        ratios = {"val": cfg.val_set_size, "test": cfg.test_set_size}

    split = stratified_split(pool, ratios=ratios, key=cfg.stratify_by, seed=cfg.split_seed)
    test = explicit or split.get("test", [])
    val = split["val"]
    # The pool was deduplicated as a whole, so this only bites across sources
    # deduplication could not see (explicit test sets) or with dedup disabled.
    train, removed = _decon(split["train"], val + test, cfg, "val/test")
    removals += removed
    val, removed = _decon(val, test, cfg, "test")
    removals += removed
    if not train:
        raise DataError("no training records left after decontamination")
    splits = {"train": train, "val": val, "test": test}
    # Every class the pool holds must still be trainable; an explicit test set may hold
    # classes training never saw (reported below, not refused).
    checked = {"train": train, "val": val} if explicit else splits
    counts = check_classes_present(checked, cfg.stratify_by, stage="decontamination")
    counts["test"] = class_counts({"test": test}, cfg.stratify_by)["test"]
    unseen = sorted(set(counts["test"]) - set(counts["train"]) - {NO_STRATUM})

    paths = {name: data_dir / f"{name}.jsonl" for name in splits}
    report: dict[str, Any] = {
        "read": n_read,
        "sizes": {name: len(items) for name, items in splits.items()},
        "ratios": {"train": round(1 - sum(ratios.values()), 4), **ratios},
        "test_source": "test_datasets" if explicit else "split",
        "stratify_by": cfg.stratify_by,
        "split_seed": cfg.split_seed,
        "class_counts": counts,
        "test_classes_unseen_in_train": unseen,
        "dedup": {
            **cfg.dedup.model_dump(),
            "removed": sum(r.reason == "near-duplicate" for r in removals),
        },
        "decontamination": {
            "enabled": cfg.decontaminate,
            "removed": sum(r.reason != "near-duplicate" for r in removals),
        },
        "removed_examples": [r.to_dict() for r in removals[:20]],
    }
    if write:
        for name, items in splits.items():
            write_jsonl(paths[name], (ex.to_record() for ex in items))
        paths["removed"] = data_dir / "removed.jsonl"
        write_jsonl(paths["removed"], (r.to_dict() for r in removals))
        report["sha256"] = {name: _sha256(paths[name]) for name in splits}
        (data_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return PreparedData(train=train, val=val, test=test, paths=paths, report=report)
