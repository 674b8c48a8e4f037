"""Near-duplicate removal and decontamination with MinHash LSH (datasketch).

Records are compared by the Jaccard similarity of their word shingles (lower-cased
words and punctuation, ``shingle_size`` at a time), estimated by MinHash. LSH finds the
candidates; each candidate is confirmed against the MinHash estimate, so an LSH false
positive never removes a record. The first record (in input order) of a near-duplicate
group is kept; every removal is reported with what it duplicated and how closely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from training.data import Example

_WORD_RE = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, slots=True)
class Removal:
    """One removed record: its source, the record it matched, and their similarity."""

    removed: str
    matched: str
    similarity: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": self.removed,
            "matched": self.matched,
            "similarity": round(self.similarity, 3),
            "reason": self.reason,
        }


def shingles(text: str, size: int) -> set[bytes]:
    """The set of ``size``-word shingles of ``text`` (the whole text when shorter)."""
    words = _WORD_RE.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


class MinHashIndex:
    """An LSH index of MinHash signatures; owns the signatures of what it holds."""

    def __init__(self, *, threshold: float, num_perm: int = 128, shingle_size: int = 3) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._sigs: dict[str, Any] = {}

    def signature(self, text: str) -> Any:
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch(sorted(shingles(text, self.shingle_size)))
        return m

    def add(self, key: str, sig: Any) -> None:
        self._lsh.insert(key, sig)
        self._sigs[key] = sig

    def best_match(self, sig: Any) -> tuple[str, float] | None:
        """The most similar held key at or above the threshold, if any."""
        best: tuple[str, float] | None = None
        for key in self._lsh.query(sig):
            sim = float(sig.jaccard(self._sigs[key]))
            if sim >= self.threshold and (
                best is None or sim > best[1] or (sim == best[1] and key < best[0])
            ):
                best = (key, sim)
        return best


def deduplicate(
    examples: list[Example], *, threshold: float, num_perm: int = 128, shingle_size: int = 3
) -> tuple[list[Example], list[Removal]]:
    """Keep the first of each near-duplicate group; return (kept, removals)."""
    index = MinHashIndex(threshold=threshold, num_perm=num_perm, shingle_size=shingle_size)
    kept: list[Example] = []
    removed: list[Removal] = []
    for i, ex in enumerate(examples):
        sig = index.signature(ex.dedup_text())
        match = index.best_match(sig)
        if match is not None:
            other = examples[int(match[0])]
            removed.append(Removal(ex.source, other.source, match[1], "near-duplicate"))
            continue
        index.add(str(i), sig)
        kept.append(ex)
    return kept, removed


def decontaminate(
    examples: list[Example],
    references: list[Example],
    *,
    threshold: float,
    num_perm: int = 128,
    shingle_size: int = 3,
    label: str = "test",
) -> tuple[list[Example], list[Removal]]:
    """Drop every example that near-duplicates a reference (val or test) example."""
    if not references:
        return list(examples), []
    index = MinHashIndex(threshold=threshold, num_perm=num_perm, shingle_size=shingle_size)
    for j, ref in enumerate(references):
        index.add(str(j), index.signature(ref.dedup_text()))
    kept: list[Example] = []
    removed: list[Removal] = []
    for ex in examples:
        match = index.best_match(index.signature(ex.dedup_text()))
        if match is not None:
            ref = references[int(match[0])]
            removed.append(Removal(ex.source, ref.source, match[1], f"contaminates {label}"))
            continue
        kept.append(ex)
    return kept, removed
