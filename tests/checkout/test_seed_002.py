"""Seed 002's billing requests as written, through Envoy with the sandbox: only the path
(`/v1/billing/checkout` is `/api/v1/checkout/sessions`, `/v1/billing/portal` is
`/api/v1/portal/sessions`, `/v1/billing` is `/api/v1/billing`) and the auth header are
translated. Its checkout body is `{"tier": "pro"}` and nothing else: no success URL, so the
buyer comes back to the app's home (the first of BILLING_REDIRECT_ORIGINS), as from the portal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.checkout.support import Shop, start_shop, wait_for

pytestmark = pytest.mark.envoy

HOME = "https://yourapp.com"


@pytest.fixture(scope="module")
def seed_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    s = start_shop(
        tmp_path_factory.mktemp("seed-002"), BILLING_REDIRECT_ORIGINS=f"{HOME},https://app.example"
    )
    s.price("pro", group="plan", amount=2900)  # seed 002: "pro" ($29/mo)
    yield s
    s.close()


def test_seed_002_tier_body_buys_the_tier_and_billing_status_follows(seed_shop: Shop):
    token = seed_shop.token(f"seed002-{uuid.uuid4().hex[:8]}")
    # Seed 002's free-tier response: status and current_period_end are null.
    free = seed_shop.billing(token)
    assert (free["plan"], free["status"], free["current_period_end"]) == ("free", None, None)
    assert free["cancel_at_time"] is None  # printed as null, not left out
    made = seed_shop.request("POST", "/api/v1/checkout/sessions", {"tier": "pro"}, token)
    assert made.status == 200, made.body
    answer = made.json()
    assert answer["checkout_url"] == answer["url"] == answer["session"]["url"]
    stripe_id = answer["session"]["stripe_checkout_session_id"]
    at_provider = seed_shop.stripe.v1.checkout.sessions.retrieve(stripe_id)
    assert at_provider.success_url == f"{HOME}/"
    assert at_provider.mode == "subscription"
    [line] = answer["session"]["items"]
    assert line["quantity"] == 1
    seed_shop.stripe.raw_request("post", f"/v1/test_helpers/checkout/sessions/{stripe_id}/complete")
    wait_for(lambda: seed_shop.billing(token).get("status") == "active", what="the webhooks")
    status = seed_shop.billing(token)
    assert (status["plan"], status["status"], status["cancel_at_period_end"]) == (
        "pro",
        "active",
        False,
    )
    assert status["current_period_end_time"]
    assert status["cancel_at_time"] is None  # no cancellation scheduled: null
    # Seed 002's name for it: the same instant.
    assert status["current_period_end"] == status["current_period_end_time"]
    assert status["current_period_end"].endswith("Z")
    # Seed 002's portal request has no body.
    portal = seed_shop.request("POST", "/api/v1/portal/sessions", None, token)
    assert portal.status == 200, portal.body
    assert portal.json()["portal_url"] == portal.json()["url"]
    assert portal.json()["return_url"] == f"{HOME}/"
    # The same tier again: no second checkout, the portal (its URL under checkout_url too).
    again = seed_shop.request("POST", "/api/v1/checkout/sessions", {"tier": "pro"}, token)
    assert again.status == 200, again.body
    assert "session" not in again.json()
    assert again.json()["checkout_url"] == again.json()["portal"]["url"]


def test_seed_002_tier_refusals_create_nothing(seed_shop: Shop):
    token = seed_shop.token(f"seed002-bad-{uuid.uuid4().hex[:8]}")
    cases = [
        ({"tier": "no-such-tier"}, "PRICE_NOT_FOUND"),
        ({"tier": "pro", "items": [{"lookup_key": "pro"}]}, "FIELD_INVALID"),
        ({"tier": "pro", "line_items": [{"price": "pro", "quantity": 1}]}, "FIELD_INVALID"),
        ({"tier": "t" * 201}, "FIELD_INVALID"),
        # A blank tier names no price: refused, never read as absent (the default offer, or
        # the items beside it bought as if it were not there).
        ({"tier": " ", "items": [{"lookup_key": "pro"}]}, "FIELD_INVALID"),
        ({"tier": "  "}, "FIELD_INVALID"),
    ]
    for body, reason in cases:
        resp = seed_shop.request("POST", "/api/v1/checkout/sessions", body, token)
        assert (resp.status, resp.reason) == (400, reason), (body, resp.body)
    status = seed_shop.billing(token)
    assert status["plan"] == "free"
    listed = seed_shop.request("GET", "/mgt/v1/customers?limit=100")
    assert listed.status == 200, listed.body
    mine = [c for c in listed.json()["data"] if c["account_id"] == status["billing_account_id"]]
    assert mine == []  # nothing created at the provider either (no customer)


def test_seed_002_unknown_tier_is_refused_naming_tier(seed_shop: Shop):
    """The error names the field the body sent, `tier`, not `items[0].lookup_key`: the
    caller sent no items."""
    token = seed_shop.token(f"seed002-field-{uuid.uuid4().hex[:8]}")
    resp = seed_shop.request("POST", "/api/v1/checkout/sessions", {"tier": "no-such-tier"}, token)
    assert (resp.status, resp.reason) == (400, "PRICE_NOT_FOUND"), resp.body
    [info] = [d for d in resp.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["metadata"]["field"] == "tier"
    assert "items" not in resp.json()["message"]
