"""The issue's "done when", minus `make run`: the sandbox delivers into the real sidecar (through
Envoy) and the inbox stores each event once, even when the sandbox sends it twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from tests.conftest import WEBHOOK_SECRET
from tests.sandbox.support import client_for, complete, monthly_price, wait_for
from tollbooth.sandbox.app import SandboxHandle, start_sandbox
from tollbooth.sandbox.config import Faults, SandboxConfig
from tollbooth.webhooks import repository

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module")
def stack_sandbox(stack, tmp_path_factory) -> Iterator[SandboxHandle]:  # type: ignore[no-untyped-def]
    config = SandboxConfig(
        webhook_secret=WEBHOOK_SECRET,
        port=0,
        db_path=Path(tmp_path_factory.mktemp("sandbox-stack")) / "sandbox.db",
        webhook_url=f"{stack.rest_url}/v1/billing/webhooks",
        faults=Faults.parse("duplicate=1,seed=11"),
        retry_base_sec=0.05,
        retry_max_sec=0.5,
    )
    handle = start_sandbox(config)
    yield handle
    handle.stop()


def _stored(stack, event_id: str) -> int:  # type: ignore[no-untyped-def]
    with stack.deps.db.transaction() as session:
        return repository.count_events(session, event_id)


def _event_id(client: stripe.StripeClient, event_type: str, object_id: str) -> str:
    for event in client.v1.events.list(params={"type": event_type, "limit": 100}).data:
        if event.data.object["id"] == object_id:
            return event.id
    raise AssertionError(f"no {event_type} for {object_id}")


def test_checkout_then_renewal_reach_the_inbox_once(stack, stack_sandbox) -> None:  # type: ignore[no-untyped-def]
    client = client_for(stack_sandbox.url)
    price = monthly_price(client, 1900)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
            "client_reference_id": "acct_stack",
        }
    )
    done = complete(client, session.id)
    completed = _event_id(client, "checkout.session.completed", session.id)
    wait_for(
        lambda: client.v1.events.retrieve(completed).pending_webhooks == 0,
        timeout=60,
        what="checkout.session.completed accepted by the sidecar",
    )
    assert stack_sandbox.deliverer.attempts >= 2  # the duplicate fault sent it again
    assert _stored(stack, completed) == 1

    clock = client.v1.test_helpers.test_clocks.retrieve("clock_default")
    client.v1.test_helpers.test_clocks.advance(
        "clock_default", params={"frozen_time": clock.frozen_time + 31 * 86400}
    )
    sub = client.v1.subscriptions.retrieve(str(done.subscription))
    paid = _event_id(client, "invoice.paid", str(sub.latest_invoice))
    wait_for(
        lambda: client.v1.events.retrieve(paid).pending_webhooks == 0,
        timeout=60,
        what="invoice.paid accepted by the sidecar",
    )
    assert _stored(stack, paid) == 1
