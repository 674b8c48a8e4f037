"""Time the answer check of the hot path: jsonschema against jsonschema-rs.

Each demo route's schema, and 200 answers of its generator (with their working fields,
as the model writes them), parsed and checked the way ``gateway.inference.serving`` does.
Prints microseconds per answer for each library. Run: ``.venv/bin/python
scripts/bench_schema_check.py``; the figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import random
import time
from typing import Any

import jsonschema
import jsonschema_rs
import orjson
import yaml

from demo import ROUTES_FILE
from demo.synthetic.invoices import make_invoice
from demo.synthetic.routes import make_route, route_working
from demo.synthetic.shipments import make_shipment, shipment_working

ROUTES = ROUTES_FILE
MAKERS: dict[str, Any] = {
    "shipment-classification": (make_shipment, shipment_working),
    "invoice-parsing": (make_invoice, lambda answer, meta: answer),
    "route-optimization": (make_route, route_working),
}


def per_answer_us(check: Any, texts: list[bytes], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for text in texts:
            if not check(orjson.loads(text)):
                raise AssertionError("a generated answer failed its schema")
        best = min(best, (time.perf_counter() - t0) / len(texts))
    return best * 1e6


def main() -> None:
    routes = yaml.safe_load(ROUTES.read_text())["routes"]
    print("| route | answer bytes (mean) | jsonschema µs | jsonschema-rs µs | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, (make, working) in MAKERS.items():
        rng = random.Random(0)
        texts = []
        for _ in range(200):
            _, answer, meta = make(rng, "test")
            texts.append(orjson.dumps(working(answer, meta)))
        schema = routes[name]["schema"]
        py = jsonschema.Draft202012Validator(schema).is_valid
        rs = jsonschema_rs.Draft202012Validator(schema).is_valid
        a, b = per_answer_us(py, texts), per_answer_us(rs, texts)
        size = sum(map(len, texts)) / len(texts)
        print(f"| {name} | {size:.0f} | {a:.1f} | {b:.1f} | {a / b:.0f}× |")


if __name__ == "__main__":
    main()
