"""The promotion rule (adapters/promotion.py) on plain reports, and the registry's promote
(adapters/promoting.py) on SQLite: the alias moves only when the rule allows, and the
history records who, when, from, to, forced and why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.archive import ArchiveLimits
from adapters.errors import ConflictError, InvalidRequestError, NotFoundError
from adapters.promotion import (
    EvalReportError,
    Side,
    compare,
    decide,
    fmt,
    read_score,
)
from adapters.registry import Registry
from tests.unit.adapters.test_adapters_factory import adapter_files
from tests.unit.adapters.test_adapters_registry import MB, ingest, make_registry, tar_of

SHA = "8b917a12d1378aad1e0cf2d9b335e0bef7fa5adc482a94705af1e2febc5ea3a5"
NAME = "ship"


def gateway_report(
    value: float,
    ci: list[float] | None,
    *,
    metric: str = "exact_match",
    sha: str = SHA,
    task: str = "shipment-classification",
    answered_by: str | None = None,
    arm: str = "adapter",
) -> dict[str, Any]:
    """The shape of ``lora-gateway eval --gateway`` (training/serve_report.py)."""
    entry: dict[str, Any] = {"n": 60, "metrics": {metric: value}, "primary": value}
    if ci is not None:
        entry["ci95"] = ci
    if answered_by:
        entry["adapter_versions"] = {answered_by: 60}
    return {
        "task": task,
        "primary_metric": metric,
        "dataset_sha256": sha,
        "n": 60,
        "arms": {"prompt-only": {"n": 60, "primary": 0.0, "ci95": [0.0, 0.0]}, arm: entry},
    }


def offline_report(value: float, *, metric: str = "exact_match") -> dict[str, Any]:
    """The shape of the offline ``lora-gateway eval`` (training/evaluate.py): no interval."""
    return {
        "task": "shipment-classification",
        "primary_metric": metric,
        "dataset_sha256": SHA,
        "n": 60,
        "base": {metric: 0.1},
        "adapter": {metric: value, "n": 60},
    }


def sides(cand: Any, cur: Any) -> tuple[Side, Side]:
    return Side("candidate", NAME, 3, cand), Side("prod", NAME, 2, cur)


# --- the rule ------------------------------------------------------------------------------


def test_better_candidate_passes() -> None:
    d = decide(*sides(gateway_report(0.9, [0.82, 0.96]), gateway_report(0.83, [0.75, 0.9])))
    assert d.verdict == "better" and not d.forced
    assert "candidate v3 exact_match 0.9 (0.82–0.96) is at least as good as prod v2 0.83" in (
        d.message
    )
    assert d.candidate is not None and d.candidate.arm == "adapter"


def test_worse_candidate_is_refused_naming_both_scores() -> None:
    with pytest.raises(ConflictError) as info:
        decide(*sides(gateway_report(0.71, [0.62, 0.8]), gateway_report(0.83, [0.75, 0.9])))
    assert info.value.code == "candidate_worse" and info.value.status_code == 409
    assert info.value.message.startswith(
        "candidate v3 exact_match 0.71 (0.62–0.8) is worse than prod v2 0.83 (0.75–0.9)"
    )
    assert "95% upper bound 0.8 is below 0.83" in info.value.message


def test_lower_but_within_the_interval_passes() -> None:
    d = decide(*sides(gateway_report(0.8, [0.7, 0.83]), gateway_report(0.83, [0.75, 0.9])))
    assert d.verdict == "within_interval"
    assert "upper bound 0.83 ≥ 0.83" in d.message  # the bound exactly reaching it is enough


def test_an_interval_just_short_is_refused() -> None:
    with pytest.raises(ConflictError, match="worse"):
        decide(*sides(gateway_report(0.8, [0.7, 0.8299]), gateway_report(0.83, [0.8, 0.86])))


def test_offline_reports_compare_point_estimates() -> None:
    d = decide(*sides(offline_report(0.83), offline_report(0.83)))
    assert d.verdict == "better" and d.candidate is not None and d.candidate.ci95 is None
    with pytest.raises(ConflictError, match=r"score \(no interval\) 0.82 is below 0.83"):
        decide(*sides(offline_report(0.82), offline_report(0.83)))


@pytest.mark.parametrize("missing", ["candidate", "current", "both"])
def test_missing_eval_is_a_409_unless_forced(missing: str) -> None:
    good = gateway_report(0.9, [0.8, 0.95])
    cand = None if missing in ("candidate", "both") else good
    cur = None if missing in ("current", "both") else good
    with pytest.raises(ConflictError) as info:
        decide(*sides(cand, cur))
    assert info.value.code == "eval_missing"
    who = {
        "candidate": "candidate v3 (ship@3) has",
        "current": "prod v2 (ship@2) has",
        "both": "candidate v3 (ship@3) and prod v2 (ship@2) have",
    }[missing]
    assert f"{who} no eval report" in info.value.message
    d = decide(*sides(cand, cur), force=True, reason="hotfix for INC-12")
    assert d.verdict == "forced" and d.forced and d.reason == "hotfix for INC-12"
    assert d.message.startswith("forced past: ")


@pytest.mark.parametrize(
    ("cand", "text"),
    [
        (gateway_report(0.9, [0.8, 0.95], metric="f1"), "different metrics"),
        (gateway_report(0.9, [0.8, 0.95], sha="ab" * 32), "different test sets"),
        (gateway_report(0.9, [0.8, 0.95], task="invoice-parsing"), "different tasks"),
    ],
)
def test_different_metric_test_set_or_task_is_incomparable(cand: Any, text: str) -> None:
    with pytest.raises(ConflictError) as info:
        decide(*sides(cand, gateway_report(0.5, [0.4, 0.6])))
    assert info.value.code == "eval_incomparable" and text in info.value.message
    assert decide(*sides(cand, gateway_report(0.5, None)), force=True, reason="x").forced


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_forcing_without_a_reason_is_refused(reason: str | None) -> None:
    with pytest.raises(InvalidRequestError) as info:
        decide(*sides(None, None), force=True, reason=reason)
    assert info.value.code == "reason_required" and info.value.status_code == 400


def test_first_promotion_and_no_change_need_no_comparison() -> None:
    cand = Side("candidate", NAME, 3, None)
    assert decide(cand, None).verdict == "first"
    assert decide(cand, Side("prod", NAME, 3, None)).verdict == "unchanged"


def test_a_reason_without_force_is_kept() -> None:
    d = decide(*sides(offline_report(0.9), offline_report(0.8)), reason="  weekly  ")
    assert d.reason == "weekly" and not d.forced


@pytest.mark.parametrize(
    ("report", "why"),
    [
        ([], "not a JSON object"),
        ({"dataset_sha256": SHA}, "no primary_metric"),
        ({"primary_metric": "exact_match"}, "no test set"),
        ({"primary_metric": "m", "dataset_sha256": SHA}, "neither 'arms'"),
        ({"primary_metric": "m", "dataset_sha256": SHA, "adapter": {"m": "high"}}, "no number"),
        (gateway_report(0.5, [0.6, 0.4]), "ci95 that is not"),
        (gateway_report(0.5, [0.4]), "ci95 that is not"),
        (
            {
                "primary_metric": "m",
                "dataset_sha256": SHA,
                "arms": {"a": {"primary": 1}, "b": {"primary": 1}},
            },
            "answered by ship@3 alone",
        ),
    ],
)
def test_unreadable_reports_say_why(report: Any, why: str) -> None:
    with pytest.raises(EvalReportError, match=why):
        read_score(report, "ship@3")
    with pytest.raises(ConflictError) as info:
        compare(*sides(report, gateway_report(0.5, None)))
    assert info.value.code == "eval_unusable" and "candidate v3 (ship@3)" in info.value.message


def test_the_arm_answered_by_the_version_is_preferred() -> None:
    report = gateway_report(0.5, [0.4, 0.6])
    report["arms"]["ship@canary"] = {
        "primary": 0.9,
        "ci95": [0.8, 0.95],
        "adapter_versions": {"ship@3": 60},
    }
    score = read_score(report, "ship@3")
    assert (score.arm, score.value, score.ci95) == ("ship@canary", 0.9, (0.8, 0.95))
    assert read_score(report, "ship@4").arm == "adapter"
    only = gateway_report(0.7, None, arm="ship@canary")
    assert read_score(only, "ship@9").arm == "ship@canary"  # the only arm besides prompt-only


def test_an_arm_answered_by_other_versions_never_scores_this_one() -> None:
    # A split route's `adapter` arm is a mix of prod and canary: it scores neither.
    mixed = gateway_report(0.6, [0.5, 0.7], answered_by="ship@2")
    mixed["arms"]["adapter"]["adapter_versions"]["ship@3"] = 6
    with pytest.raises(EvalReportError, match="answered by ship@3 alone"):
        read_score(mixed, "ship@3")
    mixed["arms"]["ship@3"] = {"primary": 0.9, "ci95": [0.8, 1.0], "adapter_versions": {}}
    assert read_score(mixed, "ship@3").arm == "ship@3"  # the only arm that may be its own
    other = gateway_report(0.7, None, answered_by="ship@2", arm="ship@canary")
    with pytest.raises(EvalReportError, match=r"--arms prompt-only,ship@3"):
        read_score(other, "ship@3")


def test_scores_are_printed_as_the_report_gives_them() -> None:
    assert [fmt(x) for x in (0.71, 0.8333, 1.0, 0.0)] == ["0.71", "0.8333", "1", "0"]


# --- the registry ----------------------------------------------------------------------------


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    registry = make_registry(tmp_path, limits=ArchiveLimits(max_total_bytes=50 * MB, max_ratio=1e6))
    yield registry
    registry.close()


def _upload(reg: Registry, tmp_path: Path, fill: int, report: Any, alias: str | None) -> int:
    archive = tar_of(tmp_path, adapter_files(fill=fill), name=f"{fill}.tar.gz")
    return ingest(reg, archive, name=NAME, eval_report=report, alias=alias)[0].version


def test_registry_promotes_canary_to_prod_and_records_it(reg: Registry, tmp_path: Path) -> None:
    _upload(reg, tmp_path, 1, gateway_report(0.83, [0.75, 0.9]), "prod")
    _upload(reg, tmp_path, 2, gateway_report(0.71, [0.62, 0.8]), "canary")
    with pytest.raises(ConflictError, match="candidate v2 exact_match 0.71 .* prod v1 0.83"):
        reg.promote(NAME, changed_by="alice")
    assert reg.resolve(f"{NAME}@prod").version == 1  # refused: nothing moved
    assert len(reg.get_adapter(NAME).history) == 2  # the two upload aliases only
    _upload(reg, tmp_path, 3, gateway_report(0.86, [0.78, 0.93]), "canary")
    done = reg.promote(NAME, to="prod", changed_by="bob")
    assert done.moved and done.from_version == 1 and done.alias.version == 3
    assert done.decision.verdict == "better"
    assert reg.resolve(NAME).version == 3
    last = reg.get_adapter(NAME).history[-1]
    assert (last.alias, last.from_version, last.to_version, last.changed_by) == (
        "prod",
        1,
        3,
        "bob",
    )
    assert last.forced is False and last.decision is not None
    assert "at least as good as prod v1" in last.decision
    again = reg.promote(NAME, changed_by="bob")
    assert not again.moved and again.decision.verdict == "unchanged"
    assert len(reg.get_adapter(NAME).history) == 4


def test_registry_forced_promotion_records_the_reason(reg: Registry, tmp_path: Path) -> None:
    _upload(reg, tmp_path, 1, gateway_report(0.83, [0.75, 0.9]), "prod")
    v2 = _upload(reg, tmp_path, 2, None, None)
    with pytest.raises(ConflictError, match="no eval report"):
        reg.promote(NAME, version=v2, changed_by="alice")
    with pytest.raises(InvalidRequestError, match="needs a reason"):
        reg.promote(NAME, version=v2, force=True, changed_by="alice")
    done = reg.promote(NAME, version=v2, force=True, reason="INC-7 fix", changed_by="alice")
    assert done.moved and done.decision.forced
    entry = reg.get_adapter(NAME).to_dict()["alias_history"][-1]
    assert entry["forced"] is True and entry["reason"] == "INC-7 fix"
    assert entry["decision"].startswith("forced past: ")
    assert (entry["from_version"], entry["to_version"], entry["changed_by"]) == (1, 2, "alice")
    plain = reg.get_adapter(NAME).to_dict()["alias_history"][0]
    assert plain["forced"] is False and plain["reason"] is None and plain["decision"] is None


def test_registry_promote_refusals(reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as nf:
        reg.promote("nope", changed_by="a")
    assert nf.value.code == "adapter_not_found"
    _upload(reg, tmp_path, 1, None, None)
    with pytest.raises(NotFoundError) as nf:
        reg.promote(NAME, changed_by="a")  # no canary alias
    assert (nf.value.code, nf.value.param) == ("alias_not_found", "from")
    with pytest.raises(NotFoundError) as nf:
        reg.promote(NAME, version=9, changed_by="a")
    assert nf.value.code == "version_not_found"
    with pytest.raises(InvalidRequestError) as bad:
        reg.promote(NAME, source="canary", version=1, changed_by="a")
    assert bad.value.code == "ambiguous_candidate"
    with pytest.raises(InvalidRequestError) as bad:
        reg.promote(NAME, to="latest", version=1, changed_by="a")
    assert (bad.value.code, bad.value.param) == ("invalid_alias", "to")
    first = reg.promote(NAME, version=1, changed_by="a")  # prod pointed nowhere
    assert first.moved and first.decision.verdict == "first" and first.from_version is None
