"""Unlabelled logistics text for pre-training the demo base model (and its tokenizer).

The corpus teaches the world (cities, carriers, goods, invoices, lanes, JSON syntax, the
chat format) but never the tasks: no answer objects, no document beside its label, no
chosen lanes. ``FORBIDDEN_IN_CORPUS`` lists the label and answer-key strings; the unit tests
check that no document about a shipment, invoice or lane holds one. Documents come from
both generator windows, as a real base model would have read about every city.

The labels and answer keys are ordinary words, though, and a real base model has read
them many times. So one kind of document, the *interface records*, uses them apart from
any task input: warehouse zones by handling class, weekly shares of delivery promises,
counts of lane decisions, a data dictionary of field names. They name no goods, city,
carrier, lane or amount, and no record holds two answer fields of one task. Without them
the label tokens keep small, barely trained embeddings, and since the output layer is tied
to the embeddings, no LoRA adapter can make the model write them with confidence (a LoRA
could not even overfit one batch). Stdlib only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from training.synthetic_tasks import (
    CATEGORY_PRECEDENCE,
    ETA_BUCKETS,
    ROUTE_REASONS,
    _great_circle_km,
    _pairs,
    make_invoice,
    make_route,
    make_shipment,
    money,
)
from training.synthetic_vocab import CARRIERS, CITIES, GOODS, SERVICE_LEVELS, VENDORS

FORBIDDEN_IN_CORPUS: tuple[str, ...] = (
    "category",
    "eta_bucket",
    "same_day",
    "1-2_days",
    "3-5_days",
    "6+_days",
    "hazardous",
    "perishable",
    "fragile",
    "oversized",
    "lane_id",
    "reason",
    "cheapest_on_time",
    "only_on_time",
    "fastest_none_on_time",
    "invoice_number",
    "line_items",
    "unit_price",
)

COUNTRIES: dict[str, str] = {
    "DE": "Germany",
    "NL": "the Netherlands",
    "BE": "Belgium",
    "FR": "France",
    "IT": "Italy",
    "ES": "Spain",
    "AT": "Austria",
    "CZ": "Czechia",
    "PL": "Poland",
    "CH": "Switzerland",
    "DK": "Denmark",
    "SE": "Sweden",
    "HU": "Hungary",
    "PT": "Portugal",
    "SK": "Slovakia",
    "SI": "Slovenia",
    "HR": "Croatia",
    "NO": "Norway",
    "RO": "Romania",
    "BG": "Bulgaria",
}

_EVENTS = ("booked", "picked_up", "departed", "in_transit", "arrived", "out_for_delivery")


def _window(rng: random.Random) -> str:
    return rng.choice(("train", "test"))


def _road_km(rng: random.Random, window: str) -> tuple[str, str, int]:
    a, b, gc = rng.choice(_pairs(window))
    return a.name, b.name, int(gc * rng.uniform(1.12, 1.38))


def _sentence(rng: random.Random) -> str:
    w = _window(rng)
    c = rng.choice(CARRIERS[w])
    city = rng.choice(CITIES[w])
    a, b, km = _road_km(rng, w)
    v = rng.choice(VENDORS[w])
    cat = rng.choice(tuple(GOODS))
    item = rng.choice(GOODS[cat]).removeprefix("a ").removeprefix("an ")
    options: list[Callable[[], str]] = [
        lambda: f"{c.name} ({c.code}) runs {c.mode} services between {a} and {b}.",
        lambda: f"Carrier code {c.code} stands for {c.name}, a {c.mode} carrier.",
        lambda: f"The road distance from {a} to {b} is about {km} km.",
        lambda: f"{city.name} is a logistics hub in {COUNTRIES[city.country]}.",
        lambda: f"{v.name} sends its invoices in {v.currency}.",
        lambda: f"A truck covers about {rng.randint(60, 90) * 10} km on a long day.",
        lambda: f"The warehouse in {city.name} received {rng.randint(2, 60)} pallets of {item}.",
        lambda: f"{c.code} offers {rng.choice(SERVICE_LEVELS)} service from {a} to {b}.",
        lambda: (
            f"Lane {c.code}-{rng.randint(100, 999)} from {a} to {b} takes "
            f"{rng.randint(1, 14)} days by {c.mode} and costs {rng.randint(30, 700) * 10} EUR."
        ),
        lambda: f"The consignee in {city.name} signed for {rng.randint(1, 40)} pieces of {item}.",
        lambda: (
            f"Fuel prices moved the surcharge of {c.name} to "
            f"{rng.randint(5, 25)}.{rng.randint(0, 9)} percent."
        ),
        lambda: f"Cross-docking in {city.name} takes about {rng.randint(2, 12)} hours.",
    ]
    return rng.choice(options)()


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(3, 7)))


def _tracking_json(rng: random.Random) -> str:
    w = _window(rng)
    sid = f"SHP-{rng.randint(10000, 9999999)}"
    a, b, _ = _road_km(rng, w)
    day, hour = rng.randint(1, 28), rng.randint(5, 14)
    rows = []
    for i, event in enumerate(_EVENTS[: rng.randint(2, len(_EVENTS))]):
        place = a if i < 3 else b
        time = f"2024-{rng.randint(1, 12):02d}-{day:02d}T{hour + i:02d}:{rng.randint(0, 59):02d}"
        rows.append({"shipment": sid, "event": event, "location": place, "time": time})
    return "\n".join(json.dumps(r, separators=(",", ":")) for r in rows)


def _rate_card_json(rng: random.Random) -> str:
    w = _window(rng)
    rows = []
    for _ in range(rng.randint(1, 4)):
        c = rng.choice(CARRIERS[w])
        a, b, km = _road_km(rng, w)
        rows.append(
            {
                "carrier": c.code,
                "origin": a,
                "destination": b,
                "km": km,
                "price_eur": rng.randint(30, 700) * 10,
                "transit": rng.randint(1, 14),
            }
        )
    return json.dumps(rows, separators=(",", ":"))


def _stock_json(rng: random.Random) -> str:
    w = _window(rng)
    city = rng.choice(CITIES[w]).name
    cat = rng.choice(tuple(GOODS))
    value = money(rng.randint(100, 5_000_000))
    row = {
        "sku": f"{rng.choice('ABCDEFKMPRT')}-{rng.randint(1000, 9999)}",
        "warehouse": city,
        "goods": rng.choice(GOODS[cat]),
        "on_hand": rng.randint(0, 900),
        "value": value,
    }
    return json.dumps(row, separators=(",", ":")).replace(f'"{value}"', value)


# Every key of the three answer schemas (line items' keys included); a unit test checks
# this against training.synthetic.ANSWER_SCHEMAS.
INTERFACE_FIELDS: tuple[str, ...] = (
    "category",
    "eta_bucket",
    "invoice_number",
    "vendor",
    "date",
    "currency",
    "total",
    "line_items",
    "description",
    "quantity",
    "unit_price",
    "amount",
    "lane_id",
    "reason",
)
_FIELD_TYPES = ("string", "integer", "number", "array", "object")


def interface_record(rng: random.Random) -> str:
    """One record that uses the task interface's words apart from any task input."""
    pick = rng.randrange(4)
    if pick == 0:
        row: dict[str, object] = {
            "zone": f"{rng.choice('ABCDEFGH')}{rng.randint(1, 9)}",
            "handling": rng.choice(CATEGORY_PRECEDENCE),
            "slots": rng.randint(10, 400),
        }
    elif pick == 1:
        row = {
            "week": rng.randint(1, 52),
            "promise": rng.choice(ETA_BUCKETS),
            "share": round(rng.random(), 2),
        }
    elif pick == 2:
        row = {
            "audit": f"Q{rng.randint(1, 4)}",
            "decision": rng.choice(ROUTE_REASONS),
            "count": rng.randint(1, 900),
        }
    else:
        row = {
            "field": rng.choice(INTERFACE_FIELDS),
            "type": rng.choice(_FIELD_TYPES),
            "required": rng.random() < 0.5,
        }
    rows = [row] if rng.random() < 0.5 else [row, *(_same_kind(rng, row) for _ in range(2))]
    return "\n".join(json.dumps(r, separators=(",", ":")) for r in rows)


def _same_kind(rng: random.Random, row: dict[str, object]) -> dict[str, object]:
    out = dict(row)
    if "handling" in row:
        out["handling"] = rng.choice(CATEGORY_PRECEDENCE)
    elif "promise" in row:
        out["promise"] = rng.choice(ETA_BUCKETS)
    elif "decision" in row:
        out["decision"] = rng.choice(ROUTE_REASONS)
    else:
        out["field"] = rng.choice(INTERFACE_FIELDS)
    return out


def _document(rng: random.Random, kind: int) -> str:
    if kind == 0:
        return make_shipment(rng, _window(rng))[0]
    if kind == 1:
        return make_invoice(rng, _window(rng))[0]
    if kind == 2:
        return make_route(rng, _window(rng))[0]
    if kind == 3:
        return _paragraph(rng)
    if kind == 4:
        return rng.choice((_tracking_json, _rate_card_json, _stock_json))(rng)
    return interface_record(rng)


# Shares of shipment text, invoices, lane lists, prose, JSON records, interface records.
_KIND_WEIGHTS = (28, 19, 14, 19, 12, 8)


def pretraining_corpus(n_docs: int, *, seed: int) -> list[str]:
    """``n_docs`` plain-text logistics documents, deterministic from the seed."""
    if n_docs < 0:
        raise ValueError(f"n_docs must be >= 0, got {n_docs}")
    rng = random.Random(f"lora-gateway/corpus/{seed}")
    kinds = rng.choices(range(len(_KIND_WEIGHTS)), weights=_KIND_WEIGHTS, k=n_docs)
    return [_document(rng, kind) for kind in kinds]


def _chat(rng: random.Random) -> list[dict[str, str]]:
    w = _window(rng)
    c = rng.choice(CARRIERS[w])
    city = rng.choice(CITIES[w])
    pick = rng.randrange(6)
    if pick == 0:
        q, a = (
            f"What does carrier code {c.code} stand for?",
            f"{c.code} is {c.name}, a {c.mode} carrier.",
        )
    elif pick == 1:
        x, y = rng.sample(CITIES[w], 2)
        km = int(_great_circle_km(x, y) * 1.25)
        q, a = f"How far is {x.name} from {y.name} by road?", f"About {km} km."
    elif pick == 2:
        q = f"Which country is {city.name} in?"
        a = f"{city.name} is in {COUNTRIES[city.country]}."
    elif pick == 3:
        doc, _, meta = make_shipment(rng, w)
        q = f"Summarize this shipment.\n\n{doc}"
        a = (
            f"Shipment {meta['shipment_id']} goes from {meta['origin']} to {meta['destination']} "
            f"({meta['distance_km']} km) with {meta['carrier']}, {meta['service_level']} service."
        )
    elif pick == 4:
        doc, _, meta = make_route(rng, w)
        q = f"List the transit times of these lanes.\n\n{doc}"
        a = "; ".join(f"{ln['id']}: {ln['transit_days']} days" for ln in meta["lanes"]) + "."
    else:
        doc, answer, _ = make_invoice(rng, w)
        q = f"How many lines does this invoice have?\n\n{doc}"
        n = len(answer["line_items"])
        a = f"It has {n} line{'s' if n > 1 else ''}."
    messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    if rng.random() < 0.5:
        messages.insert(0, {"role": "system", "content": "You are a helpful logistics assistant."})
    return messages


def chat_corpus(n: int, *, seed: int) -> list[list[dict[str, str]]]:
    """``n`` short logistics conversations (messages lists) that teach the chat format."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"lora-gateway/chat-corpus/{seed}")
    return [_chat(rng) for _ in range(n)]
