"""The shipment-classification maker: a shipment in one of several layouts, labelled
with its category and ETA bucket (:mod:`demo.synthetic.rules` has the rules). Pure stdlib.
"""

from __future__ import annotations

import random
from typing import Any

from demo.synthetic.rules import (
    CATEGORY_PRECEDENCE,
    LONG_KM,
    SHORT_KM,
    Made,
    distance_band,
    eta_bucket,
    sample_route,
    shipment_category,
)
from demo.synthetic.vocab import CARRIERS, GOODS, NOTES, PACKAGING, SERVICE_LEVELS


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
            (
                f"Hi team,\nplease book {svc} transport for {contents} from {o} to {d} "
                f"({km} by road). Our ref {sid}, carrier {code}, {weight} kg in total."
            )
            + (f" {note}" if note else "")
            + "\nThanks!"
        )
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
        "sid": sid,
        "carrier": carrier.code,
        "km": km,
        "service": service,
        "origin": origin.name,
        "dest": dest.name,
        "origin_country": origin.country,
        "dest_country": dest.country,
        "contents": ", ".join(p for p, _ in phrases),
        "note": note,
        "pieces": pieces,
        "weight": weight,
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
