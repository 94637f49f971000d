"""A price stored before the provider's currency rules (tollbooth.currencies) were applied may
be in a currency the provider holds no minor unit for (IQD, LYD, CLF, UYW: CURRENCY_INVALID
at CreatePrice now) or be an ISK amount that is not whole kronur. Checkout and payment intents
refuse it with a 400 naming the price before an intent is recorded or Stripe is called."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from sqlalchemy import update

from billing.v1 import catalog_pb2, checkout_pb2
from tests.checkout.support import World
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_field, error_reason
from tests.payments.support import create, one_time_pack, rpc_error, token
from tollbooth.db.models import CheckoutSession, Price
from tollbooth.db.payment_intents import PaymentIntent


def _stored(world: World, price_id: str, currency: str, amount: int) -> None:
    with world.deps.db.transaction() as session:  # as stored before the rule
        session.execute(
            update(Price).where(Price.id == price_id).values(currency=currency, unit_amount=amount)
        )


def test_a_stored_price_in_a_currency_the_provider_lacks_is_400_at_checkout(
    world: World,
) -> None:
    legacy = world.price("legacy-iqd", recurring=False, amount=1500).price_id
    _stored(world, legacy, "iqd", 1500)
    token_, account = world.token()
    err = rpc_error(
        lambda: world.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                line_items=[checkout_pb2.CheckoutLineItem(price=legacy, quantity=1)],
                success_url="https://app.example/ok",
                mode="payment",
            ),
            metadata=bearer_md(token_),
            timeout=30,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert error_reason(err) == "CHECKOUT_AMOUNT_INVALID", err.details()
    assert error_field(err) == "line_items[0]"
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 0
    assert world.stripe.v1.checkout.sessions.list(params={"limit": 10}).data == []


def test_a_stored_isk_price_of_part_kronur_is_400_at_checkout(world: World) -> None:
    legacy = world.price("legacy-isk", recurring=True, amount=1500).price_id
    _stored(world, legacy, "isk", 150)
    token_, account = world.token()
    err = rpc_error(
        lambda: world.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                line_items=[checkout_pb2.CheckoutLineItem(price=legacy, quantity=1)],
                success_url="https://app.example/ok",
            ),
            metadata=bearer_md(token_),
            timeout=30,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert error_reason(err) == "CHECKOUT_AMOUNT_INVALID", err.details()
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 0


def test_a_stored_price_in_a_currency_the_provider_lacks_is_400_for_a_payment(
    world: World,
) -> None:
    legacy = one_time_pack(world, "pack-iqd-legacy", amount=1500)
    _stored(world, legacy, "iqd", 1500)
    isk = one_time_pack(world, "pack-isk-legacy", amount=1500)
    _stored(world, isk, "isk", 150)
    bearer, _ = token(world)
    for price_id in (legacy, isk):
        err = rpc_error(
            lambda p=price_id: create(world, bearer, catalog_price_id=p, amount=0, currency="")  # type: ignore[misc]
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert error_reason(err) in ("PAYMENT_AMOUNT_INVALID", "CURRENCY_INVALID"), err.details()
    assert world.count(PaymentIntent) == 0
    assert world.stripe.v1.payment_intents.list(params={"limit": 10}).data == []


def test_a_payment_for_a_stored_refused_price_names_catalog_price_id(world: World) -> None:
    """A payment intent naming only a catalog price (no amount, no currency) whose stored
    currency the provider lacks (IQD), or whose stored amount it refuses (part kronur, under
    the minimum charge), was refused naming `currency` or `amount`, which the caller never
    sent: the refusal names `catalog_price_id`, the field that brought them. A currency or
    amount the caller did send is still named as sent."""
    iqd = one_time_pack(world, "pack-iqd-named", amount=1500)
    _stored(world, iqd, "iqd", 1500)
    isk = one_time_pack(world, "pack-isk-named", amount=1500)
    _stored(world, isk, "isk", 150)
    small = one_time_pack(world, "pack-small-named", amount=1500)
    _stored(world, small, "usd", 30)
    bearer, _ = token(world)
    for price_id, reason in (
        (iqd, "CURRENCY_INVALID"),
        (isk, "PAYMENT_AMOUNT_INVALID"),
        (small, "PAYMENT_AMOUNT_INVALID"),
    ):
        err = rpc_error(
            lambda p=price_id: create(world, bearer, catalog_price_id=p, amount=0, currency="")  # type: ignore[misc]
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert (error_reason(err), error_field(err)) == (reason, "catalog_price_id"), price_id
    sent = rpc_error(lambda: create(world, bearer, amount=0, currency="iqd"))
    assert (error_reason(sent), error_field(sent)) == ("CURRENCY_INVALID", "currency")
    assert world.count(PaymentIntent) == 0


def test_a_stored_price_in_a_currency_the_provider_lacks_can_still_be_renamed(
    world: World,
) -> None:
    """UpdatePrice never changes a currency: an IQD price stored before CreatePrice refused
    IQD takes a new lookup key (as one with a refused amount does) rather than CURRENCY_INVALID."""
    legacy = world.price("legacy-iqd-rename", recurring=False, amount=1500).price_id
    _stored(world, legacy, "iqd", 1500)
    updated = world.catalog.UpdatePrice(
        catalog_pb2.UpdatePriceRequest(
            price=catalog_pb2.Price(price_id=legacy, lookup_key="legacy-iqd-renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["lookup_key"]),
            request_id="rename-legacy-iqd",
        ),
        metadata=SERVICE_MD,
        timeout=30,
    )
    assert (updated.lookup_key, updated.currency) == ("legacy-iqd-renamed", "iqd")


def test_a_setup_checkout_is_in_the_currency_asked_for(world: World) -> None:
    """Seed 001's `currency` on a setup checkout (no prices to compare it with) is the
    currency Stripe's session is in (it picks the payment methods by it); without one, the
    catalog's most common currency, never one Stripe lacks (an IQD price stored before
    CreatePrice refused IQD)."""
    for n in range(2):
        legacy = world.price(f"legacy-iqd-setup-{n}", recurring=False, amount=1500).price_id
        _stored(world, legacy, "iqd", 1500)
    world.price("setup-usd", recurring=False, amount=1500)
    token_, _ = world.token()

    def setup(currency: str, request_id: str) -> checkout_pb2.CheckoutSession:
        return world.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                success_url="https://app.example/ok",
                mode="setup",
                currency=currency,
                request_id=request_id,
            ),
            metadata=bearer_md(token_),
            timeout=30,
        ).session

    asked = setup("EUR", "setup-eur")
    assert asked.currency == "eur"
    remote = world.stripe.v1.checkout.sessions.retrieve(asked.stripe_checkout_session_id)
    assert remote.currency == "eur"
    default = setup("", "setup-default")
    assert default.currency == "usd"
