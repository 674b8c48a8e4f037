"""Seeded synthetic logistics datasets for the three demo request types, with ground truth.

    generate(task, n, seed=..., split=...)  ->  chat records
    pretraining_corpus(n_docs, seed=...)    ->  plain logistics text (no task answers)
    chat_corpus(n, seed=...)                ->  small talk about logistics (no task answers)

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
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, Literal

from training.synthetic_corpus import FORBIDDEN_IN_CORPUS, chat_corpus, pretraining_corpus
from training.synthetic_tasks import (
    CATEGORY_PRECEDENCE,
    ETA_BUCKETS,
    ROUTE_REASONS,
    Made,
    choose_lane,
    eta_bucket,
    make_invoice,
    make_route,
    make_shipment,
    money,
    shipment_category,
)

__all__ = [
    "ANSWER_SCHEMAS",
    "CATEGORY_PRECEDENCE",
    "ETA_BUCKETS",
    "FORBIDDEN_IN_CORPUS",
    "ROUTE_REASONS",
    "SPLITS",
    "SYSTEM_PROMPTS",
    "TASKS",
    "USER_INSTRUCTIONS",
    "chat_corpus",
    "choose_lane",
    "eta_bucket",
    "generate",
    "pretraining_corpus",
    "render_answer",
    "shipment_category",
    "tokenizer_glossary",
]

Split = Literal["train", "val", "test"]
TASKS: tuple[str, ...] = ("shipment-classification", "invoice-parsing", "route-optimization")
SPLITS: tuple[str, ...] = ("train", "val", "test")

SYSTEM_PROMPTS: dict[str, str] = {
    "shipment-classification": (
        "You are a logistics assistant. Classify the shipment. category: the first of "
        "hazardous, perishable, fragile, oversized, general, documents that fits any of the "
        "goods. eta_bucket by service and distance: express is same_day under 300 km, "
        "1-2_days under 1000 km, else 3-5_days; standard is one bucket slower; economy is "
        "3-5_days under 1000 km, else 6+_days. Reply with JSON only."
    ),
    "invoice-parsing": (
        "You are a logistics assistant. Extract the invoice as JSON: invoice_number, vendor, "
        "date (YYYY-MM-DD), currency, total (amount due), line_items (description, quantity, "
        "unit_price, amount)."
    ),
    "route-optimization": (
        "You are a logistics assistant. Choose the lane: the cheapest lane whose transit "
        "time is within the deadline; if no lane is on time, the fastest lane. Reply with "
        'JSON only: {"lane_id": ..., "reason": "cheapest_on_time" | "only_on_time" | '
        '"fastest_none_on_time"}'
    ),
}

USER_INSTRUCTIONS: dict[str, str] = {
    "shipment-classification": "Classify this shipment.",
    "invoice-parsing": "Parse this invoice.",
    "route-optimization": "Choose a lane for this shipment.",
}

_MONEY = {"type": "number", "minimum": 0}
ANSWER_SCHEMAS: dict[str, dict[str, Any]] = {
    "shipment-classification": {
        "type": "object",
        "properties": {
            "category": {"type": "string", "enum": list(CATEGORY_PRECEDENCE)},
            "eta_bucket": {"type": "string", "enum": list(ETA_BUCKETS)},
        },
        "required": ["category", "eta_bucket"],
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
            "lane_id": {"type": "string", "minLength": 1},
            "reason": {"type": "string", "enum": list(ROUTE_REASONS)},
        },
        "required": ["lane_id", "reason"],
        "additionalProperties": False,
    },
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
    """The compact JSON the assistant turn holds.

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


def tokenizer_glossary() -> list[str]:
    """The words of the task interface: system prompts, instructions, answer keys and enums.

    The demo tokenizer and the pre-training read these beside the corpus, so that a label
    such as ``perishable`` or a key such as ``unit_price`` is one or two tokens with a
    trained embedding, as it would be in Llama 3. They hold no answer: nothing pairs a
    document with a label. (Kept out of pre-training, the label tokens kept their random
    initial embeddings, which the tied output layer could not learn to emit: the adapters
    then wrote the same label for every input.)
    """
    out: list[str] = []
    for task in TASKS:
        out += [SYSTEM_PROMPTS[task], USER_INSTRUCTIONS[task]]
        out.append(json.dumps(ANSWER_SCHEMAS[task], separators=(",", ":")))
    return out


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
        prompt = f"{USER_INSTRUCTIONS[task]}\n\n{doc}"
        if prompt in seen:  # duplicates would only inflate a split
            continue
        seen.add(prompt)
        records.append(
            {
                "id": f"{task}/{split}/{seed}/{len(records)}",
                "task": task,
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPTS[task]},
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": render_answer(task, answer)},
                ],
                "prompt": prompt,
                "answer": answer,
                "meta": {"split": split, "seed": seed, **meta},
            }
        )
    return records
