"""A non-stackable one-time price is bought once per account (until a full refund of it): the
catalog's hint says CURRENT, a checkout or payment intent buying it again is refused with
FAILED_PRECONDITION `PRICE_ALREADY_PURCHASED` and creates nothing, and while one checkout of
it is open a second tab gets that one back or expires it (one payable session). A stackable
one-time price (a credit pack) is bought as often as wanted. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import select, update

from billing.v1 import catalog_pb2, checkout_pb2, payment_pb2
from tests.checkout.support import World, events_of, signed_send, start_world, wait_for
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason
from tests.payments.support import stub as payments
from tollbooth.db.models import BillingAccount, CheckoutSession, Purchase

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]
REASON = "PRICE_ALREADY_PURCHASED"


def refused(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        call()
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.value.details()
    assert error_reason(exc.value) == REASON, exc.value.details()
    return exc.value


def hints(world: World, token: str, product_id: str) -> dict[str, int]:
    listed = world.catalog.ListPrices(
        catalog_pb2.ListPricesRequest(product_id=product_id), metadata=bearer_md(token)
    )
    return {p.lookup_key: p.hint for p in listed.prices}


def checkouts(world: World, account: str) -> int:
    return world.count(CheckoutSession, CheckoutSession.billing_account_id == account)


def open_at_provider(world: World, account: str) -> list[str]:
    with world.deps.db.transaction(readonly=True) as session:
        ids = session.scalars(
            select(CheckoutSession.stripe_checkout_session_id).where(
                CheckoutSession.billing_account_id == account
            )
        ).all()
    return sorted(
        i for i in ids if i and world.stripe.v1.checkout.sessions.retrieve(i).status == "open"
    )


def test_a_price_held_is_current_and_not_sold_again_until_refunded(world: World):
    life = world.price("lifetime", recurring=False, amount=4900, grants=GRANTS)
    world.price("pack", recurring=False, amount=500, stackable=True, product_id=life.product_id)
    token, account = world.token()
    assert set(hints(world, token, life.product_id).values()) == {catalog_pb2.PURCHASE_HINT_BUY}
    first = world.buy(token, "lifetime").session.stripe_checkout_session_id
    world.pay(first)
    world.settled()
    wait_for(lambda: world.balance(account, "api_calls") == "100", what="the purchase")
    assert hints(world, token, life.product_id) == {
        "lifetime": catalog_pb2.PURCHASE_HINT_CURRENT,
        "pack": catalog_pb2.PURCHASE_HINT_BUY,
    }
    before = checkouts(world, account)
    sessions_before = len(world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data)
    err = refused(lambda: world.buy(token, "lifetime", request_id="again"))
    assert life.price_id in err.details()
    # By id, or beside another item: refused all the same.
    refused(
        lambda: world.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                items=[
                    checkout_pb2.CheckoutItem(lookup_key="pack"),
                    checkout_pb2.CheckoutItem(catalog_price_id=life.price_id),
                ],
                success_url="https://app.example/ok",
            ),
            metadata=bearer_md(token),
            timeout=30,
        )
    )
    # Nothing is written for a refused checkout: not even the e-mail it would fill in.
    with world.deps.db.transaction() as session:
        session.execute(
            update(BillingAccount).where(BillingAccount.id == account).values(email=None)
        )
    refused(
        lambda: world.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                items=[checkout_pb2.CheckoutItem(lookup_key="lifetime")],
                success_url="https://app.example/ok",
                customer_email="new@example.com",
            ),
            metadata=bearer_md(token),
            timeout=30,
        )
    )
    with world.deps.db.transaction(readonly=True) as session:
        assert session.get(BillingAccount, account).email is None  # type: ignore[union-attr]
    # A payment intent buying it is refused too.
    refused(
        lambda: payments(world).CreatePaymentIntent(
            payment_pb2.CreatePaymentIntentRequest(account=account, catalog_price_id=life.price_id),
            metadata=SERVICE_MD,
            timeout=30,
        )
    )
    assert checkouts(world, account) == before  # nothing created, here or at the provider
    assert len(world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data) == (
        sessions_before
    )
    # The stackable pack sells twice; another account buys the lifetime price.
    for _ in range(2):
        world.pay(
            world.buy(token, "pack", reference=f"pack-{_}").session.stripe_checkout_session_id
        )
    other, _ = world.token()
    assert world.buy(other, "lifetime").session.url
    # A full refund ends the purchase: the price is for sale to the account again.
    intent = str(world.stripe.v1.checkout.sessions.retrieve(first).payment_intent)
    world.stripe.v1.refunds.create(params={"payment_intent": intent})
    world.settled()
    wait_for(
        lambda: hints(world, token, life.product_id)["lifetime"] == catalog_pb2.PURCHASE_HINT_BUY,
        what="the refund to end the purchase",
    )
    assert world.buy(token, "lifetime").session.url


def test_two_tabs_of_a_price_bought_once_leave_one_payable_session(world: World):
    world.price("lifetime", recurring=False, amount=4900)
    token, account = world.token()
    a = world.buy(token, "lifetime", reference="tab-a").session
    same = world.buy(token, "lifetime", reference="tab-a").session  # the same thing: it again
    assert same.checkout_session_id == a.checkout_session_id
    b = world.buy(token, "lifetime", reference="tab-b").session  # else: the first expires
    assert b.checkout_session_id != a.checkout_session_id
    assert open_at_provider(world, account) == [b.stripe_checkout_session_id]
    assert world.stripe.v1.checkout.sessions.retrieve(a.stripe_checkout_session_id).status == (
        "expired"
    )


@pytest.fixture
def quiet_world(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """A world whose sandbox delivers no events (the test sends them)."""
    w = start_world(database_url, tmp_path, deliver=False)
    yield w
    w.stop()


def test_a_tab_opened_after_the_other_was_paid_is_refused(quiet_world: World):
    """The open checkout is paid, its event not processed yet: a second tab asking for other
    parameters finds it complete at the provider when it tries to expire it, and is refused
    (not given a second payable session); once the event is processed the hint is CURRENT."""
    world = quiet_world
    life = world.price("lifetime", recurring=False, amount=4900, grants=GRANTS)
    token, account = world.token()
    paid = world.buy(token, "lifetime", reference="tab-a").session.stripe_checkout_session_id
    world.pay(paid)
    refused(lambda: world.buy(token, "lifetime", reference="tab-b"))
    assert open_at_provider(world, account) == []
    assert checkouts(world, account) == 1
    body = events_of(world, "checkout.session.completed", paid)[0]
    assert signed_send(world, json.dumps(body).encode()) == 200
    assert world.count(Purchase, Purchase.billing_account_id == account) == 1
    assert world.balance(account, "api_calls") == "100"
    assert hints(world, token, life.product_id)["lifetime"] == catalog_pb2.PURCHASE_HINT_CURRENT
