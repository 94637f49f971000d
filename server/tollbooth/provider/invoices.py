"""Reading Stripe's invoice objects (as `StripeProvider.retrieve_invoice` returns them): what
paid an invoice, and what a renewal invoice charged for. Hostile shapes read as absent."""

from __future__ import annotations

from typing import Any


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def paid_intent(invoice: dict[str, Any]) -> str | None:
    """The PaymentIntent that paid the invoice (None when nothing paid it)."""
    for p in _list(_dict(invoice.get("payments")).get("data")):
        intent = _dict(_dict(p).get("payment")).get("payment_intent")
        if _dict(p).get("status") == "paid" and isinstance(intent, str) and intent:
            return intent
    return None


def renewal_lines(invoice: dict[str, Any]) -> list[tuple[str, int, int | None]] | None:
    """What a renewal invoice charged for, line by line: (Stripe price id, quantity, the
    billing period's start), prorations left out. None when the invoice does not show all of
    its lines (`has_more`: Stripe embeds the first ten) or no line names its price: the caller
    then reads the subscription's items instead."""
    lines = _dict(invoice.get("lines"))
    if lines.get("has_more") is not False:
        return None
    out: list[tuple[str, int, int | None]] = []
    for line in _list(lines.get("data")):
        line = _dict(line)
        parent = _dict(line.get("parent"))
        details = _dict(parent.get("subscription_item_details"))
        if parent.get("type") != "subscription_item_details" or details.get("proration"):
            continue
        price = _dict(_dict(line.get("pricing")).get("price_details")).get("price")
        price = price or _dict(line.get("price")).get("id")  # older API versions
        quantity = line.get("quantity")
        start = _dict(line.get("period")).get("start")
        if not isinstance(price, str) or not (type(quantity) is int and 0 < quantity < 2**31):
            return None
        out.append((price, quantity, start if type(start) is int else None))
    return out or None
