"""The invoice-parsing maker: an invoice in one of several layouts, labelled with its
header, total and line items. Pure stdlib.
"""

from __future__ import annotations

import math
import random
from typing import Any

from demo.synthetic.rules import Made, city_pairs, money
from demo.synthetic.vocab import CHARGES, MONTHS, VENDORS


def _unit_price_cents(rng: random.Random) -> int:
    # Log-uniform between 5 and 2500 so that both fees and freight legs occur.
    return round(math.exp(rng.uniform(math.log(500), math.log(250000))))


MONTH_NAMES: tuple[str, ...] = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
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
        a, b, _ = rng.choice(city_pairs(window))
        desc = charge.format(route=f"{a.name}-{b.name}")
        qty = rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 10, 12))
        unit = _unit_price_cents(rng)
        items.append({"description": desc, "quantity": qty, "unit": unit, "amount": qty * unit})
    subtotal = sum(i["amount"] for i in items)
    vat = (subtotal * vendor.vat + 50) // 100
    total = subtotal + vat
    cur = vendor.currency
    iso = f"{year}-{month:02d}-{day:02d}"
    layout, lines = _invoice_lines(
        rng, vendor, number, (year, month, day), items, subtotal, vat, total
    )
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
