"""The route-optimization maker: candidate lanes and a deadline in one of several
layouts, labelled with the chosen lane and a reason code (the rule is
:func:`demo.synthetic.rules.choose_lane`). Pure stdlib.
"""

from __future__ import annotations

import random
from typing import Any

from demo.synthetic.rules import ROUTE_REASONS, Made, choose_lane, city_pairs
from demo.synthetic.vocab import CARRIERS, City


def _lane_costs(rng: random.Random, n: int, hard: bool) -> list[int]:
    base = rng.randint(40, 600) * 10
    spread = (0.85, 1.15) if hard else (0.6, 1.6)
    while True:
        costs = [int(base * rng.uniform(*spread) / 10) * 10 for _ in range(n)]
        if len(set(costs)) == n:
            return costs


def _lane_transits(rng: random.Random, reason: str, n: int, deadline: int, hard: bool) -> list[int]:
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
    a, b, _ = rng.choice(city_pairs(window))
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
