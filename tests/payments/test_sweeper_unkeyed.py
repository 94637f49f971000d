"""The sweep (`tollbooth reconcile`) and an intent created WITHOUT request_id (seed 003 sends
none) whose provider call failed, on PostgreSQL with the sandbox.

No client can retry such an intent (it was never given its id, and a retry without the key
is a new intent), so the sweep never sends it to the provider: it would make an unpaid intent
nobody knows about. It is recorded `canceled`; one a first attempt did create at the provider
(the answer lost) is found there by its metadata and canceled there first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import grpc
import pytest
from sqlalchemy import select

from tests.checkout.support import World, start_world
from tests.helpers import error_reason
from tests.payments.support import at_provider, backdate, create, intent_row, token
from tollbooth import app
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.payments import intents

pytestmark = pytest.mark.postgres

PATH = "/v1/payment_intents"
STALE = intents.STALE_AFTER + dt.timedelta(minutes=1)


@pytest.fixture
def make_world(pg_url: str, tmp_path) -> Iterator[Callable[..., World]]:  # type: ignore[no-untyped-def]
    worlds: list[World] = []

    def make(**env: str) -> World:
        world = start_world(pg_url, tmp_path, STRIPE_MAX_NETWORK_RETRIES="0", **env)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.stop()


def failed_without_request_id(world: World) -> tuple[str, str]:
    """Seed 003's request (no request_id) answered 503: (account, our id of its pending row)."""
    bearer, account = token(world)
    with pytest.raises(grpc.RpcError) as down:
        create(world, bearer)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(down.value) == "PROVIDER_UNAVAILABLE"
    with world.deps.db.transaction(readonly=True) as session:
        [ours] = session.scalars(
            select(PaymentIntent.id).where(PaymentIntent.billing_account_id == account)
        ).all()
    assert intent_row(world, ours).status == "pending"
    backdate(world, ours, STALE)
    return account, ours


def about(lines: list[str], intent_id: str) -> list[str]:
    return [line for line in lines if f"payment intent {intent_id}:" in line]


def test_an_unkeyed_intent_the_provider_never_made_is_canceled_not_sent(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    world.sandbox.stalls.add("POST", PATH, seconds=0, status=500)  # refused before any work
    _, ours = failed_without_request_id(world)

    report = app.reconcile(world.settings)
    assert report.failed == [] and about(report.left_alone, ours) == []
    assert about(report.changed, ours) == [
        f"payment intent {ours}: pending -> canceled (created without request_id: no client"
        " can retry it; not at Stripe)"
    ]
    assert at_provider(world, ours) == []  # never sent again
    row = intent_row(world, ours)
    assert (row.status, row.stripe_payment_intent_id, row.client_secret) == ("canceled", None, None)

    again = app.reconcile(world.settings)
    assert about(again.changed + again.failed + again.left_alone, ours) == []
    assert at_provider(world, ours) == []


def test_an_unkeyed_intent_a_first_attempt_made_is_canceled_at_the_provider(
    make_world: Callable[..., World],
) -> None:
    world = make_world(STRIPE_TIMEOUT_SEC="1")
    # The provider creates the intent but answers after the client gave up.
    stall = world.sandbox.stalls.add("POST", PATH, seconds=60.0, after=True)
    try:
        _, ours = failed_without_request_id(world)
    finally:
        stall.release.set()
    [stripe_id] = at_provider(world, ours)
    assert world.stripe.v1.payment_intents.retrieve(stripe_id).status == "requires_payment_method"

    report = app.reconcile(world.settings)
    assert report.failed == []
    assert about(report.changed, ours) == [
        f"payment intent {ours}: pending -> canceled (created without request_id: no client"
        f" can retry it; canceled at Stripe: {stripe_id})"
    ]
    assert at_provider(world, ours) == [stripe_id]  # none made by the sweep
    assert world.stripe.v1.payment_intents.retrieve(stripe_id).status == "canceled"
    row = intent_row(world, ours)
    assert (row.status, row.stripe_payment_intent_id) == ("canceled", stripe_id)


def test_an_unkeyed_intent_whose_cancel_fails_stays_pending_for_the_next_run(
    make_world: Callable[..., World],
) -> None:
    world = make_world(STRIPE_TIMEOUT_SEC="1")
    stall = world.sandbox.stalls.add("POST", PATH, seconds=60.0, after=True)
    try:
        _, ours = failed_without_request_id(world)
    finally:
        stall.release.set()
    [stripe_id] = at_provider(world, ours)
    world.sandbox.stalls.add("POST", f"{PATH}/{stripe_id}/cancel", seconds=0, status=500)

    first = app.reconcile(world.settings)
    [failure] = about(first.failed, ours)
    assert "PROVIDER_UNAVAILABLE" in failure
    assert intent_row(world, ours).status == "pending"
    assert world.stripe.v1.payment_intents.retrieve(stripe_id).status == "requires_payment_method"

    second = app.reconcile(world.settings)
    assert second.failed == [] and len(about(second.changed, ours)) == 1
    assert world.stripe.v1.payment_intents.retrieve(stripe_id).status == "canceled"
    assert intent_row(world, ours).status == "canceled"
    assert at_provider(world, ours) == [stripe_id]
