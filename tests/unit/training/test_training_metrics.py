"""Task metrics: exact match, field-level P/R/F1, lane accuracy, schema validity."""

from __future__ import annotations

import json

import pytest

from training.data import Example
from training.errors import DataError
from training.evaluate import infer_task, markdown_table, references
from training.metrics import parse_answer, primary_metric, score, score_one

SHIP = {"category": "perishable", "eta_bucket": "1-2_days"}
INVOICE = {
    "invoice_number": "RC/24/5852",
    "vendor": "Rhein Cargo AG",
    "date": "2024-07-09",
    "currency": "EUR",
    "total": 2538.5,
    "line_items": [
        {"description": "Pallet storage", "quantity": 1, "unit_price": 2122.27, "amount": 2122.27},
        {"description": "Cross-dock handling", "quantity": 2, "unit_price": 5.46, "amount": 10.92},
    ],
}


def test_parse_answer_finds_the_first_object() -> None:
    assert parse_answer('{"a": 1}') == {"a": 1}
    assert parse_answer('Sure! ```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_answer('{"a": } then {"b": 2}') == {"b": 2}
    assert parse_answer("[1, 2]") is None
    assert parse_answer("no json") is None


def test_shipment_exact_match_and_fields() -> None:
    right = json.dumps(SHIP)
    half = json.dumps({"category": "perishable", "eta_bucket": "3-5_days"})
    summary, per = score("shipment-classification", [right, half, "garbage"], [SHIP] * 3)
    assert summary["exact_match"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["category_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["eta_bucket_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["json_valid"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["schema_valid"] == pytest.approx(2 / 3, abs=1e-4)
    assert per[2]["exact_match"] == 0.0
    assert primary_metric("shipment-classification") == "exact_match"


def test_schema_validity_is_checked_against_the_task_schema() -> None:
    extra = json.dumps({**SHIP, "note": "x"})  # additionalProperties: false
    bad_enum = json.dumps({"category": "cheese", "eta_bucket": "1-2_days"})
    assert score_one("shipment-classification", extra, SHIP)["schema_valid"] == 0.0
    assert score_one("shipment-classification", bad_enum, SHIP)["schema_valid"] == 0.0
    assert score_one("shipment-classification", json.dumps(SHIP), SHIP)["schema_valid"] == 1.0


def test_invoice_field_level_precision_recall_f1() -> None:
    pred = dict(INVOICE)
    pred["vendor"] = "Wrong GmbH"  # 1 wrong header field
    pred["line_items"] = [INVOICE["line_items"][1]]  # one line item (4 fields) missing
    summary, per = score("invoice-parsing", [json.dumps(pred)], [INVOICE])
    gold_fields = 5 + 8
    pred_fields = 5 + 4
    tp = 4 + 4
    assert (
        per[0]["tp"] == tp and per[0]["n_gold"] == gold_fields and per[0]["n_pred"] == pred_fields
    )
    p, r = tp / pred_fields, tp / gold_fields
    assert summary["precision"] == pytest.approx(p, abs=1e-4)
    assert summary["recall"] == pytest.approx(r, abs=1e-4)
    assert summary["f1"] == pytest.approx(2 * p * r / (p + r), abs=1e-4)
    assert summary["exact_match"] == 0.0
    assert primary_metric("invoice-parsing") == "f1"


def test_invoice_order_of_items_and_number_format_do_not_matter() -> None:
    pred = dict(INVOICE, line_items=list(reversed(INVOICE["line_items"])), total=2538.50)
    summary, _ = score("invoice-parsing", [json.dumps(pred)], [INVOICE])
    assert summary["f1"] == 1.0 and summary["exact_match"] == 1.0


def test_invoice_micro_average_over_examples() -> None:
    summary, _ = score("invoice-parsing", [json.dumps(INVOICE), "not json"], [INVOICE, INVOICE])
    assert summary["precision"] == 1.0
    assert summary["recall"] == 0.5


def test_route_lane_accuracy() -> None:
    gold = {"lane_id": "MRSK-866", "reason": "cheapest_on_time"}
    preds = [
        json.dumps(gold),
        json.dumps({"lane_id": "MRSK-866", "reason": "only_on_time"}),
        json.dumps({"lane_id": "EURL-956", "reason": "cheapest_on_time"}),
    ]
    summary, _ = score("route-optimization", preds, [gold] * 3)
    assert summary["lane_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["reason_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["exact_match"] == pytest.approx(1 / 3, abs=1e-4)
    assert primary_metric("route-optimization") == "lane_accuracy"


def test_generic_task_is_exact_text_match() -> None:
    summary, _ = score(None, [" Paris ", "Rome"], ["Paris", "Paris"])
    assert summary == {"n": 2, "exact_match": 0.5, "json_valid": 0.0}


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError):
        score(None, ["a"], [])


def _ex(task: str | None, answer: object = None, text: str = "{}") -> Example:
    extra = {"task": task} if task else {}
    if answer is not None:
        extra["answer"] = answer
    return Example(
        "chat",
        "f:1",
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": text}],
        extra=extra,
    )


def test_task_inference_and_references() -> None:
    exs = [
        _ex("route-optimization", {"lane_id": "A"}),
        _ex("route-optimization", None, '{"lane_id":"B"}'),
    ]
    assert infer_task(exs, None) == "route-optimization"
    assert references(exs, "route-optimization") == [{"lane_id": "A"}, {"lane_id": "B"}]
    assert infer_task([_ex(None)], None) is None
    with pytest.raises(DataError, match="mixes tasks"):
        infer_task([_ex("route-optimization"), _ex("invoice-parsing")], None)


def test_markdown_table_puts_the_primary_metric_first() -> None:
    report = {
        "task": "route-optimization",
        "dataset": "/x/test.jsonl",
        "n": 3,
        "primary_metric": "lane_accuracy",
        "base": {"lane_accuracy": 0.0, "exact_match": 0.0, "schema_valid": 0.5},
        "adapter": {"lane_accuracy": 0.9, "exact_match": 0.8, "schema_valid": 1.0},
    }
    table = markdown_table(report)
    lines = table.splitlines()
    assert lines[2] == "| metric | base | adapter | Δ |"
    assert lines[4] == "| **lane_accuracy** | 0.000 | 0.900 | +0.900 |"
    assert "| schema_valid | 0.500 | 1.000 | +0.500 |" in table
