"""A price bought once is sold by one open payment intent per account: a second tab (another
request_id, or none) is answered the intent that can still be paid, so the provider takes the
payment once; a canceled intent frees the price, a paid one makes it refused; a stackable
price gets an intent per request. Concurrent creations of an account on PostgreSQL take
turns on its row."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import stripe

from billing.v1 import payment_pb2, payment_pb2_grpc
from tests.checkout.support import World, events_of, signed_send, start_world
from tests.conftest import bearer_md
from tests.helpers import error_reason
from tests.payments.support import (
    confirm,
    create,
    get,
    one_time_pack,
    purchases,
    rpc_error,
    token,
)
from tollbooth.db.payment_intents import PaymentIntent

SUCCEEDED = payment_pb2.PAYMENT_INTENT_STATUS_SUCCEEDED
CANCELED = payment_pb2.PAYMENT_INTENT_STATUS_CANCELED


def buy(world: World, bearer: str, price_id: str, **fields: object) -> payment_pb2.PaymentIntent:
    return create(world, bearer, amount=0, currency="", catalog_price_id=price_id, **fields)


def test_a_second_tab_is_answered_the_open_intent_and_the_price_is_paid_once(world: World):
    price_id = one_time_pack(world, "lifetime-tabs")
    bearer, account = token(world)
    first = buy(world, bearer, price_id, request_id="tab-1")
    second = buy(world, bearer, price_id, request_id="tab-2", receipt_email="other@example.com")
    third = buy(world, bearer, price_id)  # no request_id at all
    assert first.stripe_payment_intent_id.startswith("pi_")
    for again in (second, third):
        assert (again.payment_intent_id, again.stripe_payment_intent_id, again.client_secret) == (
            first.payment_intent_id,
            first.stripe_payment_intent_id,
            first.client_secret,
        )
        assert again.receipt_email == first.receipt_email == "customer@example.com"
    assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 1

    assert confirm(world, first.stripe_payment_intent_id)["status"] == "succeeded"
    # The second tab confirms the same intent: the provider refuses a second payment.
    with pytest.raises(stripe.InvalidRequestError, match="status of succeeded"):
        confirm(world, second.stripe_payment_intent_id)
    world.settled()
    assert [p.payment_intent_id for p in purchases(world, account)] == [first.payment_intent_id]
    assert world.balance(account, "pack_calls") == "250"
    assert get(world, bearer, first.payment_intent_id).status == SUCCEEDED
    # Paid: a further tab is refused, nothing created.
    err = rpc_error(lambda: buy(world, bearer, price_id, request_id="tab-4"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err) == "PRICE_ALREADY_PURCHASED"
    assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 1


def test_an_intent_canceled_at_the_provider_frees_the_price_for_a_new_one(world: World):
    price_id = one_time_pack(world, "lifetime-cancel")
    bearer, account = token(world)
    first = buy(world, bearer, price_id, request_id="before")
    world.stripe.v1.payment_intents.cancel(first.stripe_payment_intent_id)
    world.settled()
    assert get(world, bearer, first.payment_intent_id).status == CANCELED
    fresh = buy(world, bearer, price_id, request_id="after")
    assert fresh.payment_intent_id != first.payment_intent_id
    assert fresh.stripe_payment_intent_id != first.stripe_payment_intent_id
    assert confirm(world, fresh.stripe_payment_intent_id)["status"] == "succeeded"
    world.settled()
    assert [p.payment_intent_id for p in purchases(world, account)] == [fresh.payment_intent_id]
    # A paid intent is never canceled: the provider refuses, and our row stays succeeded.
    with pytest.raises(stripe.InvalidRequestError):
        world.stripe.v1.payment_intents.cancel(fresh.stripe_payment_intent_id)
    assert get(world, bearer, fresh.payment_intent_id).status == SUCCEEDED


def test_a_stackable_price_gets_an_intent_per_request(world: World):
    price_id = world.price("pack-stack", recurring=False, amount=700, stackable=True).price_id
    bearer, account = token(world)
    made = {buy(world, bearer, price_id).payment_intent_id for _ in range(2)}
    assert len(made) == 2
    assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 2


def _tabs_at_once(world: World, bearer: str, price_id: str, request_ids: list[str]) -> set[str]:
    """One CreatePaymentIntent per request_id, each on its own channel, all released together;
    the provider intent ids answered."""
    start = threading.Barrier(len(request_ids))

    def tab(request_id: str) -> str:
        with grpc.insecure_channel(world.grpc_target) as channel:
            start.wait()
            return str(
                payment_pb2_grpc.PaymentServiceStub(channel)
                .CreatePaymentIntent(
                    payment_pb2.CreatePaymentIntentRequest(
                        catalog_price_id=price_id, request_id=request_id
                    ),
                    metadata=bearer_md(bearer),
                    timeout=60,
                )
                .stripe_payment_intent_id
            )

    with ThreadPoolExecutor(len(request_ids)) as pool:
        return set(pool.map(tab, request_ids))


def test_concurrent_tabs_get_one_intent_on_postgres(pg_url: str, tmp_path: Path):
    world = start_world(pg_url, tmp_path)
    try:
        price_id = one_time_pack(world, "lifetime-race")
        bearer, account = token(world)
        answered = _tabs_at_once(world, bearer, price_id, [f"tab-{n}" for n in range(8)])
        assert len(answered) == 1
        assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 1
    finally:
        world.stop()


def test_a_late_failure_event_never_frees_the_price_before_the_success_is_recorded(
    pg_url: str, tmp_path: Path
):
    """A declined attempt's event handled after the provider took a later payment, but before
    that payment's own event: the row must not read succeeded without its purchase (a third
    tab would then get a fresh intent and could pay twice)."""
    world = start_world(pg_url, tmp_path, deliver=False)
    try:
        price_id = one_time_pack(world, "lifetime-late")
        bearer, account = token(world)
        intent = buy(world, bearer, price_id, request_id="tab-1")
        stripe_pi = intent.stripe_payment_intent_id
        with pytest.raises(stripe.CardError):
            confirm(world, stripe_pi, "pm_card_chargeDeclined")
        assert confirm(world, stripe_pi)["status"] == "succeeded"
        [failed] = events_of(world, "payment_intent.payment_failed", stripe_pi)
        assert signed_send(world, json.dumps(failed).encode()) == 200
        assert get(world, bearer, intent.payment_intent_id).status != SUCCEEDED
        again = buy(world, bearer, price_id, request_id="tab-2")
        assert again.payment_intent_id == intent.payment_intent_id
        [paid] = events_of(world, "payment_intent.succeeded", stripe_pi)
        assert signed_send(world, json.dumps(paid).encode()) == 200
        assert get(world, bearer, intent.payment_intent_id).status == SUCCEEDED
        assert [p.payment_intent_id for p in purchases(world, account)] == [
            intent.payment_intent_id
        ]
    finally:
        world.stop()


def test_an_intent_canceled_at_the_provider_is_not_handed_out_before_its_event(
    pg_url: str, tmp_path: Path
):
    """The provider canceled the open intent, but its `payment_intent.canceled` has not been
    delivered yet: a second tab must not be handed the canceled intent (it could never pay):
    the open intent is re-read from the provider first, recorded canceled, and a new one made."""
    world = start_world(pg_url, tmp_path, deliver=False)
    try:
        price_id = one_time_pack(world, "lifetime-early-cancel")
        bearer, account = token(world)
        first = buy(world, bearer, price_id, request_id="tab-1")
        world.stripe.v1.payment_intents.cancel(first.stripe_payment_intent_id)
        second = buy(world, bearer, price_id, request_id="tab-2")
        assert second.payment_intent_id != first.payment_intent_id
        assert second.stripe_payment_intent_id != first.stripe_payment_intent_id
        assert get(world, bearer, first.payment_intent_id).status == CANCELED
        # A third tab is handed the new open intent, not a third one.
        third = buy(world, bearer, price_id, request_id="tab-3")
        assert third.payment_intent_id == second.payment_intent_id
        assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 2
        assert confirm(world, second.stripe_payment_intent_id)["status"] == "succeeded"
        # The late canceled event changes nothing more.
        [canceled] = events_of(world, "payment_intent.canceled", first.stripe_payment_intent_id)
        assert signed_send(world, json.dumps(canceled).encode()) == 200
        assert get(world, bearer, first.payment_intent_id).status == CANCELED
        assert get(world, bearer, second.payment_intent_id).status != CANCELED
    finally:
        world.stop()


def test_a_failed_re_read_of_the_open_intent_hands_it_out_as_before(world: World):
    """The provider down when the open intent is re-read: the second tab still gets the open
    intent (never an error, never a second intent), as before the re-read existed."""
    price_id = one_time_pack(world, "lifetime-reread-down")
    bearer, account = token(world)
    first = buy(world, bearer, price_id, request_id="tab-1")
    path = f"/v1/payment_intents/{first.stripe_payment_intent_id}"
    stall = world.sandbox.stalls.add("GET", path, seconds=0, status=500, times=10)
    second = buy(world, bearer, price_id, request_id="tab-2")
    assert stall.held >= 1  # the re-read was tried, and failed
    assert second.payment_intent_id == first.payment_intent_id
    assert second.client_secret == first.client_secret
    assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 1


def test_concurrent_tabs_after_an_unannounced_cancel_share_one_new_intent_on_postgres(
    pg_url: str, tmp_path: Path
):
    """Eight tabs at once, the open intent canceled at the provider and its event not
    delivered: each re-reads it, one records it canceled, and all are answered one new intent."""
    world = start_world(pg_url, tmp_path, deliver=False)
    try:
        price_id = one_time_pack(world, "lifetime-cancel-race")
        bearer, account = token(world)
        first = buy(world, bearer, price_id, request_id="tab-0")
        world.stripe.v1.payment_intents.cancel(first.stripe_payment_intent_id)
        answered = _tabs_at_once(world, bearer, price_id, [f"tab-{n}" for n in range(1, 9)])
        assert len(answered) == 1
        assert first.stripe_payment_intent_id not in answered
        assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 2
        assert get(world, bearer, first.payment_intent_id).status == CANCELED
    finally:
        world.stop()
