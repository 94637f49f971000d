"""The outbound notifications a real purchase writes, as receivers get them (the signed body,
`envelope.body`), against seed 001's payloads: checkout.session.completed's fields, camelCase
all the way down, money as a decimal string of major units with an upper-case currency, and
timestamps in UTC ending in `Z`. Through real stubs and the sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World
from tollbooth.db.models import NotificationOutbox
from tollbooth.notifications import envelope

CREDITS = [
    catalog_pb2.CreditGrantSpec(
        credit_type="api_calls", amount="1000", on_purchase=True, on_renewal=True
    )
]


def sent(world: World, account: str) -> dict[str, list[dict[str, Any]]]:
    """Every notification about the account, as the bytes a receiver gets, by public type."""
    with world.deps.db.transaction(readonly=True) as session:
        rows = session.scalars(
            select(NotificationOutbox)
            .where(NotificationOutbox.billing_account_id == account)
            .order_by(NotificationOutbox.created_at)
        ).all()
        out: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            body = json.loads(envelope.body(row))
            out.setdefault(body["type"], []).append(body)
    return out


def subscribed(world: World) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """Pro bought and paid ($49.00 a month): the stripe session id and what was sent."""
    world.price("pro", amount=4900, grants=CREDITS)
    token, account = world.token()
    answer = world.buy(token, "pro", reference="your-internal-reference")
    world.pay(answer.session.stripe_checkout_session_id)
    world.settled()
    return answer.session.stripe_checkout_session_id, sent(world, account)


def keys(value: Any) -> list[str]:
    """Every object key, at any depth."""
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in [k, *keys(v)]]
    if isinstance(value, list):
        return [k for v in value for k in keys(v)]
    return []


def test_checkout_completed_carries_invoice_and_payment_ids_in_camel_case(world: World):
    stripe_id, got = subscribed(world)
    (completed,) = got["checkout.session.completed"]
    data = completed["data"]
    session = world.stripe.v1.checkout.sessions.retrieve(stripe_id)
    invoice = world.stripe.v1.invoices.retrieve(str(session.invoice))
    assert data["invoiceId"] == invoice.id and data["invoiceId"].startswith("in_")
    assert data["paymentId"] and data["paymentId"].startswith("pi_")
    assert (data["status"], data["passThroughToken"]) == ("completed", "your-internal-reference")
    assert data["items"][0]["lookupKey"] == "pro" and data["items"][0]["quantity"] == 1
    for body in [b for bodies in got.values() for b in bodies]:
        snake = [k for k in keys(body["data"]) if "_" in k]
        assert snake == [], (body["type"], snake)


def test_a_one_time_checkout_names_its_payment(world: World):
    once = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="10", on_purchase=True)]
    world.price("pack", amount=1500, recurring=False, grants=once)
    token, account = world.token()
    answer = world.buy(token, "pack")
    world.pay(answer.session.stripe_checkout_session_id)
    world.settled()
    (completed,) = sent(world, account)["checkout.session.completed"]
    session = world.stripe.v1.checkout.sessions.retrieve(answer.session.stripe_checkout_session_id)
    assert completed["data"]["paymentId"] == session.payment_intent
    assert "invoiceId" in completed["data"]


def money(body: dict[str, Any]) -> tuple[Any, Any]:
    return body["data"].get("amount"), body["data"].get("currency")


def test_money_is_seed_001s_major_units_and_currency_in_every_notification(world: World):
    """Seed 001's "amount": "49.00", "currency": "USD", in every type that carries money: a
    checkout, its invoice, a payment intent's success and failure (never minor units, never
    under another name)."""
    from tests.payments.support import confirm, create, token

    _, got = subscribed(world)
    assert money(got["checkout.session.completed"][0]) == ("49.00", "USD")
    assert money(got["invoice.paid"][0]) == ("49.00", "USD")
    bearer, account = token(world)
    intent = create(world, bearer)  # seed 003's body: 2999 usd
    try:
        confirm(world, intent.stripe_payment_intent_id, "pm_card_chargeDeclined")
    except Exception:  # the sandbox answers the decline as Stripe does
        pass
    confirm(world, intent.stripe_payment_intent_id)
    world.settled()
    paid = sent(world, account)
    assert money(paid["payment_intent.payment_failed"][0]) == ("29.99", "USD")
    assert money(paid["payment_intent.succeeded"][0]) == ("29.99", "USD")
    for body in [b for bodies in (*got.values(), *paid.values()) for b in bodies]:
        named = [k for k in keys(body["data"]) if k.startswith("amount") and k != "amount"]
        assert named == [], (body["type"], named)


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_every_timestamp_is_utc_rfc_3339_ending_in_z(world: World):
    """Seed 001's "2025-03-03T17:06:07.473879Z", for the envelope and every time in data (a
    subscription's currentPeriodEnd included), never "+00:00"."""
    import datetime as dt

    _, got = subscribed(world)
    (created,) = got["subscription.created"]
    end = created["data"]["currentPeriodEnd"]
    assert end.endswith("Z") and dt.datetime.fromisoformat(end).tzinfo == dt.UTC
    for body in [b for bodies in got.values() for b in bodies]:
        assert body["timestamp"].endswith("Z")
        offsets = [s for s in strings(body["data"]) if s.endswith("+00:00")]
        assert offsets == [], (body["type"], offsets)
