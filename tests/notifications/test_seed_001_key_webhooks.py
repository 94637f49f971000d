"""Seed 001's "Key Webhooks" arriving at a receiver that subscribed to them by the seed's names
(checkout.session.completed, subscription.created, invoice.paid), after seed 001's steps 1, 4
and 5 through Envoy with the sandbox: signed, delivered by the delivery loop, and step 5's
payload as the seed writes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.checkout.support import Shop, start_shop
from tests.notifications.support import Receiver, ReceiverServer
from tests.notifications.test_seed_flow import Running

pytestmark = pytest.mark.envoy

DEFAULT_KEY = "seed1-hooks-pro"
KEY_WEBHOOKS = ["checkout.session.completed", "subscription.created", "invoice.paid"]


@pytest.fixture
def shop(tmp_path) -> Iterator[Shop]:  # type: ignore[no-untyped-def]
    s = start_shop(
        tmp_path,
        BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY=DEFAULT_KEY,
        BILLING_REDIRECT_ORIGINS="https://yourapp.com",
    )
    s.price(DEFAULT_KEY, group="seed1-hooks", amount=4900)  # $49.00, step 5's amount
    yield s
    s.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    server = ReceiverServer(r)
    yield r
    server.close()


def test_seed_001s_key_webhooks_arrive_signed_in_the_seeds_shape(shop: Shop, receiver: Receiver):
    made = shop.request(
        "POST",
        "/mgt/v1/notifications/endpoints",
        {"endpoint": {"url": receiver.url, "eventTypes": KEY_WEBHOOKS}, "requestId": "hooks"},
    )
    assert made.status == 200, made.body
    receiver.secret = made.json()["secret"]

    account = shop.request(
        "POST",
        "/mgt/v1/accounts",
        {
            "name": "Acme Corp",
            "email": "billing@acme.com",
            "alias": f"your-internal-id-{uuid.uuid4().hex[:6]}",
        },
    )
    assert account.status == 200, account.body
    account_id = account.json()["id"]
    checkout = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {
            "accountId": account_id,
            "accountEmail": "billing@acme.com",
            "currency": "USD",
            "successUrl": "https://yourapp.com/welcome",
            "passThroughToken": "your-internal-reference",
        },
    )
    assert checkout.status == 200, checkout.body
    answer = checkout.json()
    assert answer["url"] and answer["checkout_session_id"]
    stripe_id = answer["session"]["stripe_checkout_session_id"]
    shop.stripe.raw_request("post", f"/v1/test_helpers/checkout/sessions/{stripe_id}/complete")

    running = Running(shop.stack)
    try:
        got = receiver.wait_for(3)
    finally:
        running.close()
    assert receiver.rejected_signatures == 0
    by_type = {m["type"]: m for m in got[:3]}
    assert sorted(by_type) == sorted(KEY_WEBHOOKS)
    for message in by_type.values():
        assert {"type", "timestamp", "data"} <= set(message)
        assert message["timestamp"].endswith("Z")
        assert message["data"]["accountId"] == account_id

    completed = by_type["checkout.session.completed"]["data"]
    seeds_fields = {
        "id",
        "accountId",
        "status",
        "amount",
        "currency",
        "invoiceId",
        "paymentId",
        "passThroughToken",
    }
    assert seeds_fields <= set(completed), completed
    assert completed["id"] == answer["checkout_session_id"]
    assert (completed["status"], completed["amount"], completed["currency"]) == (
        "completed",
        "49.00",
        "USD",
    )
    assert completed["passThroughToken"] == "your-internal-reference"
    assert completed["invoiceId"].startswith("in_")
    assert completed["paymentId"].startswith("pi_")
    paid = by_type["invoice.paid"]["data"]
    assert (paid["amount"], paid["currency"]) == ("49.00", "USD")
