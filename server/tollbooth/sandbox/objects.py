"""Ids, test cards, time arithmetic and the plain shapes of Stripe objects."""

from __future__ import annotations

import calendar
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tollbooth import currencies
from tollbooth.sandbox.wire import bad_request

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def list_envelope(data: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


# -- test cards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestCard:
    number: str
    brand: str
    # "ok": every charge succeeds; "decline": every charge fails;
    # "fail_later": attaches and pays while the customer is present, fails off-session (renewals).
    behaviour: str
    decline_code: str | None = None


TEST_CARDS = {
    c.number: c
    for c in (
        TestCard("4242424242424242", "visa", "ok"),
        TestCard("4000056655665556", "visa", "ok"),
        TestCard("5555555555554444", "mastercard", "ok"),
        TestCard("378282246310005", "amex", "ok"),
        TestCard("4000000000000002", "visa", "decline", "generic_decline"),
        TestCard("4000000000009995", "visa", "decline", "insufficient_funds"),
        TestCard("4000000000000341", "visa", "fail_later", "generic_decline"),
    )
}

# Stripe's test PaymentMethod tokens (usable wherever a payment_method id is accepted).
TEST_PM_TOKENS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_amex": "378282246310005",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeCustomerFail": "4000000000000341",
}

DEFAULT_CARD = "4242424242424242"

DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
}


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def normalise_card(raw: str) -> str:
    """The card number typed: its ASCII digits, spaces and dashes between them dropped.
    Anything else in it (a letter, a superscript two, which passes str.isdigit yet int()
    refuses, full-width or Arabic-Indic digits: not what Stripe reads) makes it "" (an
    incorrect number), never a digit it was not."""
    if any(not ("0" <= c <= "9" or c in " -") for c in raw):
        return ""
    return "".join(c for c in raw if "0" <= c <= "9")


# -- time ---------------------------------------------------------------------------------------


LAST_TIMESTAMP = 253_402_300_799  # 9999-12-31 23:59:59 UTC: the last second a date can show


def add_interval(ts: int, interval: str, count: int, anchor: int) -> int:
    """The next period end after `ts`, keeping the anchor's day of month (clamped); a 400
    when it would come after the year 9999 (a test clock near its end), never a crash."""
    end = _add_interval(ts, interval, count, anchor)
    if end is None or end > LAST_TIMESTAMP:
        raise bad_request(
            "The billing period would end after 9999-12-31: the clock is too far ahead."
        )
    return end


def _add_interval(ts: int, interval: str, count: int, anchor: int) -> int | None:
    if interval == "day":
        return ts + 86400 * count
    if interval == "week":
        return ts + 7 * 86400 * count
    months = count * (12 if interval == "year" else 1)
    current = datetime.fromtimestamp(ts, UTC)
    anchor_dt = datetime.fromtimestamp(anchor, UTC)
    month_index = current.month - 1 + months
    year = current.year + month_index // 12
    if year > 9999:
        return None
    month = month_index % 12 + 1
    day = min(anchor_dt.day, calendar.monthrange(year, month)[1])
    nxt = current.replace(year=year, month=month, day=day)
    return int(nxt.timestamp())


def fmt_amount(amount: int, currency: str) -> str:
    """Minor units as the currency's major units, exactly, with thousands separators."""
    places = currencies.exponent(currency)
    return f"{currencies.major(amount, currency):,.{places}f} {currency.upper()}"


def fmt_date(ts: int | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def plan_from_price(price: dict[str, Any]) -> dict[str, Any]:
    recurring = price.get("recurring") or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count"),
        "livemode": False,
        "metadata": price["metadata"],
        "meter": None,
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }
