"""A plan's grants expire counting from its billing period's start (`grant_for_price`'s
anchor), but the event that grants them may be applied after that expiry has passed: the
webhook delivered late, retried by the inbox, or a renewal invoice paid days after its period
began (a card fixed in the portal). The ledger refuses a grant that expires in the past, so
such an event used to fail on every attempt: the plan paid, its purchase never fulfilled,
nothing granted. It completes now, its grant expiring the same length after it is applied."""

from __future__ import annotations

import datetime as dt
import json
import time

from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World, events_of, signed_send
from tollbooth.db.models import CheckoutSession, CreditGrant, StripeEvent

LIFETIME = 1  # seconds: the period's grant has expired by the time its event is applied


def test_a_plans_grant_whose_anchored_expiry_passed_before_its_event_is_still_granted(
    quiet: World,
) -> None:
    quiet.price(
        "pro",
        grants=[
            catalog_pb2.CreditGrantSpec(
                credit_type="api_calls",
                amount="100",
                on_purchase=True,
                expires_after_seconds=LIFETIME,
            )
        ],
    )
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    sub = quiet.stripe.v1.subscriptions.retrieve(
        str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    )
    start = dt.datetime.fromtimestamp(sub["items"]["data"][0]["current_period_start"], dt.UTC)
    # Delivered late: the period's anchored expiry is in the past when it is applied.
    while dt.datetime.now(dt.UTC) <= start + dt.timedelta(seconds=LIFETIME):
        time.sleep(0.2)
    event = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    sent_at = dt.datetime.now(dt.UTC)
    assert signed_send(quiet, json.dumps(event).encode()) == 200
    applied_at = dt.datetime.now(dt.UTC)

    with quiet.deps.db.transaction(readonly=True) as session:
        stored = session.get(StripeEvent, event["id"])
        assert stored is not None
        assert (stored.status, stored.last_error) == ("applied", None)
        row = session.scalars(
            select(CheckoutSession).where(CheckoutSession.stripe_checkout_session_id == stripe_id)
        ).one()
        assert row.fulfilled_at is not None
        grant = session.scalars(
            select(CreditGrant).where(CreditGrant.billing_account_id == account)
        ).one()
        assert grant.amount == 100
        # LIFETIME counted from when it was granted, not from the period's start.
        assert grant.expire_at is not None
        lifetime = dt.timedelta(seconds=LIFETIME)
        assert sent_at + lifetime <= grant.expire_at <= applied_at + lifetime
        assert grant.expire_at > grant.created_at


def test_a_renewal_paid_after_its_grants_anchored_expiry_is_still_granted(quiet: World) -> None:
    """A renewal invoice paid days into its period (a card fixed in the portal): its grant,
    anchored at the line's period start, has expired by then; granted for its lifetime from
    now instead of failing the event on every attempt."""
    day = 86_400
    quiet.price(
        "pro",
        grants=[
            catalog_pb2.CreditGrantSpec(
                credit_type="api_calls",
                amount="100",
                on_purchase=True,
                on_renewal=True,
                expires_after_seconds=day,
            )
        ],
    )
    token, account = quiet.token()
    stripe_id = quiet.buy(token, "pro").session.stripe_checkout_session_id
    quiet.pay(stripe_id)
    event = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    assert signed_send(quiet, json.dumps(event).encode()) == 200
    sub_id = str(quiet.stripe.v1.checkout.sessions.retrieve(stripe_id).subscription)
    quiet.advance(31)  # the renewal, paid
    invoice_id = str(quiet.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    # As the provider has it when paid three days into the period (its line's period start).
    started = int(time.time()) - 3 * day
    with quiet.sandbox.app.state.store.tx() as store:
        invoice = store.get(invoice_id)
        assert invoice is not None and invoice["billing_reason"] == "subscription_cycle"
        for line in invoice["lines"]["data"]:
            line["period"]["start"] = started
        store.put(invoice)
    paid = events_of(quiet, "invoice.paid", invoice_id)[-1]
    sent_at = dt.datetime.now(dt.UTC)
    assert signed_send(quiet, json.dumps(paid).encode()) == 200
    applied_at = dt.datetime.now(dt.UTC)

    with quiet.deps.db.transaction(readonly=True) as session:
        stored = session.get(StripeEvent, paid["id"])
        assert stored is not None
        assert (stored.status, stored.last_error) == ("applied", None)
        renewal = session.scalars(
            select(CreditGrant).where(
                CreditGrant.billing_account_id == account,
                CreditGrant.request_id.startswith(f"invoice:{invoice_id}:"),
            )
        ).one()
        lifetime = dt.timedelta(seconds=day)
        assert renewal.amount == 100
        assert renewal.expire_at is not None
        assert sent_at + lifetime <= renewal.expire_at <= applied_at + lifetime
