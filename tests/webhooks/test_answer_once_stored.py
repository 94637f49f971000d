"""The sidecar answers once the event is stored (issue 14, "store first, then apply"): a slow
provider read during the apply does not hold the answer back; the effect lands later, once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from billing.v1 import catalog_pb2
from tests.checkout.support import World, events_of, signed_send, start_world, wait_for
from tollbooth.db.models import CreditGrant, StripeEvent

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]


@pytest.fixture
def quiet(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(database_url, tmp_path, deliver=False)
    yield w
    w.stop()


def status_of(world: World, event_id: str) -> str | None:
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, event_id)
        return row.status if row is not None else None


def grants_of(world: World, account: str) -> int:
    with world.deps.db.transaction(readonly=True) as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(CreditGrant)
                .where(CreditGrant.billing_account_id == account)
            )
            or 0
        )


def test_the_sidecar_answers_200_while_the_provider_read_is_stalled_and_applies_later_once(
    quiet: World,
) -> None:
    world = quiet
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    completed = events_of(world, "checkout.session.completed", stripe_id)[0]
    body = json.dumps(completed).encode()
    # The handler's read of the session (and any retry of it) is held open far past the
    # sidecar's 15 s limit: before, the sidecar answered 503 although the event was stored.
    stall = world.sandbox.stalls.add("GET", "/v1/checkout/sessions", seconds=120, times=3)
    try:
        answers: list[int] = []
        sender = threading.Thread(target=lambda: answers.append(signed_send(world, body)))
        sender.start()
        assert stall.entered.wait(30), "the apply never reached the provider"
        sender.join(60)
        # Answered while the provider read is still held: stored, not yet applied.
        assert answers == [200]
        assert not stall.release.is_set()
        assert status_of(world, completed["id"]) == "pending"
        assert world.balance(account, "api_calls") == "0"
    finally:
        stall.release.set()
    wait_for(lambda: status_of(world, completed["id"]) == "applied", 30, "the event applied")
    assert world.balance(account, "api_calls") == "100"
    assert grants_of(world, account) == 1
    # Stripe's redelivery afterwards is answered and applies nothing twice.
    assert signed_send(world, body) == 200
    assert world.balance(account, "api_calls") == "100"
    assert grants_of(world, account) == 1
