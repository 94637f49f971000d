"""The fulfilment guard of prices bought once (`tollbooth.checkout.once`): two paid checkouts
of one non-stackable one-time price (two tabs opened before the slot rule, or before either
was paid) never make two purchases. The one fulfilled first keeps the purchase; the other's
payment is refunded in full, it grants nothing, and `checkout.duplicate_refunded` records it.
Two fulfilments at once on two servers (PostgreSQL) take turns under the account's lock."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.checkout.support import World, signed_send
from tests.webhooks.guards import (
    completed,
    deliver_on_two_servers,
    failed_events,
    notices,
    refunds_of,
    second_open_session,
)
from tollbooth.db.models import CheckoutSession, Purchase, StripeEvent

NOTICE = "checkout.duplicate_refunded"
GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]

pytestmark = pytest.mark.postgres


def purchases(world: World, account: str) -> list[str]:
    """The checkout ids of the account's purchases."""
    with world.deps.db.transaction(readonly=True) as session:
        return list(
            session.scalars(
                select(Purchase.checkout_session_id).where(Purchase.billing_account_id == account)
            )
        )


def refunded(world: World, stripe_session_id: str) -> bool:
    intent = world.stripe.v1.checkout.sessions.retrieve(stripe_session_id).payment_intent
    charge = world.stripe.v1.payment_intents.retrieve(str(intent)).latest_charge
    raw = json.loads(world.stripe.raw_request("get", f"/v1/charges/{charge}").body)  # type: ignore[attr-defined]
    return bool(raw["refunded"]) and raw["amount_refunded"] == raw["amount"]


def our_id(world: World, stripe_session_id: str) -> str:
    with world.deps.db.transaction(readonly=True) as session:
        return str(
            session.scalars(
                select(CheckoutSession.id).where(
                    CheckoutSession.stripe_checkout_session_id == stripe_session_id
                )
            ).one()
        )


def test_a_checkout_paid_after_the_price_was_bought_is_refunded(pg_world: World):
    world = pg_world
    life = world.price("lifetime", recurring=False, amount=4900, grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "lifetime").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    assert signed_send(world, completed(world, first)) == 200
    assert world.balance(account, "api_calls") == "100"
    world.pay(later)  # paid after the purchase
    assert signed_send(world, completed(world, later)) == 200
    assert purchases(world, account) == [our_id(world, first)]
    assert world.balance(account, "api_calls") == "100"  # nothing granted for the later one
    assert refunded(world, later) and not refunded(world, first)
    [notice] = notices(world, account, NOTICE)
    assert (notice["checkout_session_id"], notice["price_id"]) == (
        our_id(world, later),
        life.price_id,
    )
    [refund] = refunds_of(world, str(notice["refunded_payment_intent"]))
    assert (refund["reason"], refund["id"]) == ("duplicate", notice["refund"])  # Stripe's
    assert signed_send(world, completed(world, later)) == 200  # redelivered: nothing again
    assert (
        len(notices(world, account, NOTICE)) == 1 and world.balance(account, "api_calls") == "100"
    )
    assert purchases(world, account) == [our_id(world, first)]


def test_two_checkouts_paid_before_either_is_fulfilled_on_two_servers_make_one_purchase(
    pg_world: World,
):
    world = pg_world
    world.price("lifetime", recurring=False, amount=4900, grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "lifetime").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    world.pay(later)
    bodies = [completed(world, first), completed(world, later)]
    deliver_on_two_servers(world, bodies, "PRICE_ALREADY_PURCHASED")
    [kept] = purchases(world, account)
    assert world.balance(account, "api_calls") == "100"
    by_ours = {our_id(world, s): s for s in (first, later)}
    [lost] = [s for ours, s in by_ours.items() if ours != kept]
    assert refunded(world, lost) and not refunded(world, by_ours[kept])
    [notice] = notices(world, account, NOTICE)
    assert notice["checkout_session_id"] == our_id(world, lost)
    with world.deps.db.transaction(readonly=True) as session:
        statuses = {e.status for e in session.scalars(select(StripeEvent))}
    assert statuses == {"applied"}


def test_a_free_checkout_of_a_price_held_already_completes_with_nothing_to_refund(
    pg_world: World,
):
    """A no-cost checkout (`no_payment_required`, no payment) of a price bought once that the
    account holds: no second purchase, nothing granted, the company told; its event completes
    (it failed PRICE_ALREADY_PURCHASED on every attempt: there was nothing to refund)."""
    world = pg_world
    world.price("sample", recurring=False, amount=0, grants=GRANTS)
    token, account = world.token()
    first = world.buy(token, "sample").session.stripe_checkout_session_id
    later = second_open_session(world, first)
    world.pay(first)
    world.pay(later)
    assert world.stripe.v1.checkout.sessions.retrieve(later).payment_status == (
        "no_payment_required"
    )
    assert signed_send(world, completed(world, first)) == 200
    assert signed_send(world, completed(world, later)) == 200
    assert failed_events(world) == []
    assert purchases(world, account) == [our_id(world, first)]
    assert world.balance(account, "api_calls") == "100"  # the first one's grant only
    [notice] = notices(world, account, NOTICE)
    assert notice["checkout_session_id"] == our_id(world, later)
    assert (notice["reason"], notice["refund"]) == ("PRICE_ALREADY_PURCHASED", None)
    assert signed_send(world, completed(world, later)) == 200  # redelivered: nothing again
    assert len(notices(world, account, NOTICE)) == 1
    assert purchases(world, account) == [our_id(world, first)]
