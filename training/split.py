"""A deterministic, stratified train/val/test split.

Each record's stratum is the value at ``stratify_by`` (a dotted path such as
``answer.category``). Inside a stratum, records are ordered by a seeded hash of their
content, so the split depends only on the data and the seed: not on file order, the
machine, or Python's hash randomisation. Each stratum gives ``round(n * ratio)`` records
(at least one) to every held-out split with a non-zero ratio, and the rest to train; a
stratum too small to appear in every split is an error, not a silent gap.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any

from training.data import Example, lookup
from training.errors import DataError

NO_STRATUM = "(all)"


def stratum_of(ex: Example, key: str | None) -> str | None:
    """The stratum label of a record (None when the record lacks the key)."""
    if key is None:
        return NO_STRATUM
    value = lookup(ex.to_record(), key)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def strata(examples: list[Example], key: str | None) -> list[str]:
    """Stratum labels for all records; a key no record has means no stratification
    only for the default key ``task``, and is an error for any other key."""
    labels = [stratum_of(ex, key) for ex in examples]
    missing = [ex.source for ex, lab in zip(examples, labels, strict=True) if lab is None]
    if missing and len(missing) == len(examples) and key == "task":
        return [NO_STRATUM] * len(examples)
    if missing:
        raise DataError(
            f"{len(missing)} record(s) have no value at stratify_by={key!r}",
            issues=[f"{s}: no value at {key!r}" for s in missing],
        )
    return [lab for lab in labels if lab is not None]


def _order_key(seed: int, ex: Example) -> str:
    return hashlib.sha256(f"{seed}:{ex.fingerprint()}".encode()).hexdigest()


def _share(n: int, ratio: float) -> int:
    return 0 if ratio <= 0 else max(1, math.floor(n * ratio + 0.5))


def stratified_split(
    examples: list[Example],
    *,
    ratios: dict[str, float],
    key: str | None,
    seed: int,
) -> dict[str, list[Example]]:
    """Split into ``train`` plus each held-out split of ``ratios`` (e.g. val, test).

    Raises DataError naming the stratum if one is too small for every split to get a
    record of it.
    """
    if not examples:
        raise DataError("nothing to split: the dataset is empty")
    labels = strata(examples, key)
    groups: dict[str, list[Example]] = {}
    for ex, lab in zip(examples, labels, strict=True):
        groups.setdefault(lab, []).append(ex)
    held = [name for name, r in ratios.items() if r > 0]
    out: dict[str, list[Example]] = {"train": [], **{name: [] for name in ratios}}
    for lab in sorted(groups):
        group = sorted(groups[lab], key=lambda ex: _order_key(seed, ex))
        n = len(group)
        shares = {name: _share(n, ratios[name]) for name in held}
        n_train = n - sum(shares.values())
        if n_train < 1:
            plan = "/".join(
                str(round(100 * r)) for r in [1 - sum(ratios.values()), *ratios.values()]
            )
            where = f"stratify_by={key!r} class {lab!r}" if key else "the dataset"
            raise DataError(
                f"{where} has only {n} record(s): the {plan} split would leave it empty "
                f"in train; add records of it, merge it with another class, or change "
                f"stratify_by"
            )
        start = 0
        for name in held:
            out[name].extend(group[start : start + shares[name]])
            start += shares[name]
        out["train"].extend(group[start:])
    for name in out:
        out[name].sort(key=lambda ex: _order_key(seed + 1, ex))
    return out


def class_counts(split: dict[str, list[Example]], key: str | None) -> dict[str, dict[str, int]]:
    """{split: {stratum: count}} for the report."""
    result: dict[str, dict[str, int]] = {}
    for name, items in split.items():
        counts: Counter[str] = Counter()
        for ex in items:
            counts[stratum_of(ex, key) or NO_STRATUM] += 1
        result[name] = dict(sorted(counts.items()))
    return result


def check_classes_present(
    split: dict[str, list[Example]], key: str | None, *, stage: str
) -> dict[str, Any]:
    """Refuse a split where a class of the whole set is missing from train."""
    counts = class_counts(split, key)
    every = set().union(*(c.keys() for c in counts.values()))
    empty = sorted(every - counts.get("train", {}).keys())
    if empty:
        raise DataError(
            f"after {stage}, stratify_by={key!r} class(es) {empty} have no training records"
        )
    return counts
