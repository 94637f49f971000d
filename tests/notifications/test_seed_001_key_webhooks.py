"""Seed 001's "Complete Integration Flow" and its "Testing" list through Envoy with the sandbox:
create the account, grant the trial credits, deplete them by sending step 6's usage event,
complete the checkout, and verify that the "Key Webhooks" arrive at a receiver subscribed to
them by the seed's names (account.credits.balance_depleted, checkout.session.completed,
subscription.created, invoice.paid): signed, delivered by the delivery loop, in the payloads
the seed writes. On PostgreSQL when it is configured."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.checkout.support import Shop, start_shop
from tests.conftest import PG_ENV
from tests.devstack import throwaway_postgres
from tests.notifications.support import Receiver
from tests.notifications.test_seed_flow import Running

pytestmark = pytest.mark.envoy

DEFAULT_KEY = "seed1-hooks-pro"
KEY_WEBHOOKS = [
    "checkout.session.completed",
    "account.credits.balance_depleted",
    "subscription.created",
    "invoice.paid",
]
ALIAS = "your-internal-id-123"


@pytest.fixture
def shop(tmp_path) -> Iterator[Shop]:  # type: ignore[no-untyped-def]
    """On a PostgreSQL database of its own when one is configured (the seed's alias and
    metric code are fixed), else SQLite."""
    admin = os.environ.get(PG_ENV, "").strip()
    with contextlib.ExitStack() as scope:
        url = scope.enter_context(throwaway_postgres(admin, "tollbooth_hooks")) if admin else None
        s = start_shop(
            tmp_path,
            url,
            BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY=DEFAULT_KEY,
            BILLING_REDIRECT_ORIGINS="https://yourapp.com",
        )
        scope.callback(s.close)
        s.price(DEFAULT_KEY, group="seed1-hooks", amount=4900)  # $49.00, step 5's amount
        yield s


def test_seed_001s_key_webhooks_arrive_signed_in_the_seeds_shape(shop: Shop, receiver: Receiver):
    made = shop.request(
        "POST",
        "/mgt/v1/notifications/endpoints",
        {"endpoint": {"url": receiver.url, "eventTypes": KEY_WEBHOOKS}, "requestId": "hooks"},
    )
    assert made.status == 200, made.body
    receiver.secret = made.json()["secret"]

    # Step 6's `tokens` burn the trial credits: 1500 tokens at 0.01 a token, 15 units an event.
    metric = shop.request(
        "POST",
        f"/mgt/v1/metrics?request_id={uuid.uuid4().hex}",
        {
            "code": "api_tokens",
            "event_name": "api_call",
            "aggregation": "AGGREGATION_SUM",
            "property": "tokens",
            "credit_burn": {"credit_type": "units", "rate": "0.01"},
        },
    )
    assert metric.status == 200, metric.body

    # Step 1, step 2 (50 units), then step 6's event until the 50 units are gone.
    account = shop.request(
        "POST",
        "/mgt/v1/accounts",
        {"name": "Acme Corp", "email": "billing@acme.com", "alias": ALIAS},
    )
    assert account.status == 200, account.body
    account_id = account.json()["id"]
    granted = shop.request(
        "POST",
        f"/mgt/v1/accounts/{account_id}/credits/grants",
        {"creditType": "units", "amount": "50", "reason": "Welcome credits"},
    )
    assert granted.status == 200, granted.body
    for n in range(4):
        event = {
            "uniqueId": f"evt_12345{n}",
            "account": ALIAS,  # "Alguna account ID or your internal ID (alias)"
            "eventName": "api_call",
            "timestamp": "2025-03-09T15:03:17Z",
            "properties": {"endpoint": "/v1/analyze", "tokens": 1500},
        }
        sent = shop.request("POST", "/mgt/v1/events", event)
        assert sent.status == 200, sent.body
    balance = shop.request("GET", f"/mgt/v1/accounts/{ALIAS}/credits/balance?type=units")
    assert balance.json()["balance"] == "0"
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
        got = receiver.wait_for(len(KEY_WEBHOOKS))
    finally:
        running.close()
    assert receiver.rejected_signatures == 0
    by_type = {m["type"]: m for m in got[: len(KEY_WEBHOOKS)]}
    assert sorted(by_type) == sorted(KEY_WEBHOOKS)
    for message in by_type.values():
        assert {"type", "timestamp", "data"} <= set(message)
        assert message["timestamp"].endswith("Z")
        assert message["data"]["accountId"] == account_id

    depleted = by_type["account.credits.balance_depleted"]["data"]
    assert depleted == {"accountId": account_id, "amount": "0", "type": "units"}

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
