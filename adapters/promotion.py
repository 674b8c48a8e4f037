"""The promotion rule: may a candidate version take an alias from the version it holds?

Pure: eval reports in, a :class:`Decision` out, or an error raised (the
:mod:`adapters.errors` tree). No database, no HTTP; :mod:`adapters.promoting` applies it
inside a catalogue transaction.

The rule, "at least as good, within its interval":

- Both versions' eval reports must score the same task metric (the report's
  ``primary_metric``) on the same test set (its ``dataset_sha256``), for the same task.
  Otherwise 409 ``eval_incomparable``. A version without a report: 409 ``eval_missing``;
  a report this module cannot read a score from: 409 ``eval_unusable``.
- Higher is better for every task metric (exact match, F1, the accuracies).
- The candidate may take the alias when the upper bound of its 95% bootstrap interval
  reaches the current version's point estimate: ``candidate.ci95[1] >= current.value``.
  It is refused only when the current version's measured score lies above everything
  the candidate's interval allows, i.e. the data show it is worse (409
  ``candidate_worse``). A report without an interval (the offline ``lora-gateway eval``)
  counts as its point estimate: ``candidate.value >= current.value``.
- An alias that points nowhere yet is taken without a comparison; one that already
  points at the candidate is left as it is.
- ``force`` skips the comparison's refusals (the comparison is still recorded when it
  can be made) and needs a non-blank ``reason`` (400 ``reason_required``).

Where a score comes from. A report of ``lora-gateway eval --gateway``
(:mod:`training.serve_report`) has ``arms``: the arm answered only by this version
(its ``adapter_versions``) is used, else, among the arms that record no versions, the
one named ``adapter``, else the only one besides ``prompt-only``; its ``primary`` and
``ci95``. An arm answered by other versions (a split route's ``adapter`` arm is a mix)
never scores this one. A report of the offline
``lora-gateway eval`` (:mod:`training.evaluate`) has an ``adapter`` summary: its value of
the primary metric, without an interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.errors import ConflictError, InvalidRequestError, LoraGatewayError

BASELINE_ARM = "prompt-only"
ADAPTER_ARM = "adapter"
MAX_REASON = 1000
# Reported scores are rounded to 4 decimals; equal ones must compare equal.
_EPS = 1e-9


class EvalReportError(LoraGatewayError, ValueError):
    """An eval report from which no score can be read; the message says why."""


def fmt(x: float) -> str:
    """A score as the report gives it, without trailing zeros: 0.71, 0.8333, 1."""
    return f"{x:.4f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class EvalScore:
    """One version's score on one test set: the task metric, its value and 95% interval."""

    metric: str
    value: float
    ci95: tuple[float, float] | None
    test_set: str  # sha256 of the test file
    task: str | None = None
    n: int | None = None
    arm: str | None = None  # the arm of a gateway eval; None for an offline eval

    @property
    def upper(self) -> float:
        return self.ci95[1] if self.ci95 is not None else self.value

    def describe(self) -> str:
        """``exact_match 0.71 (0.62–0.8)``."""
        ci = f" ({fmt(self.ci95[0])}–{fmt(self.ci95[1])})" if self.ci95 is not None else ""
        return f"{self.metric} {fmt(self.value)}{ci}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "ci95": list(self.ci95) if self.ci95 is not None else None,
            "test_set": self.test_set,
            "task": self.task,
            "n": self.n,
            "arm": self.arm,
        }


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _pick_arm(arms: Mapping[str, Any], version_id: str) -> tuple[str, Mapping[str, Any]]:
    scored = {k: v for k, v in arms.items() if k != BASELINE_ARM and isinstance(v, Mapping)}
    unattributed = {}
    for name, entry in scored.items():
        answered = entry.get("adapter_versions")
        if isinstance(answered, Mapping) and set(answered) == {version_id}:
            return name, entry
        if not answered:  # an arm that records no versions may be this one's
            unattributed[name] = entry
    # An arm answered by other versions (a split's mix among them) is never this one's.
    if ADAPTER_ARM in unattributed:
        return ADAPTER_ARM, unattributed[ADAPTER_ARM]
    if len(unattributed) == 1:
        return next(iter(unattributed.items()))
    answered_by = {
        k: sorted(v["adapter_versions"]) for k, v in scored.items() if k not in unattributed
    }
    raise EvalReportError(
        f"none of its arms {sorted(arms)} was answered by {version_id} alone (answered by: "
        f"{answered_by or 'none recorded'}); score it in an arm of its own, e.g. "
        f"--arms {BASELINE_ARM},{version_id}"
    )


def read_score(report: object, version_id: str) -> EvalScore:
    """The score ``report`` gives the version ``version_id`` (``name@N``); EvalReportError."""
    if not isinstance(report, Mapping):
        raise EvalReportError("it is not a JSON object")
    metric = report.get("primary_metric")
    if not isinstance(metric, str) or not metric:
        raise EvalReportError("it names no primary_metric")
    test_set = report.get("dataset_sha256")
    if not isinstance(test_set, str) or not test_set:
        raise EvalReportError("it names no test set (dataset_sha256)")
    task = report.get("task") if isinstance(report.get("task"), str) else None
    arm: str | None = None
    arms = report.get("arms")
    if isinstance(arms, Mapping):
        arm, entry = _pick_arm(arms, version_id)
        value = _number(entry.get("primary"))
        if value is None and isinstance(entry.get("metrics"), Mapping):
            value = _number(entry["metrics"].get(metric))
        raw_ci, n = entry.get("ci95"), entry.get("n")
    elif isinstance(report.get(ADAPTER_ARM), Mapping):
        value = _number(report[ADAPTER_ARM].get(metric))
        raw_ci, n = None, report.get("n")
    else:
        raise EvalReportError(
            "it has neither 'arms' (lora-gateway eval --gateway) nor an 'adapter' summary "
            "(lora-gateway eval)"
        )
    where = f"arm {arm!r}" if arm is not None else "the adapter summary"
    if value is None:
        raise EvalReportError(f"{where} has no number for {metric}")
    ci95: tuple[float, float] | None = None
    if raw_ci is not None:
        bounds = [_number(b) for b in raw_ci] if isinstance(raw_ci, list) else []
        lo, hi = bounds if len(bounds) == 2 else (None, None)
        if lo is None or hi is None or lo > hi:
            raise EvalReportError(f"{where} has a ci95 that is not [low, high]: {raw_ci!r:.80}")
        ci95 = (lo, hi)
    return EvalScore(
        metric=metric,
        value=value,
        ci95=ci95,
        test_set=test_set,
        task=task,
        n=n if isinstance(n, int) and not isinstance(n, bool) else None,
        arm=arm,
    )


@dataclass(frozen=True, slots=True)
class Side:
    """One version in a promotion: its place (``candidate`` or the alias it holds) and report."""

    role: str
    name: str
    version: int
    report: Mapping[str, Any] | None

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def label(self) -> str:
        """``candidate v3``, ``prod v2``."""
        return f"{self.role} v{self.version}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a promotion decided, and why, in words (recorded with the alias move).

    ``verdict``: ``better`` (point estimate at least the current one's), ``within_interval``
    (lower, but the interval reaches it), ``first`` (the alias pointed nowhere),
    ``unchanged`` (it points at the candidate already) or ``forced`` (a refusal overridden).
    """

    verdict: str
    message: str
    forced: bool = False
    reason: str | None = None
    candidate: EvalScore | None = None
    current: EvalScore | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "message": self.message,
            "forced": self.forced,
            "reason": self.reason,
            "candidate": self.candidate.to_dict() if self.candidate else None,
            "current": self.current.to_dict() if self.current else None,
        }


def check_reason(reason: str | None, *, force: bool) -> str | None:
    """The reason, stripped (None if blank); 400 ``reason_required`` when forcing without one."""
    text = reason.strip() if isinstance(reason, str) else ""
    if len(text) > MAX_REASON:
        raise InvalidRequestError(
            f"reason must be at most {MAX_REASON} characters",
            code="invalid_reason",
            param="reason",
        )
    if force and not text:
        raise InvalidRequestError(
            "forcing a promotion needs a reason (it is recorded with the alias move)",
            code="reason_required",
            param="reason",
        )
    return text or None


def _scores(candidate: Side, current: Side) -> tuple[EvalScore, EvalScore]:
    missing = [s for s in (candidate, current) if s.report is None]
    if missing:
        who = " and ".join(f"{s.label()} ({s.id})" for s in missing)
        verb = "have" if len(missing) == 2 else "has"
        raise ConflictError(
            f"{who} {verb} no eval report, so {candidate.label()} cannot be compared with "
            f"{current.label()}; upload the adapter with its eval.json, or force the "
            "promotion with a reason",
            code="eval_missing",
            param="eval",
        )
    scores = []
    for side in (candidate, current):
        try:
            scores.append(read_score(side.report, side.id))
        except EvalReportError as exc:
            raise ConflictError(
                f"the eval report of {side.label()} ({side.id}) is unusable: {exc}",
                code="eval_unusable",
                param="eval",
            ) from None
    return scores[0], scores[1]


def compare(candidate: Side, current: Side) -> Decision:
    """The comparison on its own: a ``better``/``within_interval`` Decision, or a 409."""
    c, p = _scores(candidate, current)
    a, b = candidate.label(), current.label()
    differs = None
    if c.task is not None and p.task is not None and c.task != p.task:
        differs = f"different tasks ({c.task} against {p.task})"
    elif c.metric != p.metric:
        differs = f"different metrics ({a}: {c.metric}, {b}: {p.metric})"
    elif c.test_set != p.test_set:
        differs = f"different test sets (sha256 {c.test_set[:12]} against {p.test_set[:12]})"
    if differs is not None:
        raise ConflictError(
            f"{a} and {b} were evaluated on {differs}; evaluate both on the same test set "
            "with the same metric, or force the promotion with a reason",
            code="eval_incomparable",
            param="eval",
        )
    scored = f"{a} {c.describe()}"
    held = f"{b} {fmt(p.value)}" + (
        f" ({fmt(p.ci95[0])}–{fmt(p.ci95[1])})" if p.ci95 is not None else ""
    )
    if c.upper + _EPS < p.value:
        bound = "95% upper bound" if c.ci95 is not None else "score (no interval)"
        raise ConflictError(
            f"{scored} is worse than {held}: the candidate's {bound} {fmt(c.upper)} is "
            f"below {fmt(p.value)}",
            code="candidate_worse",
            param="eval",
        )
    if c.value + _EPS >= p.value:
        return Decision("better", f"{scored} is at least as good as {held}", candidate=c, current=p)
    return Decision(
        "within_interval",
        f"{scored} is within its interval of {held} (upper bound {fmt(c.upper)} ≥ {fmt(p.value)})",
        candidate=c,
        current=p,
    )


def decide(
    candidate: Side, current: Side | None, *, force: bool = False, reason: str | None = None
) -> Decision:
    """May ``candidate`` take the alias ``current`` holds (None: it points nowhere yet)?

    Raises 400 ``reason_required`` (forcing without a reason) and, unless ``force``, the
    409s of :func:`compare`.
    """
    why = check_reason(reason, force=force)
    if current is None:
        return Decision(
            "first",
            f"the alias pointed nowhere; {candidate.label()} takes it without a comparison",
            forced=force,
            reason=why,
        )
    if current.version == candidate.version:
        return Decision("unchanged", f"{current.role} already points at {candidate.id}", reason=why)
    try:
        decision = compare(candidate, current)
    except ConflictError as exc:
        if not force:
            raise
        return Decision("forced", f"forced past: {exc.message}", forced=True, reason=why)
    return Decision(
        decision.verdict,
        decision.message,
        forced=force,
        reason=why,
        candidate=decision.candidate,
        current=decision.current,
    )
