"""Seed 001's and seed 003's requests exactly as the documents write them, through Envoy with
the sandbox, on PostgreSQL when it is configured: only the path and the auth headers are
translated (seed 003's four keys are the service key; where it sends a bearer token too, both
are sent), and the answers are checked against the shapes the documents show (snake_case names
in our JSON, as README's "JSON on the wire" says). The seeds' own URLs
(`https://yourapp.com/...`) are allowed redirect origins here, so even they are copied. Their
hostile variants are in test_seed_hostile.py."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.checkout.support import Shop, start_shop, wait_for
from tests.conftest import PG_ENV, SERVICE_KEY
from tests.devstack import throwaway_postgres

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module")
def seed_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """A shop of its own (the portal's configuration lists every synced product, so no other
    module's products made against other sandboxes), on a PostgreSQL database of its own when
    one is configured (else SQLite), accepting the seeds' URLs."""
    admin = os.environ.get(PG_ENV, "").strip()
    tmp = tmp_path_factory.mktemp("seed-verbatim")
    with contextlib.ExitStack() as scope:
        url = (
            scope.enter_context(throwaway_postgres(admin, "tollbooth_verbatim")) if admin else None
        )
        s = start_shop(
            tmp,
            url,
            BILLING_REDIRECT_ORIGINS="https://yourapp.com,https://app.example",
            BILLING_RATE_LIMIT_SESSION_CREATES="off",
        )
        scope.callback(s.close)
        yield s


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
        # "Optional: Check Credit Availability", the seed's answer exactly.
        resp = seed_shop.request(
            "GET", f"/mgt/v1/accounts/{ref}/credits/availability?type=units&required=10"
        )
        assert resp.status == 200, resp.body
        assert resp.json() == {
            "available": True,
            "balance": "50",
            "required": "10",
            "shortfall": "0",
        }


def test_seed_001_usage_event_as_written_is_accepted_once(seed_shop: Shop):
    """Step 6's event as written (`account` the account's id, then its alias: "Alguna account
    ID or your internal ID"): accepted, then a duplicate by its `uniqueId`; without `uniqueId`
    ("No" in the seed's table) and with the seed's `"isTrial": true` property it is accepted
    too, and counted once when sent again; the events are there to be aggregated."""
    alias = f"your-internal-id-{uuid.uuid4().hex[:8]}"
    made = seed_shop.request("POST", "/mgt/v1/accounts", {"name": "Acme Corp", "alias": alias})
    assert made.status == 200, made.body
    account = made.json()["id"]
    metric = seed_shop.request(
        "POST",
        f"/mgt/v1/metrics?request_id={uuid.uuid4().hex}",
        {
            "code": f"tokens_{uuid.uuid4().hex[:6]}",
            "event_name": "api_call",
            "aggregation": "AGGREGATION_SUM",
            "property": "tokens",
        },
    )
    assert metric.status == 200, metric.body
    unique = f"evt_{uuid.uuid4().hex[:6]}"
    for ref, n in ((account, 0), (alias, 1)):
        event = {
            "uniqueId": f"{unique}{n}",
            "account": ref,
            "eventName": "api_call",
            "timestamp": "2025-03-09T15:03:17Z",
            "properties": {"endpoint": "/v1/analyze", "tokens": 1500},
        }
        for expected in ("EVENT_STATUS_ACCEPTED", "EVENT_STATUS_DUPLICATE"):
            resp = seed_shop.request("POST", "/mgt/v1/events", event)
            assert resp.status == 200, resp.body
            assert (resp.json()["unique_id"], resp.json()["status"]) == (f"{unique}{n}", expected)
    trial = {
        "account": alias,
        "eventName": "api_call",
        "timestamp": "2025-03-09T15:03:18Z",
        "properties": {"endpoint": "/v1/analyze", "tokens": 1500, "isTrial": True},
    }
    first = seed_shop.request("POST", "/mgt/v1/events", trial)
    again = seed_shop.request("POST", "/mgt/v1/events", trial)
    assert (first.status, again.status) == (200, 200), (first.body, again.body)
    assert first.json()["status"] == "EVENT_STATUS_ACCEPTED"
    assert again.json() == {**first.json(), "status": "EVENT_STATUS_DUPLICATE"}
    usage = seed_shop.request(
        "GET",
        f"/mgt/v1/accounts/{alias}/usage?metric_code={metric.json()['code']}"
        "&start_time=2025-03-09T00:00:00Z&end_time=2025-03-10T00:00:00Z",
    )
    assert usage.status == 200, usage.body
    assert usage.json()["value"] == "4500"


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
    # The buyer's token, a backend's key, and both as seed 003 sends them.
    for headers in (
        {"authorization": f"Bearer {token}"},
        {"x-api-key": SERVICE_KEY},
        {"authorization": f"Bearer {token}", "x-api-key": SERVICE_KEY},
    ):
        resp = seed_shop.stack.request("POST", "/api/v1/portal/sessions", body, headers)
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
    # Seed 003's fields, by its names and JSON types (its tenantId has no counterpart here:
    # one company runs the deployment; README says so).
    assert sub["id"].startswith("sub_")
    assert sub["planId"].startswith("price_")
    assert sub["status"] == "active"
    assert sub["currentPeriodEnd"].endswith("Z")
    assert sub["stripeSubscriptionId"].startswith("sub_")
    assert sub["cancelAtPeriodEnd"] is False
    assert isinstance(sub["plan"]["name"], str) and sub["plan"]["name"]
    seed_shop.stripe.v1.subscriptions.cancel(sub["stripeSubscriptionId"])
    wait_for(lambda: shop_plan(seed_shop, token) == "free", what="the cancellation")
    resp = subscription_status(seed_shop, email)
    assert resp.status == 200, resp.body
    assert resp.json() == {"subscription": None}


def shop_plan(shop: Shop, token: str) -> str:
    return str(shop.billing(token)["plan"])


def seed_003_headers(token: str) -> dict[str, str]:
    """Seed 003's headers translated: its bearer token and the service key for its four keys."""
    return {"authorization": f"Bearer {token}", "x-api-key": SERVICE_KEY}


def one_time_price(shop: Shop, lookup_key: str, amount: int) -> str:
    product = shop.request(
        "POST", f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}", {"name": "Ebook"}
    )
    assert product.status == 200, product.body
    price = shop.request(
        "POST",
        f"/mgt/v1/catalog/prices?request_id={uuid.uuid4().hex}",
        {
            "product_id": product.json()["product_id"],
            "currency": "usd",
            "unit_amount": amount,
            "type": "PRICE_TYPE_ONE_TIME",
            "lookup_key": lookup_key,
        },
    )
    assert price.status == 200, price.body
    return str(price.json()["price_id"])


def checkout_status(shop: Shop, headers: dict[str, str], cs_id: str) -> tuple[str, str]:
    """Seed 003's "Get Checkout Session Status", its URL as written (by Stripe's id)."""
    resp = shop.stack.request(
        "GET", f"/api/v1/checkout/sessions/{cs_id}?environment=test", None, headers
    )
    assert resp.status == 200, resp.body
    return resp.json()["session_status"], resp.json()["session_payment_status"]


@pytest.mark.parametrize("mode", ["payment", "subscription"])
def test_seed_003_checkout_with_its_headers_and_urls_as_written(seed_shop: Shop, mode: str):
    """ "Create Checkout Session" as written: both headers (the bearer token and the key),
    `?environment=test`, the seed's own URLs and e-mail, `price` the provider's price id; the
    session's status by Stripe's `cs_...` id, with the same headers, is open and unpaid, then
    complete and paid once the provider says so."""
    shop = seed_shop
    lookup = f"seed3-{mode}-{uuid.uuid4().hex[:6]}"
    if mode == "payment":
        price_id = one_time_price(shop, lookup, 2999)
    else:
        price_id = shop.price(lookup, group=lookup, amount=2999)["price_id"]
    # The catalog price is linked to the provider at its first checkout (anyone's).
    first = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {"line_items": [{"price": price_id}], "mode": mode},
        shop.token(f"seed3-first-{uuid.uuid4().hex[:6]}"),
    )
    assert first.status == 200, first.body
    stripe_price = shop.request("GET", f"/mgt/v1/catalog/prices/{price_id}").json()[
        "stripe_price_id"
    ]
    assert stripe_price.startswith("price_") and stripe_price != price_id

    headers = seed_003_headers(shop.token(f"seed3-buyer-{uuid.uuid4().hex[:6]}"))
    body = {
        "line_items": [{"price": stripe_price, "quantity": 1}],
        "mode": mode,
        "success_url": "https://yourapp.com/success",
        "cancel_url": "https://yourapp.com/cancel",
        "customer_email": "customer@example.com",
    }
    made = shop.stack.request("POST", "/api/v1/checkout/sessions?environment=test", body, headers)
    assert made.status == 200, made.body
    got = made.json()
    session = got["session"]
    assert got["url"] == session["url"] and "/sandbox/checkout/cs_test_" in got["url"]
    assert session["mode"] == f"CHECKOUT_MODE_{mode.upper()}"
    assert (session["amount_total"], session["currency"]) == ("2999", "usd")
    assert [(i["catalog_price_id"], i["quantity"]) for i in session["items"]] == [(price_id, 1)]
    cs_id = session["stripe_checkout_session_id"]
    remote = shop.stripe.v1.checkout.sessions.retrieve(cs_id)
    assert (remote.mode, remote.success_url, remote.cancel_url) == (
        mode,
        "https://yourapp.com/success",
        "https://yourapp.com/cancel",
    )
    assert isinstance(remote.customer, str)
    assert shop.stripe.v1.customers.retrieve(remote.customer).email == "customer@example.com"
    assert checkout_status(shop, headers, cs_id) == ("open", "unpaid")

    shop.stripe.raw_request("post", f"/v1/test_helpers/checkout/sessions/{cs_id}/complete")
    wait_for(
        lambda: checkout_status(shop, headers, cs_id) == ("complete", "paid"),
        what="checkout.session.completed",
    )


def test_seed_003_payment_intent_with_its_headers_as_written(seed_shop: Shop):
    """ "Create Payment Intent" as written, both headers: the answer includes the seed's
    `client_secret`, `payment_intent_id` and `status`; the provider's intent carries the
    seed's amount, currency, description and receipt e-mail."""
    shop = seed_shop
    token = shop.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": f"seed3-payer-{uuid.uuid4().hex[:6]}", "scopes": ["payments"]},
    ).json()["access_token"]
    body = {
        "amount": 2999,
        "currency": "usd",
        "description": "Purchase from YourApp",
        "receipt_email": "customer@example.com",
    }
    resp = shop.stack.request("POST", "/api/v1/payment/intents", body, seed_003_headers(token))
    assert resp.status == 200, resp.body
    got = resp.json()
    assert got["payment_intent_id"].startswith("pay_")
    assert got["client_secret"].startswith(got["stripe_payment_intent_id"] + "_secret_")
    assert got["status"] == "PAYMENT_INTENT_STATUS_REQUIRES_PAYMENT_METHOD"
    remote = shop.stripe.v1.payment_intents.retrieve(got["stripe_payment_intent_id"])
    assert (remote.amount, remote.currency, remote.description, remote.receipt_email) == (
        2999,
        "usd",
        "Purchase from YourApp",
        "customer@example.com",
    )
    assert remote.client_secret == got["client_secret"]
