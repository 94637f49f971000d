"""What a receiver gets: seed 001's shape `{"id", "type", "timestamp", "data": {...}}`.

The rooms write their own payloads to the outbox under internal type names; this module is the
one place that turns a stored row into the public envelope (public type names, camelCase
fields, `accountId` everywhere), so no caller has to change when the wire shape does.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from tollbooth import currencies
from tollbooth.db.models import NotificationOutbox
from tollbooth.eventtypes import ENDPOINT_DISABLED as ENDPOINT_DISABLED
from tollbooth.eventtypes import KNOWN_TYPES as KNOWN_TYPES

# Internal type (what `outbox.enqueue` is given) -> public type (what receivers and endpoint
# filters see). Types not listed keep their name.
PUBLIC_TYPES = {
    "credits.balance_depleted": "account.credits.balance_depleted",
    "credits.granted": "account.credits.granted",
    "checkout.completed": "checkout.session.completed",
}
INTERNAL_TYPES = {public: internal for internal, public in PUBLIC_TYPES.items()}

# The types an endpoint may subscribe to: `tollbooth.eventtypes` (the OpenAPI document lists
# them too).


def public_type(internal: str) -> str:
    return PUBLIC_TYPES.get(internal, internal)


def internal_type(public: str) -> str:
    return INTERNAL_TYPES.get(public, public)


def timestamp(at: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds and a Z, as seed 001 writes it."""
    at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_CAMEL = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


def major_units(minor: object, currency: object) -> str | None:
    """Integer minor units as a decimal string of major units ("49.00"), exactly, counted as
    the provider counts them (tollbooth.currencies: 1000 MGA is "1000", 100 ISK is "1.00")."""
    if not isinstance(minor, int) or not isinstance(currency, str):
        return None
    return format(currencies.major(minor, currency), "f")


# Types that carry money, and the payload key of its integer minor units: receivers get it as
# seed 001's `amount` (a decimal string of major units, "49.00") beside `currency` ("USD").
MONEY = {
    "checkout.completed": "amount_total",
    "invoice.paid": "amount_paid",
    "invoice.payment_failed": "amount_due",
    "invoice.renewal_refunded": "amount_paid",
    "payment_intent.succeeded": "amount",
    "payment_intent.payment_failed": "amount",
    "payment_intent.duplicate_refunded": "amount",
    "charge.dispute.created": "amount",
    "charge.dispute.closed": "amount",
}


def _money(type_: str, payload: dict[str, Any], out: dict[str, Any]) -> None:
    """`amount` and `currency` as seed 001 writes them (null when the payload has none)."""
    currency = payload.pop("currency", None)
    minor = payload.pop(MONEY[type_], None)
    out["amount"] = major_units(minor, currency)
    out["currency"] = currency.upper() if isinstance(currency, str) and currency else None


def data(row: NotificationOutbox) -> dict[str, Any]:
    """The `data` object of a stored notification."""
    payload = dict(row.payload or {})
    out: dict[str, Any] = {}
    if row.billing_account_id:
        out["accountId"] = row.billing_account_id
    if row.type == "credits.balance_depleted":
        # Exactly seed 001's fields.
        out["amount"] = str(payload.get("balance", "0"))
        out["type"] = payload.get("credit_type", "")
        return out
    elif row.type == "credits.granted":
        out["amount"] = payload.pop("amount", "")
        out["type"] = payload.pop("credit_type", "")
    elif row.type == "checkout.completed":
        out["id"] = payload.pop("checkout_session_id", row.id)
        out["status"] = "completed"
        _money(row.type, payload, out)
        # The provider's invoice (`in_...`) and payment intent (`pi_...`); null when there is
        # none (a payment without an invoice; nothing to pay), and on rows older than them.
        out["invoiceId"] = payload.pop("invoice_id", None)
        out["paymentId"] = payload.pop("payment_id", None)
        out["passThroughToken"] = payload.pop("client_reference", None) or ""
    elif row.type in MONEY:
        _money(row.type, payload, out)
    for key, value in payload.items():
        out.setdefault(camel(key), public_value(key, value))
    return out


# Payload keys that hold an instant (`current_period_end`, `occurred_at`, `failing_since`).
_TIME_KEY = re.compile(r"(_at|_end|_start|_since|_time)$")


def public_value(key: str, value: Any) -> Any:
    """A payload value as receivers get it: nested objects' keys camelCase too, at any depth
    (lists included), and an instant stored with an offset (`isoformat`'s "+00:00") in
    `timestamp`'s UTC form ending in Z, as rows written before this rule are too."""
    if isinstance(value, dict):
        return {camel(str(k)): public_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_value(key, v) for v in value]
    if isinstance(value, str) and _TIME_KEY.search(key):
        try:
            at = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        return timestamp(at) if at.tzinfo is not None else value
    return value


def envelope(row: NotificationOutbox) -> dict[str, Any]:
    """The whole message: its id is the `webhook-id` receivers deduplicate by."""
    return {
        "id": row.id,
        "type": public_type(row.type),
        "timestamp": timestamp(row.created_at),
        "data": data(row),
    }


def body(row: NotificationOutbox) -> str:
    """The exact bytes (as text) that are signed and sent."""
    return json.dumps(envelope(row), separators=(",", ":"), sort_keys=False, default=str)
