"""A duplicate payment whose charge the customer disputed before its webhook arrived: Stripe
refuses to refund a disputed charge (`charge_disputed`), for good. The read phase must not
fail the event on every attempt (the later events of the account would wait behind it):
nothing is granted, no purchase is made, the notification says the refund was refused
(`refund` null, `refund_refused` `charge_disputed`) and the dispute decides where the money
goes. PostgreSQL."""

from __future__ import annotations

import json

import pytest

from tests.checkout.support import World, signed_send
from tests.webhooks.guards import completed, failed_events, notices, refunds_of, second_open_session
from tests.webhooks.test_once_guard import GRANTS, NOTICE, our_id, purchases

pytestmark = pytest.mark.postgres


def _dispute(world: World, stripe_session_id: str) -> str:
    """Open a dispute on the checkout's charge (the sandbox's test helper); its intent."""
    intent = str(world.stripe.v1.checkout.sessions.retrieve(stripe_session_id).payment_intent)
    charge = str(world.stripe.v1.payment_intents.retrieve(intent).latest_charge)
    world.stripe.raw_request("post", f"/v1/test_helpers/charges/{charge}/dispute")
    assert world.stripe.v1.charges.retrieve(charge).disputed is True
    return intent


def test_a_duplicate_checkout_disputed_before_its_webhook_completes_without_a_refund(
    pg_world: World,
):
    world = pg_world
    life = world.price("lifetime", recurring=False, amount=4900, grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "lifetime").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    assert signed_send(world, completed(world, first)) == 200
    world.pay(later)
    intent = _dispute(world, later)
    assert signed_send(world, completed(world, later)) == 200
    assert failed_events(world) == []
    assert purchases(world, account) == [our_id(world, first)]
    assert world.balance(account, "api_calls") == "100"  # nothing granted for the later one
    assert refunds_of(world, intent) == []  # Stripe refused it: the dispute decides
    [notice] = notices(world, account, NOTICE)
    assert (notice["price_id"], notice["refund"]) == (life.price_id, None)
    assert notice["refund_refused"] == "charge_disputed"
    assert signed_send(world, completed(world, later)) == 200  # redelivered: nothing again
    assert len(notices(world, account, NOTICE)) == 1
    assert purchases(world, account) == [our_id(world, first)]


def test_a_duplicate_payment_intent_disputed_before_its_webhook_completes_without_a_refund(
    pg_world: World,
):
    from tests.payments.support import confirm, get, token
    from tests.webhooks.test_once_guard_intents import BOTH_SCOPES, intent_for, lifetime, succeeded

    world = pg_world
    price_id = lifetime(world)
    bearer, account = token(world, BOTH_SCOPES)
    intent = intent_for(world, bearer, price_id)  # opened before the checkout was paid
    stripe_cs = world.buy(bearer, "lifetime").session.stripe_checkout_session_id
    world.pay(stripe_cs)
    assert signed_send(world, completed(world, stripe_cs)) == 200
    confirm(world, intent.stripe_payment_intent_id)
    charge = str(
        world.stripe.v1.payment_intents.retrieve(intent.stripe_payment_intent_id).latest_charge
    )
    world.stripe.raw_request("post", f"/v1/test_helpers/charges/{charge}/dispute")
    assert signed_send(world, succeeded(world, intent.stripe_payment_intent_id)) == 200
    assert failed_events(world) == []
    assert world.balance(account, "api_calls") == "100"  # the checkout's grant only
    assert refunds_of(world, intent.stripe_payment_intent_id) == []
    lost = get(world, bearer, intent.payment_intent_id)
    assert lost.purchase_id == "" and lost.duplicate_of_purchase_id and lost.refund_id == ""
    [notice] = notices(world, account, "payment_intent.duplicate_refunded")
    assert (notice["refund"], notice["refund_refused"]) == (None, "charge_disputed")
    assert signed_send(world, succeeded(world, intent.stripe_payment_intent_id)) == 200
    assert len(notices(world, account, "payment_intent.duplicate_refunded")) == 1


def test_a_renewal_whose_grant_no_longer_fits_disputed_before_its_event_completes(
    pg_world: World,
):
    from tests.checkout.support import events_of
    from tests.webhooks.test_grant_overflow_periodic import HUGE, every, paid_by, subscribed

    world = pg_world
    world.price("pro", grants=every(HUGE))
    _, account, sub_id = subscribed(world, "pro")
    world.advance(31)  # the renewal, paid at the provider: another HUGE would not fit
    renewal = str(world.stripe.v1.subscriptions.retrieve(sub_id).latest_invoice)
    intent = paid_by(world, renewal)
    charge = str(world.stripe.v1.payment_intents.retrieve(intent).latest_charge)
    world.stripe.raw_request("post", f"/v1/test_helpers/charges/{charge}/dispute")
    [paid] = events_of(world, "invoice.paid", renewal)
    assert signed_send(world, json.dumps(paid).encode()) == 200
    assert failed_events(world) == []
    assert world.balance(account, "tokens") == HUGE  # not granted
    assert refunds_of(world, intent) == []
    [notice] = notices(world, account, "invoice.renewal_refunded")
    assert (notice["refunded_payment_intent"], notice["refund"]) == (intent, None)
    assert notice["refund_refused"] == "charge_disputed"
    assert signed_send(world, json.dumps(paid).encode()) == 200  # replayed: nothing more
    assert len(notices(world, account, "invoice.renewal_refunded")) == 1
