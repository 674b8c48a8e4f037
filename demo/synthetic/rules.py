"""The labelling rules of the three demo tasks, and what their example makers share.

Each maker (:mod:`demo.synthetic.shipments`, :mod:`demo.synthetic.invoices`,
:mod:`demo.synthetic.routes`) takes a ``random.Random`` and a window (``"train"`` or
``"test"``) and returns ``(document, answer, meta)``: the text a service would send, the
ground-truth answer, and the facts the answer was derived from (so a test can recompute
it). The test window uses other cities, carriers and vendors and is harder on purpose:
more goods per shipment, distances near the ETA thresholds, longer invoices, lanes near
the deadline with costs close together. This module holds the rules that derive an
answer from those facts, and the city pairs, road distances and money format the makers
share. Pure stdlib.
"""

from __future__ import annotations

import itertools
import math
import random
from functools import cache
from typing import Any

from demo.synthetic.vocab import CITIES, City

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


def distance_band(distance_km: int) -> str:
    """The working field between a distance and its ETA bucket."""
    return DISTANCE_BANDS[0 if distance_km < SHORT_KM else 1 if distance_km < LONG_KM else 2]


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
def city_pairs(window: str) -> tuple[tuple[City, City, float], ...]:
    """Every pair of the window's cities, with its great-circle distance in km."""
    cities = CITIES[window]
    return tuple((a, b, _great_circle_km(a, b)) for a, b in itertools.combinations(cities, 2))


# Roads are longer than the great circle by a factor that depends on the route taken.
_ROAD_MIN, _ROAD_MAX = 1.12, 1.38


def sample_route(rng: random.Random, window: str, lo: int, hi: int) -> tuple[City, City, int]:
    """Two cities of the window and a road distance in [lo, hi), never exactly a threshold."""
    feasible = [p for p in city_pairs(window) if p[2] * _ROAD_MIN < hi and p[2] * _ROAD_MAX >= lo]
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
