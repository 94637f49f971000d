"""The provider's time inside an RPC is bounded by the caller's deadline (`tollbooth.deadline`):
a Stripe call made for an RPC waits at most the caller's gRPC deadline less a second (a quarter
of it under four seconds), and never more than `STRIPE_RPC_BUDGET_SEC` (a REST call through
Envoy carries no deadline: the budget keeps it under Envoy's route timeout), so a slow provider
is answered UNAVAILABLE `PROVIDER_UNAVAILABLE` while the caller still listens; its retry under
the same request_id gets the one session. Applying a webhook is exempt: it has its own retries
and leases."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest

from billing.v1 import checkout_pb2, webhook_pb2, webhook_pb2_grpc
from tests.checkout.support import (
    Shop,
    World,
    events_of,
    signed_send,
    start_shop,
    start_world,
    wait_for,
)
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason

CHECKOUT_PATH = "/v1/checkout/sessions"


@pytest.fixture
def budgeted(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The provider's own timeout (10 s, two network retries) is longer than the budget (2 s)."""
    w = start_world(database_url, tmp_path, STRIPE_RPC_BUDGET_SEC="2")
    yield w
    w.stop()


def sessions_at_the_provider(sandbox: object) -> int:
    store = sandbox.app.state.store  # type: ignore[attr-defined]
    with store.lock:
        return len(store.all("checkout.session"))


def checkout(
    world: World, token: str, timeout: float
) -> checkout_pb2.CreateCheckoutSessionResponse:
    return world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            items=[checkout_pb2.CheckoutItem(lookup_key="pro", quantity=1)],
            success_url="https://app.example/ok",
            request_id="budget-1",
        ),
        metadata=bearer_md(token),
        timeout=timeout,
    )


def test_a_slow_provider_is_unavailable_before_the_callers_deadline(database_url, tmp_path):  # type: ignore[no-untyped-def]
    world = start_world(database_url, tmp_path)  # the budget's cap (25 s) is not what binds
    try:
        world.price("pro")
        token, _ = world.token()
        before = sessions_at_the_provider(world.sandbox)
        stall = world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=30.0)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            checkout(world, token, timeout=4)
        took = time.monotonic() - started
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (err.value.code(), took)
        assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
        assert took < 4, took
        stall.release.set()  # the provider makes the session after all; its answer is lost
        made = checkout(world, token, timeout=30)
        assert checkout(world, token, timeout=30) == made
        wait_for(lambda: sessions_at_the_provider(world.sandbox) == before + 1)
    finally:
        world.stop()


def test_a_deadline_under_a_second_still_asks_a_quick_provider(budgeted: World) -> None:
    """The margin kept for the answer is at most a quarter of the caller's time: a caller
    giving a checkout 0.9 s is served by a provider that answers in time, not refused
    UNAVAILABLE before the provider was asked (the budget was 0.9 s less a whole second)."""
    budgeted.price("pro")
    warm, _ = budgeted.token()
    checkout(budgeted, warm, timeout=30)  # the price is at the provider now
    token, _ = budgeted.token()
    made = checkout(budgeted, token, timeout=0.9)
    assert made.url
    assert checkout(budgeted, token, timeout=30) == made


def test_without_a_deadline_the_budget_caps_the_provider(budgeted: World) -> None:
    world = budgeted
    world.price("pro")
    token, _ = world.token()
    stall = world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=30.0)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        checkout(world, token, timeout=None)  # type: ignore[arg-type]
    took = time.monotonic() - started
    stall.release.set()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (err.value.code(), took)
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    assert took < 4, took


def test_replaying_a_webhook_is_not_cut_by_the_budget(database_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ReplayStripeEvents applies in the RPC's own thread; the re-fetch of the completed session
    takes 3 s, over the 2 s budget: applied all the same."""
    world = start_world(
        database_url,
        tmp_path,
        deliver=False,  # the test delivers the event itself
        STRIPE_RPC_BUDGET_SEC="2",
        BILLING_INBOX_RETRY_FIRST_MS="600000",  # the inbox worker stays out of it
    )
    try:
        world.price("pro")
        token, _ = world.token()
        session = checkout(world, token, timeout=10).session.stripe_checkout_session_id
        world.pay(session)
        (event,) = events_of(world, "checkout.session.completed", session)
        refetch = f"{CHECKOUT_PATH}/{session}"
        world.sandbox.stalls.add("GET", refetch, seconds=0, status=500)
        assert signed_send(world, json.dumps(event).encode()) == 200  # stored; apply failed
        assert world.status(token).plan == "free"
        world.sandbox.stalls.add("GET", refetch, seconds=3.0)
        replayed = webhook_pb2_grpc.StripeEventServiceStub(world.channel).ReplayStripeEvents(
            webhook_pb2.ReplayStripeEventsRequest(event_id=event["id"]),
            metadata=SERVICE_MD,
            timeout=30,
        )
        assert [e.status for e in replayed.events] == [webhook_pb2.STRIPE_EVENT_STATUS_APPLIED]
        assert world.status(token).plan == "pro"
    finally:
        world.stop()


@pytest.fixture(scope="module")
def budgeted_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    shop = start_shop(tmp_path_factory.mktemp("budget-shop"), STRIPE_RPC_BUDGET_SEC="2")
    yield shop
    shop.close()


@pytest.mark.envoy
def test_through_envoy_a_slow_provider_is_503_within_the_budget(budgeted_shop: Shop) -> None:
    shop = budgeted_shop
    shop.price("budget-pro", group="budget")
    token = shop.token("budget-rest")
    stall = shop.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=40.0)
    started = time.monotonic()
    resp = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {"items": [{"lookup_key": "budget-pro"}], "success_url": "https://app.example/ok"},
        token,
    )
    took = time.monotonic() - started
    stall.release.set()
    assert (resp.status, resp.reason) == (503, "PROVIDER_UNAVAILABLE"), (resp.body, took)
    assert took < 5, took
