"""Stripe's minimum charge (tollbooth.currencies.MIN_CHARGE: 50 usd cents, 30 gbp pence...)
applies to a payment-mode checkout's total, as it does to a payment intent: under it Stripe
refuses the session, so CreateCheckoutSession refuses it first (400 CHECKOUT_AMOUNT_INVALID
naming the list, nothing recorded, Stripe not called). Two of a 30-cent price make 60 and pass;
a subscription's small amount is Stripe's to carry over and passes too."""

from __future__ import annotations

import grpc

from billing.v1 import checkout_pb2
from tests.checkout.support import World
from tests.conftest import bearer_md
from tests.helpers import error_field, error_reason
from tests.payments.support import rpc_error
from tollbooth.db.models import CheckoutSession


def _checkout(world: World, token: str, price_id: str, quantity: int, mode: str) -> object:
    return world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            line_items=[checkout_pb2.CheckoutLineItem(price=price_id, quantity=quantity)],
            success_url="https://app.example/ok",
            mode=mode,
        ),
        metadata=bearer_md(token),
        timeout=30,
    )


def test_a_payment_checkout_under_the_minimum_charge_is_400_and_records_nothing(
    world: World,
) -> None:
    small = world.price("sticker", recurring=False, amount=30, group="").price_id
    token, account = world.token()
    err = rpc_error(lambda: _checkout(world, token, small, 1, "payment"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert error_reason(err) == "CHECKOUT_AMOUNT_INVALID", err.details()
    assert error_field(err) == "line_items"
    assert "50" in err.details()
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 0
    assert world.stripe.v1.checkout.sessions.list(params={"limit": 10}).data == []

    made = _checkout(world, token, small, 2, "payment")  # 60 cents: over the minimum
    assert made.url  # type: ignore[attr-defined]


def test_a_subscription_of_a_small_amount_is_not_held_to_the_minimum(world: World) -> None:
    small = world.price("tiny-plan", recurring=True, amount=30).price_id
    token, _ = world.token()
    made = _checkout(world, token, small, 1, "subscription")
    assert made.url  # type: ignore[attr-defined]
