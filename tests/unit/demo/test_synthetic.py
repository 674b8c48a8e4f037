"""The synthetic logistics generator: determinism, schemas, rules, split windows."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema
import pytest

from demo.synthetic import (
    ANSWER_SCHEMAS,
    SYSTEM_PROMPTS,
    TASKS,
    WORKING_FIELDS,
    answer_schema,
    generate,
    render_answer,
    strip_working,
)
from demo.synthetic.rules import distance_band, eta_bucket, sample_route
from demo.synthetic.vocab import CARRIERS, CITIES, GOODS, VENDORS
from tests.support import modules_loaded_by

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
        written = json.loads(content)
        # Working fields first where the task has them; without them, the ground truth.
        assert strip_working(task, written) == r["answer"]
        assert set(written) - set(r["answer"]) == set(WORKING_FIELDS[task])
        assert '": ' not in content and '", "' not in content  # compact separators
        jsonschema.validate(written, ANSWER_SCHEMAS[task])
        jsonschema.validate(r["answer"], answer_schema(task))
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
        window = "test" if split == "test" else "train"
        assert all(g["item"] in GOODS[window][g["category"]] for g in m["goods"])
        assert r["answer"] == {
            "category": _category(cats),
            "eta_bucket": _eta(m["service_level"], m["distance_km"]),
        }
        written = json.loads(r["messages"][2]["content"])
        assert written["distance_km"] == m["distance_km"]
        assert written["service_level"] == m["service_level"]
        assert written["distance_band"] == distance_band(m["distance_km"])
        assert written["goods"] == [
            {"item": g["item"], "category": g["category"]} for g in m["goods"]
        ]
        assert str(m["distance_km"]) in r["prompt"]
        assert m["service_level"] in r["prompt"].lower()
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
    assert [distance_band(k) for k in (299, 300, 999, 1000)] == [
        "under_300_km",
        "300_to_999_km",
        "300_to_999_km",
        "1000_km_or_more",
    ]


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
        for field in ("invoice_number", "currency"):
            assert a[field] in r["prompt"]
        assert a["vendor"] in r["prompt"] or a["vendor"].upper() in r["prompt"]
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
        written = json.loads(r["messages"][2]["content"])
        assert written["deadline_days"] == deadline
        assert written["lanes"] == [
            {
                "lane_id": ln["id"],
                "transit_days": ln["transit_days"],
                "deadline_days": deadline,
                "on_time": ln["transit_days"] <= deadline,
                "cost": ln["cost"],
            }
            for ln in lanes
        ]
        assert written["on_time_count"] == len(on_time)
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


def test_windows_share_no_city_carrier_vendor_or_goods() -> None:
    for pool in (CITIES, VENDORS):
        assert _names(pool, "train").isdisjoint(_names(pool, "test"))
    assert {c.code for c in CARRIERS["train"]}.isdisjoint(c.code for c in CARRIERS["test"])
    train_goods = {g for gs in GOODS["train"].values() for g in gs}
    assert train_goods.isdisjoint(g for gs in GOODS["test"].values() for g in gs)
    assert set(GOODS["train"]) == set(GOODS["test"])


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

    assert goods("test") > goods("train") + 0.8
    # Training sees many distances near a threshold too (a threshold is learned only from
    # both sides of it); the test window has still more.
    assert near_threshold("train") > 0.4
    assert near_threshold("test") > near_threshold("train") + 0.05
    assert items("test") > items("train") + 1
    assert slack("test") < slack("train")


# ---------------------------------------------------------------- bad input


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown task 'parcel-sorting'"):
        generate("parcel-sorting", 1, seed=0, split="train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        generate("invoice-parsing", 1, seed=0, split="dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be >= 0"):
        generate("invoice-parsing", -1, seed=0, split="train")
    with pytest.raises(ValueError, match="unknown task"):
        render_answer("nope", {})
    with pytest.raises(ValueError, match="no city pair"):
        sample_route(random.Random(0), "train", 9000, 9999)


def test_underscore_task_names_are_accepted() -> None:
    a = generate("invoice_parsing", 2, seed=0, split="test")
    assert a == generate("invoice-parsing", 2, seed=0, split="test")
    assert generate("route-optimization", 0, seed=0, split="train") == []


def test_import_is_light() -> None:
    heavy = ("torch", "transformers", "tokenizers", "numpy", "training")
    assert modules_loaded_by("demo.synthetic", heavy) == []


@pytest.mark.parametrize(
    ("task", "layouts"),
    [("shipment-classification", 7), ("invoice-parsing", 6), ("route-optimization", 4)],
)
def test_every_layout_occurs_in_both_windows(
    data: dict[tuple[str, str], list[dict[str, Any]]], task: str, layouts: int
) -> None:
    # Services send free text, not one template: forms, one-line notes typed by a person,
    # e-mails, letters with the date in words.
    for split in ("train", "test"):
        assert {r["meta"]["layout"] for r in data[(task, split)]} == set(range(layouts))
