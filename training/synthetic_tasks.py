"""The three demo tasks: their labelling rules and seeded example makers.

Each maker takes a ``random.Random`` and a window (``"train"`` or ``"test"``) and returns
``(document, answer, meta)``: the text a service would send, the ground-truth answer, and
the facts the answer was derived from (so a test can recompute it). The test window uses
other cities, carriers and vendors and is harder on purpose: more goods per shipment,
distances near the ETA thresholds, longer invoices, lanes near the deadline with costs
close together. Pure stdlib.
"""

from __future__ import annotations

import itertools
import math
import random
from functools import cache
from typing import Any

from training.synthetic_vocab import (
    CARRIERS,
    CHARGES,
    CITIES,
    GOODS,
    MONTHS,
    NOTES,
    PACKAGING,
    SERVICE_LEVELS,
    VENDORS,
    City,
)

Made = tuple[str, dict[str, Any], dict[str, Any]]

# A shipment's category is the first of these that any of its goods belongs to:
# safety first, then shelf life, then handling, then size; documents only when the
# parcel holds nothing but documents.
CATEGORY_PRECEDENCE: tuple[str, ...] = (
    "hazardous",
    "perishable",
    "fragile",
    "oversized",
    "general",
    "documents",
)
ETA_BUCKETS: tuple[str, ...] = ("same_day", "1-2_days", "3-5_days", "6+_days")
SHORT_KM = 300
LONG_KM = 1000
DISTANCE_BANDS: tuple[str, ...] = ("under_300_km", "300_to_999_km", "1000_km_or_more")
ROUTE_REASONS: tuple[str, ...] = ("cheapest_on_time", "only_on_time", "fastest_none_on_time")
# ETA bucket by service level, for distances under 300 km, under 1000 km, and beyond.
_ETA_BY_SERVICE: dict[str, tuple[str, str, str]] = {
    "express": ("same_day", "1-2_days", "3-5_days"),
    "standard": ("1-2_days", "3-5_days", "6+_days"),
    "economy": ("3-5_days", "3-5_days", "6+_days"),
}


# --------------------------------------------------------------------------- rules


def shipment_category(goods_categories: list[str]) -> str:
    """The highest-precedence category among the goods."""
    return min(goods_categories, key=CATEGORY_PRECEDENCE.index)


def eta_bucket(service_level: str, distance_km: int) -> str:
    """ETA bucket from the service level and the road distance (thresholds 300 and 1000 km)."""
    band = 0 if distance_km < SHORT_KM else 1 if distance_km < LONG_KM else 2
    return _ETA_BY_SERVICE[service_level][band]


def choose_lane(lanes: list[dict[str, Any]], deadline_days: int) -> tuple[str, str]:
    """(lane id, reason): the cheapest lane on time, else the fastest lane."""
    on_time = [lane for lane in lanes if lane["transit_days"] <= deadline_days]
    if on_time:
        best = min(on_time, key=lambda lane: lane["cost"])
        return best["id"], "only_on_time" if len(on_time) == 1 else "cheapest_on_time"
    fastest = min(lanes, key=lambda lane: lane["transit_days"])
    return fastest["id"], "fastest_none_on_time"


# --------------------------------------------------------------------------- helpers


def _great_circle_km(a: City, b: City) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))


@cache
def _pairs(window: str) -> tuple[tuple[City, City, float], ...]:
    cities = CITIES[window]
    return tuple((a, b, _great_circle_km(a, b)) for a, b in itertools.combinations(cities, 2))


# Roads are longer than the great circle by a factor that depends on the route taken.
_ROAD_MIN, _ROAD_MAX = 1.12, 1.38


def sample_route(rng: random.Random, window: str, lo: int, hi: int) -> tuple[City, City, int]:
    """Two cities of the window and a road distance in [lo, hi), never exactly a threshold."""
    feasible = [p for p in _pairs(window) if p[2] * _ROAD_MIN < hi and p[2] * _ROAD_MAX >= lo]
    if not feasible:
        raise ValueError(f"no city pair of window {window!r} fits {lo}-{hi} km")
    while True:
        a, b, gc = rng.choice(feasible)
        f_lo, f_hi = max(_ROAD_MIN, lo / gc), min(_ROAD_MAX, hi / gc)
        km = int(gc * rng.uniform(f_lo, f_hi))
        if lo <= km < hi and km not in (SHORT_KM, LONG_KM) and km >= 20:
            return (a, b, km) if rng.random() < 0.5 else (b, a, km)


def money(cents: int) -> str:
    """Cents as a plain decimal with two places (1234.50): the way invoices print money."""
    return f"{cents // 100}.{cents % 100:02d}"


# --------------------------------------------------------------------------- shipments


def _goods_phrase(rng: random.Random, item: str) -> tuple[str, int]:
    if item.startswith(("a ", "an ")):
        return item, 1
    qty = rng.choice((1, 2, 3, 4, 5, 6, 8, 10, 12, 20, 24, 40))
    return f"{qty} {rng.choice(PACKAGING)} of {item}", qty


def _pick_goods(rng: random.Random, window: str, target: str, k: int) -> list[tuple[str, str]]:
    """k distinct goods of the window whose highest-precedence category is ``target``."""
    goods = GOODS[window]
    rank = CATEGORY_PRECEDENCE.index(target)
    lower = CATEGORY_PRECEDENCE[rank:] if target != "documents" else ("documents",)
    picked = [(rng.choice(goods[target]), target)]
    while len(picked) < k:
        cat = rng.choice(lower)
        item = rng.choice(goods[cat])
        if all(item != p[0] for p in picked):
            picked.append((item, cat))
    rng.shuffle(picked)
    return picked


def _weight_kg(rng: random.Random, categories: list[str]) -> str:
    if "oversized" in categories:
        return str(rng.randint(1200, 28000))
    if set(categories) == {"documents"}:
        return f"{rng.randint(1, 49) / 10:.1f}"
    return str(rng.randint(2, 1800))


def _distance_range(rng: random.Random, window: str) -> tuple[int, int]:
    # Both windows put many distances near a threshold: a model learns where a threshold
    # lies only from examples on both sides of it. The test window does so more often.
    if rng.random() < (0.6 if window == "test" else 0.5):
        t = rng.choice((SHORT_KM, LONG_KM))
        return int(t * 0.8), int(t * 1.2)
    return rng.choice(((30, SHORT_KM), (SHORT_KM, LONG_KM), (LONG_KM, 3400)))


def distance_band(distance_km: int) -> str:
    """The working field between a distance and its ETA bucket."""
    return DISTANCE_BANDS[0 if distance_km < SHORT_KM else 1 if distance_km < LONG_KM else 2]


def _km(rng: random.Random, km: int) -> str:
    return rng.choice((f"{km} km", f"{km} km", f"{km}km", f"{km} kilometres", f"{km} KM"))


def _service(rng: random.Random, service: str) -> str:
    return rng.choice((service, service, service.capitalize(), service.upper()))


def _shipment_text(rng: random.Random, f: dict[str, Any]) -> tuple[str, int]:
    """A shipment in one of several layouts, from a form to a line typed by a person."""
    sid, code, km, svc = f["sid"], f["carrier"], _km(rng, f["km"]), _service(rng, f["service"])
    o, d, oc, dc = f["origin"], f["dest"], f["origin_country"], f["dest_country"]
    contents, note, pieces, weight = f["contents"], f["note"], f["pieces"], f["weight"]
    layout = rng.randrange(7)
    if layout == 0:
        doc = (
            f"Shipment {sid} booked with carrier {code}. Route: {o} ({oc}) to {d} ({dc}), "
            f"road distance {km}. Service level: {svc}. {pieces} pieces, {weight} kg. "
            f"Contents: {contents}."
        ) + (f" Note: {note}" if note else "")
    elif layout == 1:
        doc = (
            f"Carrier: {code}\nReference: {sid}\nOrigin: {o}, {oc}\nDestination: {d}, {dc}"
            f"\nDistance: {km}\nService: {svc}\nWeight: {weight} kg ({pieces} pieces)"
            f"\nContents: {contents}"
        ) + (f"\nRemarks: {note}" if note else "")
    elif layout == 2:
        doc = (
            f"{code} | {sid} | {o} {oc} > {d} {dc} | {km} | {svc} | {weight} kg | "
            f"contents: {contents}"
        ) + (f" | note: {note}" if note else "")
    elif layout == 3:  # the way a person types it
        doc = f"Carrier {code}, {contents}, {o} to {d}, {km}, {svc}."
    elif layout == 4:
        doc = (
            f"Hi team,\nplease book {svc} transport for {contents} from {o} to {d} "
            f"({km} by road). Our ref {sid}, carrier {code}, {weight} kg in total."
        ) + (f" {note}" if note else "") + "\nThanks!"
    elif layout == 5:
        doc = (
            f"Need a pickup: {contents}. {o} -> {d}, approx. {km}. Service {svc}. "
            f"Carrier {code}, ref {sid}."
        )
    else:
        doc = (
            f"Booking {sid}: {svc} service with {code}. Goods: {contents} ({weight} kg). "
            f"From {o}, {oc} to {d}, {dc}; the road trip is {km}."
        ) + (f" {note}" if note else "")
    return doc, layout


def make_shipment(rng: random.Random, window: str) -> Made:
    """A shipment description; the answer is its category and ETA bucket."""
    target = rng.choice(CATEGORY_PRECEDENCE)
    k = rng.choice((3, 3, 4)) if window == "test" else rng.choice((1, 1, 2, 2, 3, 4))
    goods = _pick_goods(rng, window, target, k)
    origin, dest, km = sample_route(rng, window, *_distance_range(rng, window))
    service = rng.choice(SERVICE_LEVELS)
    carrier = rng.choice(CARRIERS[window])
    sid = f"SHP-{rng.randint(10000, 99999) if window == 'train' else rng.randint(10**6, 10**7 - 1)}"
    phrases = [_goods_phrase(rng, item) for item, _ in goods]
    pieces = sum(q for _, q in phrases)
    weight = _weight_kg(rng, [c for _, c in goods])
    note = rng.choice(NOTES) if rng.random() < (0.8 if window == "test" else 0.5) else ""
    fields = {
        "sid": sid, "carrier": carrier.code, "km": km, "service": service,
        "origin": origin.name, "dest": dest.name, "origin_country": origin.country,
        "dest_country": dest.country, "contents": ", ".join(p for p, _ in phrases),
        "note": note, "pieces": pieces, "weight": weight,
    }
    doc, layout = _shipment_text(rng, fields)
    cats = [c for _, c in goods]
    answer = {"category": shipment_category(cats), "eta_bucket": eta_bucket(service, km)}
    meta = {
        "shipment_id": sid,
        "carrier": carrier.code,
        "origin": origin.name,
        "destination": dest.name,
        "distance_km": km,
        "service_level": service,
        "goods": [{"item": item, "category": cat} for item, cat in goods],
        "weight_kg": weight,
        "pieces": pieces,
        "layout": layout,
    }
    return doc, answer, meta


def shipment_working(answer: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The answer with its working fields, in the order the model writes them.

    Each good with its own category first (what the base model knows of the world: that
    gunpowder is hazardous, that orchids spoil), then the shipment's category, the first
    of those by precedence. The ETA bucket is a lookup of the distance's band and the
    service level: written out just before it, each is one short step from the text (copy
    a number, compare it with 300 and 1000, copy a word), and the bucket one step from them.
    """
    km = int(meta["distance_km"])
    return {
        "goods": [{"item": g["item"], "category": g["category"]} for g in meta["goods"]],
        "category": answer["category"],
        "distance_km": km,
        "distance_band": distance_band(km),
        "service_level": meta["service_level"],
        "eta_bucket": answer["eta_bucket"],
    }


# --------------------------------------------------------------------------- invoices


def _unit_price_cents(rng: random.Random) -> int:
    # Log-uniform between 5 and 2500 so that both fees and freight legs occur.
    return round(math.exp(rng.uniform(math.log(500), math.log(250000))))


MONTH_NAMES: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _invoice_lines(
    rng: random.Random,
    vendor: Any,
    number: str,
    ymd: tuple[int, int, int],
    items: list[dict[str, Any]],
    subtotal: int,
    vat: int,
    total: int,
) -> tuple[int, list[str | None]]:
    """(layout, lines); None marks a line this vendor does not print (no VAT at 0%)."""
    year, month, day = ymd
    cur = vendor.currency
    iso = f"{year}-{month:02d}-{day:02d}"
    vat_line = f"VAT {vendor.vat}%: {money(vat)}" if vendor.vat else None
    layout = rng.randrange(6)
    lines: list[str | None]
    if layout == 0:
        lines = [f"INVOICE {number}", f"Vendor: {vendor.name}", f"Date: {iso}"]
        lines += [f"Currency: {cur}", "", "Description | Qty | Unit price | Amount"]
        lines += [
            f"{i['description']} | {i['quantity']} | {money(i['unit'])} | {money(i['amount'])}"
            for i in items
        ]
        lines += ["", f"Subtotal: {money(subtotal)}", vat_line, f"Total: {money(total)} {cur}"]
    elif layout == 1:
        lines = [vendor.name, f"Invoice no. {number}, issued {day:02d}.{month:02d}.{year}"]
        lines += [f"All amounts in {cur}."]
        lines += [
            f"{j}. {i['description']}: {i['quantity']} x {money(i['unit'])} = {money(i['amount'])}"
            for j, i in enumerate(items, 1)
        ]
        lines += [f"Net: {money(subtotal)}", vat_line, f"Amount due: {money(total)}"]
    elif layout == 2:
        date = f"{day} {MONTHS[month - 1]} {year}"
        lines = [f"vendor={vendor.name}; invoice={number}; date={date}; currency={cur}"]
        lines += [
            f'item="{i["description"]}" qty={i["quantity"]} price={money(i["unit"])} '
            f"amount={money(i['amount'])}"
            for i in items
        ]
        tail = f"subtotal={money(subtotal)}; " + (f"vat={money(vat)}; " if vendor.vat else "")
        lines.append(tail + f"total={money(total)}")
    elif layout == 3:  # a letter, the date in words
        lines = [f"From: {vendor.name}", "To: Accounts payable", f"Subject: invoice {number}", ""]
        lines += [
            f"Dear customer, please find below our invoice {number} dated "
            f"{MONTH_NAMES[month - 1]} {day}, {year}. All prices are in {cur}."
        ]
        lines += [
            f"- {i['quantity']} x {i['description']} at {money(i['unit'])} each = "
            f"{money(i['amount'])}"
            for i in items
        ]
        lines += [f"Subtotal {money(subtotal)}", vat_line, f"Please pay {money(total)} {cur}."]
    elif layout == 4:  # a receipt, the vendor's name in capitals
        lines = [vendor.name.upper(), f"Invoice # {number}"]
        lines += [f"Invoice date: {_ordinal(day)} {MONTH_NAMES[month - 1]} {year}"]
        lines += [
            f"{i['description']} ({i['quantity']} @ {money(i['unit'])}) {cur} {money(i['amount'])}"
            for i in items
        ]
        lines += [f"TOTAL DUE {cur} {money(total)}"]
    else:  # a plain sentence
        listed = "; ".join(
            f"{i['description']}, {i['quantity']} at {money(i['unit'])} = {money(i['amount'])}"
            for i in items
        )
        lines = [
            f"Invoice {number} from {vendor.name}, dated {iso}, in {cur}: {listed}. "
            f"Total with tax: {money(total)}."
        ]
    return layout, lines


def make_invoice(rng: random.Random, window: str) -> Made:
    """An invoice in one of several layouts; the answer is its header, total and line items."""
    vendor = rng.choice(VENDORS[window])
    year = rng.randint(2021, 2024) if window == "train" else rng.randint(2025, 2026)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    n = rng.randint(1, 99999) if "{n:0" not in vendor.number_format else rng.randint(1, 9999)
    number = vendor.number_format.format(year=year, yy=f"{year % 100:02d}", n=n)
    k = rng.choice((3, 4, 4)) if window == "test" else rng.choice((1, 2, 2, 3))
    charges = rng.sample(CHARGES[window], k)
    items: list[dict[str, Any]] = []
    for charge in charges:
        a, b, _ = rng.choice(_pairs(window))
        desc = charge.format(route=f"{a.name}-{b.name}")
        qty = rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 10, 12))
        unit = _unit_price_cents(rng)
        items.append({"description": desc, "quantity": qty, "unit": unit, "amount": qty * unit})
    subtotal = sum(i["amount"] for i in items)
    vat = (subtotal * vendor.vat + 50) // 100
    total = subtotal + vat
    cur = vendor.currency
    iso = f"{year}-{month:02d}-{day:02d}"
    layout, lines = _invoice_lines(rng, vendor, number, (year, month, day), items, subtotal,
                                   vat, total)
    doc = "\n".join(line for line in lines if line is not None)
    answer = {
        "invoice_number": number,
        "vendor": vendor.name,
        "date": iso,
        "currency": cur,
        "total": total / 100,
        "line_items": [
            {
                "description": i["description"],
                "quantity": i["quantity"],
                "unit_price": i["unit"] / 100,
                "amount": i["amount"] / 100,
            }
            for i in items
        ],
    }
    meta = {
        "layout": layout,
        "vat_percent": vendor.vat,
        "subtotal_cents": subtotal,
        "vat_cents": vat,
        "total_cents": total,
        "line_cents": [[i["quantity"], i["unit"], i["amount"]] for i in items],
    }
    return doc, answer, meta


# --------------------------------------------------------------------------- routes


def _lane_costs(rng: random.Random, n: int, hard: bool) -> list[int]:
    base = rng.randint(40, 600) * 10
    spread = (0.85, 1.15) if hard else (0.6, 1.6)
    while True:
        costs = [int(base * rng.uniform(*spread) / 10) * 10 for _ in range(n)]
        if len(set(costs)) == n:
            return costs


def _lane_transits(
    rng: random.Random, reason: str, n: int, deadline: int, hard: bool
) -> list[int]:
    """Transit days per lane; on-time lanes first, then late ones."""
    k_on = {"only_on_time": 1, "fastest_none_on_time": 0}.get(reason, 0)
    if reason == "cheapest_on_time":
        k_on = rng.randint(2, n - 1) if n > 2 and rng.random() < 0.8 else n
    if hard:
        on = [rng.randint(max(1, deadline - 2), deadline) for _ in range(k_on)]
        late = [deadline + rng.choice((1, 1, 2)) for _ in range(n - k_on)]
    else:
        on = [rng.randint(1, deadline) for _ in range(k_on)]
        late = [deadline + rng.randint(1, 5) for _ in range(n - k_on)]
    if reason == "fastest_none_on_time":
        # The fastest lane must be unique, or "the fastest" is not one lane.
        fastest = min(late)
        for i in [i for i, t in enumerate(late) if t == fastest][1:]:
            late[i] += rng.randint(1, 2)
    return on + late


def make_route(rng: random.Random, window: str) -> Made:
    """Candidate lanes and a deadline; the answer is the chosen lane and a reason code."""
    reason = rng.choice(ROUTE_REASONS)
    n = rng.choice((3, 4)) if window == "test" else rng.choice((2, 3, 3, 4))
    deadline = rng.randint(3, 9) if window == "test" else rng.randint(2, 12)
    # Hard cases (transit days near the deadline, costs close together) make up the test
    # window and half of training: a model learns to compare only from close calls.
    hard = window == "test" or rng.random() < 0.5
    transits = _lane_transits(rng, reason, n, deadline, hard)
    assigned = _lane_costs(rng, n, hard)
    k_on = sum(t <= deadline for t in transits)
    # Usually the cheapest lane of all is a late one (or, when all are late, not the
    # fastest), so that "pick the cheapest" is a trap and not a shortcut.
    if rng.random() < 0.7:
        cheapest = assigned.index(min(assigned))
        if 0 < k_on < n:
            swap = rng.randrange(k_on, n)
        elif k_on == 0 and cheapest == transits.index(min(transits)):
            swap = rng.choice([i for i in range(n) if i != cheapest])
        else:
            swap = cheapest
        assigned[cheapest], assigned[swap] = assigned[swap], assigned[cheapest]
    carriers = CARRIERS[window]
    ids: list[str] = []
    lanes: list[dict[str, Any]] = []
    for i in range(n):
        carrier = rng.choice(carriers)
        lane_id = f"{carrier.code}-{rng.randint(100, 999)}"
        while lane_id in ids:
            lane_id = f"{carrier.code}-{rng.randint(100, 999)}"
        ids.append(lane_id)
        lanes.append(
            {"id": lane_id, "mode": carrier.mode, "cost": assigned[i], "transit_days": transits[i]}
        )
    rng.shuffle(lanes)
    a, b, _ = rng.choice(_pairs(window))
    layout, text = _route_text(rng, a, b, rng.randint(1, 33), deadline, lanes)
    lane_id, why = choose_lane(lanes, deadline)
    answer = {"lane_id": lane_id, "reason": why}
    meta = {"deadline_days": deadline, "lanes": lanes, "layout": layout}
    return text, answer, meta


def _days(t: int) -> str:
    return f"{t} day" if t == 1 else f"{t} days"


def _route_text(
    rng: random.Random, a: City, b: City, pallets: int, deadline: int, lanes: list[dict[str, Any]]
) -> tuple[int, str]:
    layout = rng.randrange(4)
    if layout == 0:
        head = (
            f"Shipment of {pallets} pallets from {a.name} ({a.country}) to {b.name} "
            f"({b.country}). Deadline: {_days(deadline)}.\nCandidate lanes:"
        )
        rows = [
            f"- {ln['id']}: {ln['mode']}, cost {ln['cost']} EUR, "
            f"transit {_days(ln['transit_days'])}"
            for ln in lanes
        ]
    elif layout == 1:
        head = (
            f"Route {a.name} -> {b.name}, {pallets} pallets, must arrive within "
            f"{_days(deadline)}.\nlane | mode | cost (EUR) | transit (days)"
        )
        rows = [f"{ln['id']} | {ln['mode']} | {ln['cost']} | {ln['transit_days']}" for ln in lanes]
    elif layout == 2:  # the way a person writes it
        options = "; ".join(
            f"{ln['id']} ({ln['mode']}) {ln['cost']} EUR, {_days(ln['transit_days'])}"
            for ln in lanes
        )
        return layout, (
            f"We need to move {pallets} pallets from {a.name} to {b.name} within "
            f"{_days(deadline)}. Options: {options}. Which lane?"
        )
    else:
        head = (
            f"Quote request: {a.name}, {a.country} to {b.name}, {b.country}; {pallets} "
            f"pallets; the goods must be there in {deadline} days at most.\nQuotes received:"
        )
        rows = [
            f"* {ln['id']} by {ln['mode']}: EUR {ln['cost']}, {ln['transit_days']} days in transit"
            for ln in lanes
        ]
    return layout, "\n".join([head, *rows])


def route_working(answer: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The answer with its working fields, in the order the model writes them.

    The deadline is copied first; then each lane in the order the text lists it, with its
    transit days and the deadline again right beside them (so that whether it is on time is
    a comparison of two adjacent numbers), its on-time flag and its cost; then how many
    lanes are on time (which decides the reason); then the choice.
    """
    deadline = int(meta["deadline_days"])
    lanes = [
        {
            "lane_id": ln["id"],
            "transit_days": ln["transit_days"],
            "deadline_days": deadline,
            "on_time": ln["transit_days"] <= deadline,
            "cost": ln["cost"],
        }
        for ln in meta["lanes"]
    ]
    return {
        "deadline_days": deadline,
        "lanes": lanes,
        "on_time_count": sum(ln["on_time"] for ln in lanes),
        "lane_id": answer["lane_id"],
        "reason": answer["reason"],
    }
