"""Scenario files: the shipped ones load, bad ones fail naming the field, overrides apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from load_tests.scenario import (
    STANDARD_SCENARIOS,
    ScenarioError,
    bind_models,
    check_bindings,
    load_scenario,
    parse_scenario,
)


def _data(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "t",
        "load": {"rate": 2.0, "duration_s": 1.0},
        "arms": [
            {"name": "direct", "target": "direct", "mix": {"shipment-classification": 1}},
            {"name": "gateway", "target": "gateway", "mix": {"shipment-classification": 1}},
        ],
    }
    data.update(over)
    return data


@pytest.mark.parametrize("name", STANDARD_SCENARIOS)
def test_shipped_scenarios_load(name: str) -> None:
    sc = load_scenario(name)
    assert sc.name == name
    assert sc.baseline_arm in {a.name for a in sc.arms}


def test_standard_scenario_shapes() -> None:
    overhead = load_scenario("overhead")
    assert overhead.schedule == "interleaved" and overhead.load.mode == "open"
    assert {a.target for a in overhead.arms} == {"gateway", "direct"}
    assert load_scenario("mixed-vs-single").schedule == "alternating"
    cold = load_scenario("cold-vs-warm")
    assert [a.before_request for a in cold.arms] == [False, True]
    assert load_scenario("soak").sampling.metrics_interval_s == 10


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"arms": [{"name": "a", "target": "gateway", "mix": {"x": 1}, "max_tokens": 0}]},
            "arms.0.max_tokens: Input should be greater than or equal to 1",
        ),
        (
            {"load": {"rate": 1, "concurrency": 2, "duration_s": 1}},
            "load: Value error, give exactly one of 'rate'",
        ),
        ({"load": {"duration_s": 1}}, "load: Value error, give exactly one"),
        ({"load": {"rate": 1}}, "load.duration_s: Field required"),
        ({"load": {"rate": -1, "duration_s": 1}}, "load.rate: Input should be greater than 0"),
        ({"arms": [{"name": "a", "target": "elsewhere", "mix": {"x": 1}}]}, "arms.0.target"),
        ({"arms": [{"name": "a", "target": "gateway", "mix": {}}]}, "arms.0: Value error, mix"),
        ({"arms": [{"name": "a", "target": "gateway", "mix": {"x": 0}}]}, "must be > 0"),
        (
            {"arms": [{"name": "a", "target": "gateway", "mix": {"x": 1}, "colour": 1}]},
            "arms.0.colour: Extra inputs are not permitted",
        ),
        ({"arms": []}, "arms: List should have at least 1 item"),
        ({"baseline": "nope"}, "baseline 'nope' is not an arm"),
        (
            {
                "arms": [
                    {"name": "a", "target": "gateway", "mix": {"x": 1}},
                    {"name": "a", "target": "direct", "mix": {"x": 1}},
                ]
            },
            "repeated: a",
        ),
        (
            {"arms": [{"name": "a", "target": "gateway", "mix": {"x": 1}, "prompt_task": "y"}]},
            "prompt_task must be one of",
        ),
    ],
)
def test_validation_errors_name_the_field(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(_data(**change), source="bad.yaml")
    assert f"bad.yaml: {expected}" in str(exc.value) or expected in str(exc.value)
    assert str(exc.value).startswith("bad.yaml: ")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario"):
        load_scenario(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"bad\.yaml: not valid YAML"):
        load_scenario(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ScenarioError, match="expected a mapping"):
        load_scenario(bad)


def test_overrides_by_path_arm_name_and_index() -> None:
    sc = parse_scenario(
        _data(),
        overrides=[
            "load.rate=7.5",
            "arms.direct.model_map.shipment-classification=base",
            "arms.1.stream=false",
            "arms.gateway.rotate_models=[a, b]",
            "description=",
        ],
    )
    assert sc.load.rate == 7.5
    assert sc.arm("direct").model_map == {"shipment-classification": "base"}
    assert sc.arm("gateway").stream is False
    assert sc.arm("gateway").rotate_models == ["a", "b"]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("load.rate", "expected key=value"),
        ("=3", "empty key"),
        ("arms.nobody.stream=true", "no list item 'nobody'"),
        ("name.sub=1", "name is not a mapping"),
    ],
)
def test_bad_overrides(assignment: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(_data(), overrides=[assignment])


def test_override_that_breaks_a_field_names_it() -> None:
    with pytest.raises(ScenarioError, match=r"load\.rate: Input should be a valid number"):
        parse_scenario(_data(), overrides=["load.rate=fast"])


def test_direct_arm_without_model_map_is_refused_then_bound() -> None:
    sc = parse_scenario(_data())
    with pytest.raises(ScenarioError, match="arm 'direct' sends request type"):
        check_bindings(sc)
    bound = bind_models(sc, model_maps={"direct": {"shipment-classification": "base"}})
    check_bindings(bound)
    assert bound.arm("direct").model_map == {"shipment-classification": "base"}
    assert bound.arm("gateway").model_map == {}
    assert sc.arm("direct").model_map == {}  # the original is untouched


def test_binding_by_target_and_rotation_minimum() -> None:
    data = _data()
    data["arms"] = [
        {
            "name": "many",
            "target": "gateway",
            "mix": {"shipment-classification": 1},
            "min_rotation": 3,
        }
    ]
    sc = parse_scenario(data)
    with pytest.raises(ScenarioError, match="needs at least 3 model names"):
        check_bindings(sc)
    check_bindings(bind_models(sc, rotations={"gateway": ["a", "b", "c"]}))
    assert bind_models(sc, rotations={"many": ["x"] * 3}).arm("many").rotate_models == ["x"] * 3


def test_schema_task_follows_the_route_asked_for() -> None:
    arm = parse_scenario(_data()).arm("gateway")
    assert arm.task_of("invoice-parsing") == "invoice-parsing"
    assert arm.task_of("my-adapter@3") == "shipment-classification"
    assert arm.schema_task_of("invoice-parsing", "shipment-classification") == (
        "shipment-classification"
    )
    assert arm.schema_task_of("invoice-parsing", "engine-name-7") == "invoice-parsing"
