"""Seeded synthetic logistics datasets for the three demo request types, with ground truth.

    generate(task, n, seed=..., split=...)  ->  chat records

A record is ``{"id", "task", "messages": [system, user, assistant], "prompt", "answer",
"meta"}``: the assistant turn is the compact JSON answer, ``prompt`` is the user turn,
``answer`` the parsed ground truth, ``meta`` the facts it was derived from.

The rules (also given to the model in the system prompt):

- shipment-classification: ``category`` is the first of hazardous, perishable, fragile,
  oversized, general, documents that any of the goods belongs to; ``eta_bucket`` comes from
  the service level and the road distance (thresholds 300 km and 1000 km).
- invoice-parsing: the header fields, the amount due (tax included) and every line item.
- route-optimization: the cheapest lane whose transit time is within the deadline
  (``cheapest_on_time``, or ``only_on_time`` when one lane is on time), else the fastest
  lane (``fastest_none_on_time``).

The ``train`` and ``val`` splits draw from one generator window; ``test`` from another with
other cities, carriers and vendors and harder cases. Everything is deterministic from the
seed: each call uses its own ``random.Random``, never the global one. Stdlib only, so that
importing this module stays cheap.

Training and the load tests never import it: :func:`register` adds it to training's
dataset-source registry (:mod:`training.sources`), and the console script calls that.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, Literal

from demo.synthetic.invoices import make_invoice
from demo.synthetic.routes import make_route, route_working
from demo.synthetic.rules import (
    CATEGORY_PRECEDENCE,
    DISTANCE_BANDS,
    ETA_BUCKETS,
    ROUTE_REASONS,
    Made,
    choose_lane,
    eta_bucket,
    money,
    shipment_category,
)
from demo.synthetic.shipments import make_shipment, shipment_working
from demo.synthetic.vocab import SERVICE_LEVELS

SOURCE_NAME = "demo-logistics"

__all__ = [
    "ANSWER_SCHEMAS",
    "CATEGORY_PRECEDENCE",
    "ETA_BUCKETS",
    "ROUTE_REASONS",
    "SOURCE_NAME",
    "SPLITS",
    "SYSTEM_PROMPTS",
    "TASKS",
    "WORKING_FIELDS",
    "answer_schema",
    "choose_lane",
    "eta_bucket",
    "generate",
    "register",
    "render_answer",
    "shipment_category",
    "strip_working",
]

Split = Literal["train", "val", "test"]
TASKS: tuple[str, ...] = ("shipment-classification", "invoice-parsing", "route-optimization")
SPLITS: tuple[str, ...] = ("train", "val", "test")

SYSTEM_PROMPTS: dict[str, str] = {
    "shipment-classification": (
        "Classify the shipment as JSON. category: the first of hazardous, perishable, "
        "fragile, oversized, general, documents that fits any of the goods. eta_bucket from "
        "the service level and the road distance: express is same_day under 300 km, "
        "1-2_days under 1000 km, else 3-5_days; standard is one bucket slower; economy is "
        "3-5_days under 1000 km, else 6+_days."
    ),
    "invoice-parsing": (
        "Extract the invoice as JSON: invoice_number, vendor, date (YYYY-MM-DD), currency, "
        "total (amount due), line_items (description, quantity, unit_price, amount)."
    ),
    "route-optimization": (
        "Choose the lane as JSON: the cheapest lane whose transit time is within the "
        "deadline (reason cheapest_on_time, or only_on_time if it is the only one); if no "
        "lane is on time, the fastest lane (fastest_none_on_time)."
    ),
}

# Working fields: what the model writes before the answer, one short step at a time (a
# 135 M model does not compare a distance with two thresholds and look the result up in
# a table within one token). The route declares them; the gateway checks them with the
# schema and returns only the answer fields to the caller.
WORKING_FIELDS: dict[str, tuple[str, ...]] = {
    "shipment-classification": ("goods", "distance_km", "distance_band", "service_level"),
    "invoice-parsing": (),
    "route-optimization": ("deadline_days", "lanes", "on_time_count"),
}

_MONEY = {"type": "number", "minimum": 0}
_DAYS = {"type": "integer", "minimum": 0}
# The schemas the engine enforces, working fields included, properties in writing order.
ANSWER_SCHEMAS: dict[str, dict[str, Any]] = {
    "shipment-classification": {
        "type": "object",
        "properties": {
            "goods": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "item": {"type": "string", "minLength": 1},
                        "category": {"type": "string", "enum": list(CATEGORY_PRECEDENCE)},
                    },
                    "required": ["item", "category"],
                    "additionalProperties": False,
                },
            },
            "category": {"type": "string", "enum": list(CATEGORY_PRECEDENCE)},
            "distance_km": {"type": "integer", "minimum": 0},
            "distance_band": {"type": "string", "enum": list(DISTANCE_BANDS)},
            "service_level": {"type": "string", "enum": list(SERVICE_LEVELS)},
            "eta_bucket": {"type": "string", "enum": list(ETA_BUCKETS)},
        },
        "required": [
            "goods",
            "category",
            "distance_km",
            "distance_band",
            "service_level",
            "eta_bucket",
        ],
        "additionalProperties": False,
    },
    "invoice-parsing": {
        "type": "object",
        "properties": {
            "invoice_number": {"type": "string", "minLength": 1},
            "vendor": {"type": "string", "minLength": 1},
            "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "total": _MONEY,
            "line_items": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "description": {"type": "string", "minLength": 1},
                        "quantity": {"type": "integer", "minimum": 1},
                        "unit_price": _MONEY,
                        "amount": _MONEY,
                    },
                    "required": ["description", "quantity", "unit_price", "amount"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["invoice_number", "vendor", "date", "currency", "total", "line_items"],
        "additionalProperties": False,
    },
    "route-optimization": {
        "type": "object",
        "properties": {
            "deadline_days": _DAYS,
            "lanes": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "lane_id": {"type": "string", "minLength": 1},
                        "transit_days": _DAYS,
                        "deadline_days": _DAYS,
                        "on_time": {"type": "boolean"},
                        "cost": {"type": "integer", "minimum": 0},
                    },
                    "required": ["lane_id", "transit_days", "deadline_days", "on_time", "cost"],
                    "additionalProperties": False,
                },
            },
            "on_time_count": {"type": "integer", "minimum": 0},
            "lane_id": {"type": "string", "minLength": 1},
            "reason": {"type": "string", "enum": list(ROUTE_REASONS)},
        },
        "required": ["deadline_days", "lanes", "on_time_count", "lane_id", "reason"],
        "additionalProperties": False,
    },
}


def answer_schema(task: str) -> dict[str, Any]:
    """The schema of what a caller receives: the engine's schema less the working fields."""
    full = ANSWER_SCHEMAS[canonical_task(task)]
    working = set(WORKING_FIELDS[canonical_task(task)])
    return {
        **full,
        "properties": {k: v for k, v in full["properties"].items() if k not in working},
        "required": [k for k in full["required"] if k not in working],
    }


def strip_working(task: str, obj: dict[str, Any]) -> dict[str, Any]:
    """An answer without the task's working fields (what the gateway returns)."""
    working = WORKING_FIELDS.get(task, ())
    return {k: v for k, v in obj.items() if k not in working}


_WORKING: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "shipment-classification": shipment_working,
    "route-optimization": route_working,
}

_MAKERS: dict[str, Callable[[random.Random, str], Made]] = {
    "shipment-classification": make_shipment,
    "invoice-parsing": make_invoice,
    "route-optimization": make_route,
}


def canonical_task(task: str) -> str:
    """The task name with '-' (accepts the '_' spelling too); ValueError if unknown."""
    name = task.replace("_", "-")
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return name


def render_answer(task: str, answer: dict[str, Any]) -> str:
    """The compact JSON the assistant turn holds (working fields first, where a task has them).

    Money is written with two decimals, as the invoice prints it (``1234.50``, which JSON
    parses to 1234.5), so that the model copies it rather than reformatting it.
    """
    task = canonical_task(task)
    if task != "invoice-parsing":
        return json.dumps(answer, separators=(",", ":"), ensure_ascii=False)

    def m(x: float) -> str:
        return money(round(x * 100))

    def s(x: str) -> str:
        return json.dumps(x, ensure_ascii=False)

    items = ",".join(
        f'{{"description":{s(i["description"])},"quantity":{i["quantity"]},'
        f'"unit_price":{m(i["unit_price"])},"amount":{m(i["amount"])}}}'
        for i in answer["line_items"]
    )
    return (
        f'{{"invoice_number":{s(answer["invoice_number"])},"vendor":{s(answer["vendor"])},'
        f'"date":{s(answer["date"])},"currency":{s(answer["currency"])},'
        f'"total":{m(answer["total"])},"line_items":[{items}]}}'
    )


def generate(task: str, n: int, *, seed: int, split: Split) -> list[dict[str, Any]]:
    """``n`` distinct chat records of ``task`` from the ``split``'s generator window."""
    task = canonical_task(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # A string seed is hashed with SHA-512 by random.seed: stable across runs and
    # processes (unlike hash()), and distinct per task and split.
    rng = random.Random(f"lora-gateway/synthetic/{task}/{split}/{seed}")
    window = "test" if split == "test" else "train"
    make = _MAKERS[task]
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(records) < n:
        doc, answer, meta = make(rng, window)
        # A service sends the document itself, not an instruction around it: the route's
        # system prompt says what to do with it.
        prompt = doc
        if prompt in seen:  # duplicates would only inflate a split
            continue
        seen.add(prompt)
        written = _WORKING[task](answer, meta) if task in _WORKING else answer
        records.append(
            {
                "id": f"{task}/{split}/{seed}/{len(records)}",
                "task": task,
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPTS[task]},
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": render_answer(task, written)},
                ],
                "prompt": prompt,
                "answer": answer,
                "meta": {"split": split, "seed": seed, **meta},
            }
        )
    return records


def register() -> None:
    """Make this generator training's source of the three demo tasks (training.sources)."""
    from training.sources import SyntheticGenerator, register_synthetic

    register_synthetic(
        SyntheticGenerator(
            name=SOURCE_NAME, generate=generate, schemas=ANSWER_SCHEMAS, working=WORKING_FIELDS
        )
    )
