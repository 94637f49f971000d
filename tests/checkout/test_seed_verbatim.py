"""Seed 001's and seed 003's requests that no other test sends exactly as the documents write
them, through Envoy with the sandbox: only the path and the auth headers are translated, and
the answers are checked against the shapes the documents show (snake_case names in our JSON,
as README's "JSON on the wire" says). The seeds' own URLs (`https://yourapp.com/...`) are
allowed redirect origins here, so even they are copied."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.checkout.support import Shop, start_shop, wait_for

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module")
def seed_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """A shop of its own (the portal's configuration lists every synced product, so no other
    module's products made against other sandboxes), on SQLite, accepting the seeds' URLs."""
    s = start_shop(
        tmp_path_factory.mktemp("seed-verbatim"),
        BILLING_REDIRECT_ORIGINS="https://yourapp.com,https://app.example",
    )
    yield s
    s.close()


def subscribed(shop: Shop, principal: str) -> str:
    """The principal's account holds a paid subscription (so it has a provider customer);
    answers its bearer token."""
    lookup = f"verbatim-{uuid.uuid4().hex[:8]}"
    shop.price(lookup, group=lookup)
    token = shop.token(principal)
    buy = {"items": [{"lookup_key": lookup}], "success_url": "https://yourapp.com/success"}
    made = shop.request("POST", "/api/v1/checkout/sessions", buy, token)
    assert made.status == 200, made.body
    stripe_id = made.json()["session"]["stripe_checkout_session_id"]
    shop.stripe.raw_request("post", f"/v1/test_helpers/checkout/sessions/{stripe_id}/complete")
    wait_for(lambda: shop.billing(token)["plan"] == lookup, what="the webhook")
    return token


def portal_features(shop: Shop, portal_session_id: str) -> dict[str, bool]:
    """What the provider's portal configuration of that session allows."""
    stored = shop.sandbox.engine.store.get(portal_session_id)  # Stripe has no retrieve
    assert stored is not None
    config = shop.stripe.v1.billing_portal.configurations.retrieve(stored["configuration"])
    features = config.features
    return {
        "cancel": bool(features.subscription_cancel.enabled),
        "invoices": bool(features.invoice_history.enabled),
        "payment_methods": bool(features.payment_method_update.enabled),
    }


# -- seed 001 -----------------------------------------------------------------------------------


def test_seed_001_balance_answers_account_id_credit_type_and_balance(seed_shop: Shop):
    """Step 2's grant and "Check Credit Balance": the answer carries the seed's `accountId`,
    `creditType` and `balance` (as account_id, credit_type, balance), whichever name of the
    account the path used."""
    alias = f"your-internal-id-{uuid.uuid4().hex[:8]}"
    made = seed_shop.request(
        "POST",
        "/mgt/v1/accounts",
        {"name": "Acme Corp", "email": "billing@acme.com", "alias": alias},
    )
    assert made.status == 200, made.body
    account = made.json()["id"]
    granted = seed_shop.request(
        "POST",
        f"/mgt/v1/accounts/{account}/credits/grants",
        {"creditType": "units", "amount": "50", "reason": "Welcome credits"},
    )
    assert granted.status == 200, granted.body
    for ref in (account, alias):
        resp = seed_shop.request("GET", f"/mgt/v1/accounts/{ref}/credits/balance?type=units")
        assert resp.status == 200, resp.body
        body = resp.json()
        assert (body["account_id"], body["credit_type"], body["balance"]) == (
            account,
            "units",
            "50",
        )


def test_seed_001_portal_body_as_written_answers_session_url_with_every_section_on(
    seed_shop: Shop,
):
    """Step 7's body as written (every section shown, cancelling allowed): a session_url, and
    a portal that allows cancelling, shows invoices and takes payment methods. The settings'
    documented default is true, so a body naming the account alone gets the same portal."""
    principal = f"acme-{uuid.uuid4().hex[:8]}"
    subscribed(seed_shop, principal)
    body = {
        "accountId": principal,
        "planOverviewSettings": {"showSection": True, "allowSubscriptionCancel": True},
        "invoiceListSettings": {"showSection": True},
        "billingDetailsSettings": {"showSection": True},
    }
    everything = {"cancel": True, "invoices": True, "payment_methods": True}
    for sent in (body, {"accountId": principal}):
        resp = seed_shop.request("POST", "/api/v1/portal/sessions", sent)
        assert resp.status == 200, resp.body
        got = resp.json()
        assert got["session_url"] == got["url"] and "/sandbox/portal/" in got["session_url"]
        assert portal_features(seed_shop, got["portal_session_id"]) == everything


# -- seed 003 -----------------------------------------------------------------------------------


def test_seed_003_portal_body_as_written_answers_a_portal_url(seed_shop: Shop):
    """ "Customer Portal": `{"customer": "cus_...", "return_url": "https://yourapp.com/account"}`
    with nothing else (no options), by the buyer's token and by a backend's key."""
    principal = f"seed3-portal-{uuid.uuid4().hex[:8]}"
    token = subscribed(seed_shop, principal)
    customer = seed_shop.request("GET", f"/mgt/v1/accounts/{principal}").json()[
        "stripe_customer_id"
    ]
    assert customer.startswith("cus_")
    body = {"customer": customer, "return_url": "https://yourapp.com/account"}
    for caller in (token, None):
        resp = seed_shop.request("POST", "/api/v1/portal/sessions", body, caller)
        assert resp.status == 200, resp.body
        got = resp.json()
        assert "/sandbox/portal/" in got["url"]
        assert got["return_url"] == "https://yourapp.com/account"
        stored = seed_shop.sandbox.engine.store.get(got["portal_session_id"])
        assert stored is not None and stored["customer"] == customer


def subscription_status(shop: Shop, email: str) -> Any:
    return shop.request(
        "GET", f"/mgt/v1/customer/subscription?customerEmail={email}&environment=test"
    )


def test_seed_003_subscription_status_is_null_for_a_customer_without_a_subscription(
    seed_shop: Shop,
):
    """ "Returns subscription: null if the customer has no active subscription": a customer
    (seed 003's own create body) that never subscribed is a 200 without a subscription, not
    an error; an e-mail of no customer at all is 404, seed 003's "Resource not found"."""
    email = f"customer-{uuid.uuid4().hex[:8]}@example.com"
    created = seed_shop.request(
        "POST",
        "/mgt/v1/customers",
        {
            "email": email,
            "name": "John Doe",
            "description": "Premium customer",
            "phone": "+1234567890",
            "metadata": {"user_id": "user_123"},
        },
    )
    assert created.status == 200, created.body
    resp = subscription_status(seed_shop, email)
    assert resp.status == 200, resp.body
    assert resp.json() == {"subscription": None}  # the seed's body: the key, null
    assert not any(h.lower() == "x-billing-json-null" for h in resp.headers)  # the gateway's own
    unknown = subscription_status(seed_shop, f"nobody-{uuid.uuid4().hex[:8]}@example.com")
    assert (unknown.status, unknown.reason) == (404, "NOT_FOUND")


def test_seed_003_subscription_status_is_null_once_the_subscription_is_canceled(
    seed_shop: Shop,
):
    """A canceled subscription is no active subscription: null, as the seed says."""
    email = f"leaver-{uuid.uuid4().hex[:8]}@example.com"
    principal = f"leaver-{uuid.uuid4().hex[:8]}"
    made = seed_shop.request(
        "POST", "/mgt/v1/accounts", {"name": "Leaver", "email": email, "alias": principal}
    )
    assert made.status == 200, made.body
    token = subscribed(seed_shop, principal)
    active = subscription_status(seed_shop, email)
    assert active.status == 200, active.body
    sub = active.json()["subscription"]
    assert sub["status"] == "active"
    seed_shop.stripe.v1.subscriptions.cancel(sub["stripeSubscriptionId"])
    wait_for(lambda: shop_plan(seed_shop, token) == "free", what="the cancellation")
    resp = subscription_status(seed_shop, email)
    assert resp.status == 200, resp.body
    assert resp.json() == {"subscription": None}


def shop_plan(shop: Shop, token: str) -> str:
    return str(shop.billing(token)["plan"])
