"""The credit burn through a real Envoy: seed 001's event, sent as written to an account holding
seed 001's welcome credits, takes the credits once; the same body again takes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.conftest import SERVICE_KEY
from tests.usage.test_rest import SEED_001_EVENT

pytestmark = pytest.mark.envoy

KEY = {"x-api-key": SERVICE_KEY}
BALANCE = "/mgt/v1/accounts/acc_abc123/credits/balance?type=units"


@pytest.fixture(scope="module")
def burning(stack) -> None:  # type: ignore[no-untyped-def]
    """acc_abc123 (seed 001, step 1) holds 50 welcome units (step 2); `api_tokens` burns 0.01
    units per token of `api_call` events."""
    r = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "acc_abc123"}, KEY)
    assert r.status == 200, r.body
    r = stack.request(
        "POST",
        "/mgt/v1/accounts/acc_abc123/credits/grants",
        {
            "creditType": "units",
            "amount": "50",
            "reason": "Welcome credits",
            "requestId": "welcome-acc_abc123",
        },
        KEY,
    )
    assert r.status == 200, r.body
    r = stack.request(
        "POST",
        "/mgt/v1/metrics?request_id=burn-rest-metric",
        {
            "code": "api_tokens",
            "eventName": "api_call",
            "aggregation": "AGGREGATION_SUM",
            "property": "tokens",
            "creditBurn": {"creditType": "units", "rate": "0.01"},
        },
        KEY,
    )
    assert r.status == 200, r.body


def test_seed_001_event_burns_once_through_envoy(stack, burning) -> None:  # type: ignore[no-untyped-def]
    first = stack.request("POST", "/mgt/v1/events", SEED_001_EVENT, KEY)
    assert (first.status, first.json()["status"]) == (200, "EVENT_STATUS_ACCEPTED")
    after_first = stack.request("GET", BALANCE, None, KEY).json()
    again = stack.request("POST", "/mgt/v1/events", SEED_001_EVENT, KEY)
    assert (again.status, again.json()["status"]) == (200, "EVENT_STATUS_DUPLICATE")
    after_again = stack.request("GET", BALANCE, None, KEY).json()
    # 1500 tokens x 0.01 = 15 of the 50 units.
    assert (after_first["balance"], after_first["overage"]) == ("35", "0")
    assert (after_again["balance"], after_again["overage"]) == ("35", "0")
    ledger = stack.request(
        "GET", "/mgt/v1/accounts/acc_abc123/credits/ledger?credit_type=units", None, KEY
    ).json()["entries"]
    burns = [e for e in ledger if e["reason"] == "usage:api_tokens"]
    assert [(e["kind"], e["amount"], e["metadata"]["event_ids"]) for e in burns] == [
        ("LEDGER_ENTRY_KIND_DEBIT", "-15", '["evt_123456"]')
    ]


def test_usage_beyond_the_credits_is_accepted_and_shown_as_overage(stack, burning) -> None:  # type: ignore[no-untyped-def]
    before = stack.request("GET", BALANCE, None, KEY).json()
    big = {**SEED_001_EVENT, "uniqueId": "evt_big", "properties": {"tokens": 100000}}
    r = stack.request("POST", "/mgt/v1/events", big, KEY)
    assert (r.status, r.json()["status"]) == (200, "EVENT_STATUS_ACCEPTED")
    after = stack.request("GET", BALANCE, None, KEY).json()
    # 1000 units asked: the balance gives what it has, the rest is overage.
    assert after["balance"] == "0"
    assert Decimal(after["overage"]) == 1000 - Decimal(before["balance"]) + Decimal(
        before["overage"]
    )
