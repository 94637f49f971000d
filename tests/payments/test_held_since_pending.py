"""A payment intent of a price bought once, left `pending` by a failed provider call, and the
price bought meanwhile (a checkout in another tab): its retry with the same request_id is
refused PRICE_ALREADY_PURCHASED and the pending intent is withdrawn, nothing created at the
provider, as a checkout's retry is (`checkout.intents._plan`). It used to complete the intent
at the provider and hand out its client secret: a second payment of a price the account
holds, taken and then refunded (the fulfilment guard's last line)."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
import sqlalchemy as sa

from billing.v1 import catalog_pb2
from tests.checkout.support import World, wait_for
from tests.helpers import error_reason
from tests.payments.support import backdate, create, purchases, token
from tollbooth import app
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.payments import intents

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]
SCOPES = ["payments", "checkout", "billing:read", "credits:read"]


def test_a_pending_intent_of_a_price_bought_since_is_refused_on_retry(world: World) -> None:
    price = world.price("lifetime", recurring=False, amount=4900, grants=GRANTS).price_id
    bearer, account = token(world, SCOPES)
    # The provider is down when the intent is sent: it stays pending, nothing at the provider.
    world.sandbox.stalls.add("POST", "/v1/payment_intents", seconds=0, status=500)
    with pytest.raises(grpc.RpcError) as down:
        create(world, bearer, amount=0, currency="", catalog_price_id=price, request_id="tab-1")
    assert error_reason(down.value) == "PROVIDER_UNAVAILABLE"
    assert world.stripe.v1.payment_intents.list(params={"limit": 100}).data == []

    # Another tab buys the price through a checkout, paid and fulfilled.
    stripe_id = world.buy(bearer, "lifetime").session.stripe_checkout_session_id
    world.pay(stripe_id)
    wait_for(lambda: len(purchases(world, account)) == 1, what="the checkout's purchase")

    with pytest.raises(grpc.RpcError) as again:
        create(world, bearer, amount=0, currency="", catalog_price_id=price, request_id="tab-1")
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(again.value) == "PRICE_ALREADY_PURCHASED"
    listed = world.stripe.v1.payment_intents.list(params={"limit": 100}).data
    ours = [pi.id for pi in listed if "tollbooth_payment_intent_id" in pi.metadata.to_dict()]
    assert ours == []  # the checkout's own payment intent carries no metadata of ours
    with world.deps.db.transaction(readonly=True) as session:
        left = session.scalars(
            sa.select(PaymentIntent.status).where(PaymentIntent.billing_account_id == account)
        ).all()
    assert list(left) == []  # withdrawn: the sweeper never sends it either
    assert len(purchases(world, account)) == 1


def test_an_intent_the_sweep_completed_of_a_price_bought_since_is_refused_on_retry(
    world: World,
) -> None:
    """The failed intent completed at the provider by `tollbooth reconcile` (its client never
    had its secret), the price then bought by a checkout: the client's retry is refused
    instead of being handed that intent to pay."""
    price = world.price("lifetime", recurring=False, amount=4900, grants=GRANTS).price_id
    bearer, account = token(world, SCOPES)
    world.sandbox.stalls.add("POST", "/v1/payment_intents", seconds=0, status=500)
    with pytest.raises(grpc.RpcError):
        create(world, bearer, amount=0, currency="", catalog_price_id=price, request_id="t1")
    with world.deps.db.transaction(readonly=True) as session:
        [ours] = session.scalars(
            sa.select(PaymentIntent.id).where(PaymentIntent.billing_account_id == account)
        ).all()
    backdate(world, ours, intents.STALE_AFTER + dt.timedelta(minutes=1))
    report = app.reconcile(world.settings)
    assert report.failed == [] and len(report.changed) == 1
    stripe_id = world.buy(bearer, "lifetime").session.stripe_checkout_session_id
    world.pay(stripe_id)
    wait_for(lambda: len(purchases(world, account)) == 1, what="the checkout's purchase")

    with pytest.raises(grpc.RpcError) as again:
        create(world, bearer, amount=0, currency="", catalog_price_id=price, request_id="t1")
    assert error_reason(again.value) == "PRICE_ALREADY_PURCHASED"
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(PaymentIntent, ours)
        assert row is not None and row.stripe_payment_intent_id  # at the provider: kept
