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
could not even overfit one batch).

A real base model also brings general knowledge and skills that the tasks lean on, so the
corpus teaches those too, each apart from the task's answers: what kind of goods each item
is (dangerous, spoils, breakable, out of gauge, ordinary, papers: never the label words),
which distances make a short, medium or long haul, which of two lanes is cheaper or faster
and whether a lane meets a deadline, and copying from context (notes that refer back to
their document, scan logs that list the same random ids twice). Measured on the demo model,
400 pre-training steps were not enough for copying to emerge: on held-out scan logs the
second listing costs almost as much as the first (1.99 against 2.15 nats per token).
Stdlib only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from training.synthetic_tasks import (
    CATEGORY_PRECEDENCE,
    ETA_BUCKETS,
    LONG_KM,
    ROUTE_REASONS,
    SHORT_KM,
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


# What a real base model knows about goods, in words other than the task's labels: the
# adapter still has to learn which label each kind of goods gets, and the precedence rule.
_GOODS_NATURE: dict[str, tuple[str, ...]] = {
    "hazardous": (
        "{item}: dangerous goods, shipped under ADR rules",
        "{item}: needs a dangerous-goods declaration",
        "{item}: can burn or explode, so it travels as dangerous goods",
    ),
    "perishable": (
        "{item}: spoils within days, shipped in the cold chain",
        "{item}: must stay chilled from dock to door",
        "{item}: goes bad quickly and leaves on the first truck",
    ),
    "fragile": (
        "{item}: breakable, packed with care and never stacked",
        "{item}: breaks when dropped, so it gets foam and corner guards",
        "{item}: travels upright with a handle-with-care sticker",
    ),
    "oversized": (
        "{item}: out of gauge, too big for a standard trailer",
        "{item}: needs a flatbed and sometimes an escort",
        "{item}: exceeds pallet size and loads by crane",
    ),
    "general": (
        "{item}: ordinary freight, no special handling",
        "{item}: ships as standard cartons on any trailer",
        "{item}: needs nothing beyond a normal pallet",
    ),
    "documents": (
        "{item}: papers only, sent in a courier envelope",
        "{item}: paperwork that travels in a document pouch",
        "{item}: weighs almost nothing and goes by courier",
    ),
}


def haul(km: int) -> str:
    """Road haul class by distance; the thresholds are the ETA rule's (300 and 1000 km)."""
    return "short" if km < SHORT_KM else "medium" if km < LONG_KM else "long"


def _haul_km(rng: random.Random) -> int:
    """A distance, half the time within 20% of a haul threshold."""
    if rng.random() < 0.5:
        t = rng.choice((SHORT_KM, LONG_KM))
        km = rng.randint(int(t * 0.8), int(t * 1.2))
        return km if km != t else km + 1
    return rng.randint(20, 3400)


def _skill_sentence(rng: random.Random) -> str:
    """General knowledge the tasks lean on: goods handling, haul lengths, comparing lanes."""
    w = _window(rng)
    pick = rng.randrange(5)
    if pick == 0:
        cat = rng.choice(tuple(GOODS))
        item = rng.choice(GOODS[cat]).removeprefix("a ").removeprefix("an ")
        text = rng.choice(_GOODS_NATURE[cat]).format(item=item)
        return text[0].upper() + text[1:] + "."
    if pick == 1:
        km = _haul_km(rng)
        return rng.choice(
            (
                f"A {km} km trip is a {haul(km)} haul.",
                f"At {km} km, the run counts as a {haul(km)} haul.",
                f"{km} km by road: {haul(km)} haul.",
            )
        )
    c1, c2 = rng.sample(CARRIERS[w], 2)
    a, b = f"{c1.code}-{rng.randint(100, 999)}", f"{c2.code}-{rng.randint(100, 999)}"
    if pick == 2:
        t, d = rng.randint(1, 14), rng.randint(2, 12)
        verdict = "in time for" if t <= d else "too slow for"
        return f"Lane {a} takes {t} days, {verdict} a {d}-day deadline."
    if pick == 3:
        x, y = rng.sample(range(30, 700), 2)
        x, y = x * 10, y * 10
        word = "cheaper" if x < y else "dearer"
        return f"At {x} EUR, lane {a} is {word} than lane {b} at {y} EUR."
    t1, t2 = rng.sample(range(1, 15), 2)
    word = "faster" if t1 < t2 else "slower"
    return f"Lane {a} ({t1} days) is {word} than lane {b} ({t2} days)."


def _paragraph(rng: random.Random) -> str:
    n = rng.randint(3, 7)
    return " ".join(
        _skill_sentence(rng) if rng.random() < 0.5 else _sentence(rng) for _ in range(n)
    )


def _reference(rng: random.Random) -> str:
    """A document followed by a note that refers back to it (ids, names, amounts copied).

    Copying from earlier in the context is a skill every real base model has; these notes
    pick what they copy at random, so none of them is a task answer.
    """
    w = _window(rng)
    pick = rng.randrange(3)
    if pick == 0:
        doc, _, meta = make_route(rng, w)
        lanes = rng.sample(meta["lanes"], rng.randint(1, min(2, len(meta["lanes"]))))
        notes = [
            f"Booked {ln['id']}: {ln['cost']} EUR, {ln['transit_days']} days." for ln in lanes
        ]
        return doc + "\n" + " ".join(notes)
    if pick == 1:
        doc, answer, _ = make_invoice(rng, w)
        line = rng.choice(answer["line_items"])
        total = money(round(answer["total"] * 100))
        return doc + (
            f"\nPaid {total} {answer['currency']} to {answer['vendor']} for invoice "
            f"{answer['invoice_number']} of {answer['date']}; first checked line: "
            f"{line['description']}, {line['quantity']} x {money(round(line['unit_price'] * 100))}."
        )
    doc, _, meta = make_shipment(rng, w)
    return doc + (
        f"\nDelivered {meta['shipment_id']} from {meta['origin']} to {meta['destination']} "
        f"({meta['distance_km']} km, a {haul(meta['distance_km'])} haul) by {meta['carrier']}."
    )


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


def _random_id(rng: random.Random, window: str) -> str:
    pick = rng.randrange(4)
    if pick == 0:
        return f"{rng.choice(CARRIERS[window]).code}-{rng.randint(100, 999)}"
    if pick == 1:
        return f"SHP-{rng.randint(10000, 9999999)}"
    if pick == 2:
        return f"{rng.choice('ABCDEFKMPRT')}-{rng.randint(1000, 9999)}"
    return rng.choice(VENDORS[window]).number_format.format(
        year=rng.randint(2021, 2026), yy=f"{rng.randint(21, 26)}", n=rng.randint(1, 9999)
    )


def _scan_log(rng: random.Random) -> str:
    """Labels scanned at one point and again at the next, in the same order.

    The ids are random, so the second scan is predictable only by copying the first: this
    is what teaches a small model to copy from its context (induction), which reading an
    id off a document and writing it into an answer needs.
    """
    w = _window(rng)
    ids = [_random_id(rng, w) for _ in range(rng.randint(4, 10))]
    dock = rng.randint(1, 40)
    first, second = rng.sample(("gate", "dock", "ramp", "hold", "sorter", "truck"), 2)
    return (
        f"Scan log {first} {dock}: " + ", ".join(ids) + f".\nScan log {second} {dock}: "
        + ", ".join(ids) + "."
    )


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
    if kind == 5:
        return interface_record(rng)
    if kind == 6:
        return _reference(rng)
    return _scan_log(rng)


# Shares of shipment text, invoices, lane lists, prose, JSON records, interface records,
# documents with a note that refers back to them, scan logs.
_KIND_WEIGHTS = (18, 11, 9, 22, 8, 8, 12, 12)


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
