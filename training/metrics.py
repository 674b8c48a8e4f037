"""Task metrics: how a generated answer is scored against the ground truth.

=========================  ==================  ==============================================
task                       primary metric      also
=========================  ==================  ==============================================
shipment-classification    exact_match         per-field accuracy (category, eta_bucket)
invoice-parsing            f1 (field-level)    precision, recall, exact_match
route-optimization         lane_accuracy       reason_accuracy, exact_match
(no task)                  exact_match         (the answer text, whitespace-trimmed)
=========================  ==================  ==============================================

Every task also reports ``json_valid`` (the answer parses as a JSON object) and
``schema_valid`` (its answer fields match the task's answer schema, which the registered
dataset source that makes the task gives, :func:`training.sources.answer_schema`; a
task's working fields are removed before scoring, as the gateway removes them). An answer that
does not parse scores zero on every field. Invoice fields are compared as a multiset of
``(field path, value)`` pairs, line items flattened to ``line_items.<field>``, so the
order of line items does not matter; numbers compare at two decimals.

Pure Python (jsonschema): no torch.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from training.sources import answer_schema, strip_working

METRIC_TASKS = ("shipment-classification", "invoice-parsing", "route-optimization")
PRIMARY: dict[str | None, str] = {
    "shipment-classification": "exact_match",
    "invoice-parsing": "f1",
    "route-optimization": "lane_accuracy",
    None: "exact_match",
}


def primary_metric(task: str | None) -> str:
    return PRIMARY.get(task, "exact_match")


def parse_answer(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (tolerating a code fence or leading words)."""
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        return obj if isinstance(obj, dict) else None
    return None


def _strip_working(task: str, obj: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if obj is None else strip_working(task, obj)


def schema_valid(obj: Any, schema: dict[str, Any] | None) -> bool:
    if obj is None:
        return False
    if schema is None:
        return isinstance(obj, dict)
    import jsonschema

    return jsonschema.Draft202012Validator(schema).is_valid(obj) is True


def _norm(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float):
        return round(float(v), 2)
    if isinstance(v, str):
        return v.strip()
    return json.dumps(v, sort_keys=True)


def field_pairs(obj: dict[str, Any] | None) -> Counter[tuple[str, Any]]:
    """The (path, value) multiset of an answer; lists of objects are flattened."""
    pairs: Counter[tuple[str, Any]] = Counter()
    if not obj:
        return pairs
    for key, value in obj.items():
        if isinstance(value, list) and all(isinstance(x, dict) for x in value):
            for item in value:
                for sub, v in item.items():
                    pairs[(f"{key}.{sub}", _norm(v))] += 1
        else:
            pairs[(key, _norm(value))] += 1
    return pairs


def _same(a: Any, b: Any) -> bool:
    return bool(_norm(a) == _norm(b))


def score_one(task: str | None, prediction: str, reference: Any) -> dict[str, Any]:
    """Per-example scores (numbers; counts for the micro-averaged F1)."""
    if task is None:
        ref = reference if isinstance(reference, str) else json.dumps(reference)
        parsed = parse_answer(prediction)
        return {
            "exact_match": float(prediction.strip() == ref.strip()),
            "json_valid": float(parsed is not None),
        }
    gold: dict[str, Any] = (
        reference if isinstance(reference, dict) else parse_answer(str(reference)) or {}
    )
    # Scored on what a caller receives: the answer fields, without the working fields
    # (whether the gateway already removed them or the model's raw text still has them).
    pred = _strip_working(task, parse_answer(prediction))
    out: dict[str, Any] = {
        "json_valid": float(pred is not None),
        "schema_valid": float(schema_valid(pred, answer_schema(task))),
    }
    p = pred or {}
    out["exact_match"] = float(pred is not None and field_pairs(p) == field_pairs(gold))
    if task == "shipment-classification":
        for key in ("category", "eta_bucket"):
            out[f"{key}_accuracy"] = float(key in p and _same(p[key], gold.get(key)))
    elif task == "invoice-parsing":
        gp, pp = field_pairs(gold), field_pairs(pred)
        out["tp"] = sum((gp & pp).values())
        out["n_pred"] = sum(pp.values())
        out["n_gold"] = sum(gp.values())
    elif task == "route-optimization":
        out["lane_accuracy"] = float("lane_id" in p and _same(p["lane_id"], gold.get("lane_id")))
        out["reason_accuracy"] = float("reason" in p and _same(p["reason"], gold.get("reason")))
    return out


def aggregate(task: str | None, per_example: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each per-example score; micro precision/recall/F1 for invoices."""
    n = len(per_example)
    if n == 0:
        return {"n": 0}
    keys = [k for k in per_example[0] if k not in ("tp", "n_pred", "n_gold")]
    out: dict[str, float] = {"n": n}
    for k in keys:
        out[k] = round(sum(float(e[k]) for e in per_example) / n, 4)
    if task == "invoice-parsing":
        tp = sum(e["tp"] for e in per_example)
        n_pred = sum(e["n_pred"] for e in per_example)
        n_gold = sum(e["n_gold"] for e in per_example)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.update(precision=round(precision, 4), recall=round(recall, 4), f1=round(f1, 4))
    return out


def score(
    task: str | None, predictions: list[str], references: list[Any]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(summary, per-example scores) of predictions against references."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    per = [score_one(task, p, r) for p, r in zip(predictions, references, strict=True)]
    return aggregate(task, per), per
