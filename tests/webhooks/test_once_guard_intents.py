"""The guard of prices bought once, for PaymentService's payment intents
(`tollbooth.payments.guard`): two payment intents of one non-stackable one-time price, or a
payment intent and a checkout of it, never make two purchases. (Creation gives a second tab
the open intent itself, tests/payments/test_one_open_intent.py; two payable intents of one
price are made here as that rule's absence would leave them: intents recorded before it, or
any hole in it. The guard is the last line.) The payment recorded first keeps the purchase;
a `payment_intent.succeeded` of an intent buying a price the account holds already is
refunded in full at the provider, grants nothing, its intent shows the refund and the purchase
it duplicated, and `payment_intent.duplicate_refunded` records it. Redeliveries change
nothing twice; two successes at once on two servers (PostgreSQL) take turns under the
account's lock."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2, payment_pb2
from tests.checkout.support import World, events_of, signed_send
from tests.payments.support import confirm, create, get, purchases, token
from tests.webhooks.guards import completed, deliver_on_two_servers, notices, refunds_of
from tollbooth.db.models import CreditGrant, StripeEvent
from tollbooth.payments import repository as payments_repository

NOTICE = "payment_intent.duplicate_refunded"
GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]
BOTH_SCOPES = ["payments", "checkout", "billing:read", "credits:read"]

pytestmark = pytest.mark.postgres


def lifetime(world: World) -> str:
    return world.price("lifetime", recurring=False, amount=4900, grants=GRANTS).price_id


def intent_for(world: World, bearer: str, price_id: str) -> payment_pb2.PaymentIntent:
    return create(world, bearer, amount=0, currency="", catalog_price_id=price_id)


def two_payable(
    world: World, bearer: str, price_id: str, monkeypatch: pytest.MonkeyPatch
) -> list[payment_pb2.PaymentIntent]:
    """Two payable intents of one price bought once: the second created with creation's
    one-open-intent rule switched off (it would answer the first)."""
    first = intent_for(world, bearer, price_id)
    with monkeypatch.context() as patched:
        patched.setattr(payments_repository, "open_intent_for_price", lambda *a, **k: None)
        second = intent_for(world, bearer, price_id)
    assert second.payment_intent_id != first.payment_intent_id
    return [first, second]


def succeeded(world: World, stripe_pi: str) -> bytes:
    return json.dumps(events_of(world, "payment_intent.succeeded", stripe_pi)[0]).encode()


def fully_refunded(world: World, stripe_pi: str) -> bool:
    charge = world.stripe.v1.payment_intents.retrieve(stripe_pi).latest_charge
    raw = json.loads(world.stripe.raw_request("get", f"/v1/charges/{charge}").body)  # type: ignore[attr-defined]
    return bool(raw["refunded"]) and raw["amount_refunded"] == raw["amount"]


def grants(world: World, account: str) -> int:
    return world.count(CreditGrant, CreditGrant.billing_account_id == account)


def test_two_intents_paying_one_price_bought_once_make_one_purchase_and_refund_the_second(
    pg_world: World, monkeypatch: pytest.MonkeyPatch
):
    world = pg_world
    price_id = lifetime(world)
    bearer, account = token(world)
    first, second = two_payable(world, bearer, price_id, monkeypatch)
    confirm(world, first.stripe_payment_intent_id)
    confirm(world, second.stripe_payment_intent_id)
    assert signed_send(world, succeeded(world, first.stripe_payment_intent_id)) == 200
    assert signed_send(world, succeeded(world, second.stripe_payment_intent_id)) == 200

    [bought] = purchases(world, account)
    assert bought.payment_intent_id == first.payment_intent_id
    assert world.balance(account, "api_calls") == "100"
    assert grants(world, account) == 1
    assert fully_refunded(world, second.stripe_payment_intent_id)
    assert not fully_refunded(world, first.stripe_payment_intent_id)
    [refund] = refunds_of(world, second.stripe_payment_intent_id)
    assert refund["reason"] == "duplicate"

    kept = get(world, bearer, first.payment_intent_id)
    assert kept.purchase_id == bought.id and not kept.duplicate_of_purchase_id
    lost = get(world, bearer, second.payment_intent_id)
    assert lost.purchase_id == ""
    assert lost.duplicate_of_purchase_id == bought.id
    assert lost.refund_id == refund["id"] and lost.refund_time.seconds > 0

    [notice] = notices(world, account, NOTICE)
    assert notice == {
        "payment_intent_id": second.payment_intent_id,
        "stripe_payment_intent_id": second.stripe_payment_intent_id,
        "price_id": price_id,
        "duplicate_of_purchase_id": bought.id,
        "refund": refund["id"],
        "amount": 4900,
        "currency": "usd",
        "reason": "PRICE_ALREADY_PURCHASED",
        "credit_type": None,
        "refund_refused": None,  # Stripe refunded it
    }
    assert world.notifications(account).count("payment_intent.succeeded") == 1

    # Redelivered, a twin, and the provider's refund events: nothing changes twice.
    body = json.loads(succeeded(world, second.stripe_payment_intent_id))
    twin = json.dumps({**body, "id": body["id"] + "_twin"}).encode()
    for again in (succeeded(world, second.stripe_payment_intent_id), twin):
        assert signed_send(world, again) == 200
    for evt in events_of(world, "charge.refunded", str(refund["charge"])):
        assert signed_send(world, json.dumps(evt).encode()) == 200
    assert len(refunds_of(world, second.stripe_payment_intent_id)) == 1
    assert [p.id for p in purchases(world, account)] == [bought.id]
    assert world.balance(account, "api_calls") == "100"
    assert len(notices(world, account, NOTICE)) == 1
    # The kept purchase is not touched by the duplicate's refund.
    assert get(world, bearer, first.payment_intent_id).purchase_id == bought.id
    assert [p.refunded_at for p in purchases(world, account)] == [None]


def test_a_payment_intent_paid_after_a_checkout_bought_the_price_is_refunded(pg_world: World):
    world = pg_world
    price_id = lifetime(world)
    bearer, account = token(world, BOTH_SCOPES)
    intent = intent_for(world, bearer, price_id)  # opened before the checkout was paid
    stripe_cs = world.buy(bearer, "lifetime").session.stripe_checkout_session_id
    world.pay(stripe_cs)
    assert signed_send(world, completed(world, stripe_cs)) == 200
    [bought] = purchases(world, account)
    assert bought.checkout_session_id and world.balance(account, "api_calls") == "100"

    confirm(world, intent.stripe_payment_intent_id)
    assert signed_send(world, succeeded(world, intent.stripe_payment_intent_id)) == 200
    assert [p.id for p in purchases(world, account)] == [bought.id]
    assert world.balance(account, "api_calls") == "100"
    assert fully_refunded(world, intent.stripe_payment_intent_id)
    got = get(world, bearer, intent.payment_intent_id)
    assert (got.purchase_id, got.duplicate_of_purchase_id) == ("", bought.id)
    [notice] = notices(world, account, NOTICE)
    assert notice["duplicate_of_purchase_id"] == bought.id


def test_a_checkout_paid_after_a_payment_intent_bought_the_price_is_refunded(pg_world: World):
    """The other order: the checkout side's guard (`checkout/once.py`) sees the intent's
    purchase."""
    world = pg_world
    price_id = lifetime(world)
    bearer, account = token(world, BOTH_SCOPES)
    stripe_cs = world.buy(bearer, "lifetime").session.stripe_checkout_session_id
    intent = intent_for(world, bearer, price_id)
    confirm(world, intent.stripe_payment_intent_id)
    assert signed_send(world, succeeded(world, intent.stripe_payment_intent_id)) == 200
    world.pay(stripe_cs)
    assert signed_send(world, completed(world, stripe_cs)) == 200
    [bought] = purchases(world, account)
    assert bought.payment_intent_id == intent.payment_intent_id
    assert world.balance(account, "api_calls") == "100"
    assert not fully_refunded(world, intent.stripe_payment_intent_id)
    assert len(notices(world, account, "checkout.duplicate_refunded")) == 1


def test_two_payment_intents_succeeding_at_once_on_two_servers_make_one_purchase(
    pg_world: World, monkeypatch: pytest.MonkeyPatch
):
    world = pg_world
    price_id = lifetime(world)
    bearer, account = token(world)
    intents = two_payable(world, bearer, price_id, monkeypatch)
    for intent in intents:
        confirm(world, intent.stripe_payment_intent_id)
    bodies = [succeeded(world, i.stripe_payment_intent_id) for i in intents]
    deliver_on_two_servers(world, bodies, "PRICE_ALREADY_PURCHASED")
    [bought] = purchases(world, account)
    assert world.balance(account, "api_calls") == "100" and grants(world, account) == 1
    [kept] = [i for i in intents if i.payment_intent_id == bought.payment_intent_id]
    [lost] = [i for i in intents if i is not kept]
    assert fully_refunded(world, lost.stripe_payment_intent_id)
    assert not fully_refunded(world, kept.stripe_payment_intent_id)
    [notice] = notices(world, account, NOTICE)
    assert notice["payment_intent_id"] == lost.payment_intent_id
    with world.deps.db.transaction(readonly=True) as session:
        statuses = {e.status for e in session.scalars(select(StripeEvent))}
    assert statuses == {"applied"}


def test_a_stackable_one_time_price_paid_twice_is_two_purchases(pg_world: World):
    world = pg_world
    price_id = world.price(
        "pack", recurring=False, amount=900, stackable=True, grants=GRANTS
    ).price_id
    bearer, account = token(world)
    intents = [intent_for(world, bearer, price_id) for _ in range(2)]
    for intent in intents:
        confirm(world, intent.stripe_payment_intent_id)
        assert signed_send(world, succeeded(world, intent.stripe_payment_intent_id)) == 200
    assert len(purchases(world, account)) == 2
    assert world.balance(account, "api_calls") == "200"
    assert notices(world, account, NOTICE) == []
