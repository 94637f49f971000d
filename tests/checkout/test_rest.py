"""CheckoutService through Envoy: seed 002's shapes, the portal as the conflict answer, 400s.

And the whole flow in headless Chromium (Debian's chromium driven by Playwright): token,
catalog, checkout paid on the hosted page, the webhook, billing status active with the
credits granted, the portal, cancel at period end on the portal page, cancel_at_period_end.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.checkout.support import Shop, wait_for

pytestmark = pytest.mark.envoy


def test_billing_status_of_a_new_account_is_free_in_seed_002s_shape(shop: Shop):
    token = shop.token("rest-free")
    resp = shop.request("GET", "/api/v1/billing", token=token)
    assert resp.status == 200, resp.body
    body = resp.json()
    assert body["plan"] == "free"
    assert body["state"] == "SUBSCRIPTION_STATE_UNSPECIFIED"
    # Seed 002's free tier: null, not left out (nor false: there is no period to end).
    assert (
        body["status"],
        body["current_period_end"],
        body["current_period_end_time"],
        body["cancel_at_period_end"],
    ) == (None, None, None, None)
    # The gateway's hint header is consumed, never shown to the browser.
    assert "x-billing-json-null" not in {k.lower() for k in resp.headers}


def test_the_portal_before_any_purchase_is_400_account_not_billed(shop: Shop):
    token = shop.token("rest-unbilled")
    resp = shop.request(
        "POST", "/api/v1/portal/sessions", {"return_url": "https://app.example/"}, token
    )
    assert resp.status == 400
    assert resp.reason == "ACCOUNT_NOT_BILLED"


def test_the_portal_of_a_customer_with_an_unpaid_checkout_is_400_account_not_billed(
    shop: Shop,
):
    shop.price("rest-unpaid", group="rest-unpaid")
    token = shop.token("rest-unpaid")
    opened = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {
            "items": [{"lookup_key": "rest-unpaid", "quantity": 1}],
            "success_url": "https://app.example/ok",
            "cancel_url": "https://app.example/pricing",
        },
        token,
    )
    assert opened.status == 200, opened.body
    resp = shop.request(
        "POST", "/api/v1/portal/sessions", {"return_url": "https://app.example/"}, token
    )
    assert resp.status == 400
    assert resp.reason == "ACCOUNT_NOT_BILLED"


def test_unknown_and_archived_prices_are_400_through_envoy(shop: Shop):
    token = shop.token("rest-unknown")
    price = shop.price("rest-archived", group="rest-archived")
    shop.request(
        "POST",
        f"/mgt/v1/catalog/prices/{price['price_id']}:archive",
        {"request_id": "archive-rest-archived"},
    )
    for item, reason in (
        ({"lookup_key": "no-such-tier"}, "PRICE_NOT_FOUND"),
        ({"catalog_price_id": price["price_id"]}, "ARCHIVED"),
    ):
        resp = shop.request(
            "POST",
            "/api/v1/checkout/sessions",
            {"items": [item], "success_url": "https://app.example/ok"},
            token,
        )
        assert (resp.status, resp.reason) == (400, reason)


def test_a_second_purchase_of_a_conflicting_price_returns_the_portal(shop: Shop):
    shop.price("rest-pro", group="rest")
    shop.price("rest-team", group="rest", amount=9900)
    token = shop.token("rest-conflict")
    first = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {"items": [{"lookup_key": "rest-pro"}], "success_url": "https://app.example/ok"},
        token,
    ).json()
    assert "session" in first and "portal" not in first
    shop.stripe.raw_request(
        "post",
        f"/v1/test_helpers/checkout/sessions/{first['session']['stripe_checkout_session_id']}/complete",
    )
    wait_for(lambda: shop.billing(token)["plan"] == "rest-pro", what="the webhook")
    second = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {"items": [{"lookup_key": "rest-team"}], "success_url": "https://app.example/ok"},
        token,
    )
    assert second.status == 200
    body = second.json()
    assert "portal" in body and "session" not in body
    assert "/sandbox/portal/" in body["url"]
    assert body["portal"]["conflicting_subscription_id"].startswith("sub_")
    listed = shop.request("GET", "/api/v1/billing/subscriptions", token=token).json()
    assert [s["lookup_key"] for s in listed["subscriptions"]] == ["rest-pro"]


def test_list_purchases_shows_a_fully_refunded_purchase_as_refunded(shop: Shop):
    """Two one-time purchases of one account, the first refunded in full at the provider:
    ListPurchases keeps both (history) and gives the refunded one its refund_time, the other
    none, over gRPC and through Envoy (REST)."""
    import datetime as dt
    import uuid

    import grpc

    from billing.v1 import checkout_pb2, checkout_pb2_grpc
    from tests.checkout.test_seed_003 import one_time_price
    from tests.conftest import bearer_md

    tag = uuid.uuid4().hex[:6]
    token = shop.token(f"rest-refunds-{tag}")
    ids = []
    for key in (f"refunded-{tag}", f"kept-{tag}"):
        one_time_price(shop, key, 1500)
        created = shop.request(
            "POST",
            "/api/v1/checkout/sessions",
            {"items": [{"lookup_key": key}], "success_url": "https://app.example/ok"},
            token,
        )
        assert created.status == 200, created.body
        ids.append(created.json()["session"]["stripe_checkout_session_id"])
        shop.stripe.raw_request("post", f"/v1/test_helpers/checkout/sessions/{ids[-1]}/complete")

    def listed() -> list[dict]:  # type: ignore[type-arg]
        answer = shop.request("GET", "/api/v1/billing/purchases", token=token)
        assert answer.status == 200, answer.body
        return answer.json()["purchases"]  # type: ignore[no-any-return]

    wait_for(lambda: len(listed()) == 2, what="both purchases fulfilled")
    assert all("refund_time" not in p for p in listed())
    intent = str(shop.stripe.v1.checkout.sessions.retrieve(ids[0]).payment_intent)
    shop.stripe.v1.refunds.create(params={"payment_intent": intent})
    wait_for(
        lambda: any("refund_time" in p for p in listed()), what="charge.refunded to be applied"
    )

    by_key = {p["lookup_key"]: p for p in listed()}
    assert set(by_key) == {f"refunded-{tag}", f"kept-{tag}"}
    refunded, kept = by_key[f"refunded-{tag}"], by_key[f"kept-{tag}"]
    assert "refund_time" not in kept
    when = dt.datetime.fromisoformat(refunded["refund_time"].replace("Z", "+00:00"))
    assert when >= dt.datetime.fromisoformat(refunded["create_time"].replace("Z", "+00:00"))

    with grpc.insecure_channel(f"127.0.0.1:{shop.stack.grpc_port}") as channel:
        answer = checkout_pb2_grpc.CheckoutServiceStub(channel).ListPurchases(
            checkout_pb2.ListPurchasesRequest(), metadata=bearer_md(token), timeout=10
        )
    grpc_by_key = {p.lookup_key: p for p in answer.purchases}
    assert grpc_by_key[f"refunded-{tag}"].HasField("refund_time")
    assert grpc_by_key[f"refunded-{tag}"].refund_time.ToDatetime(dt.UTC) == when
    assert not grpc_by_key[f"kept-{tag}"].HasField("refund_time")


# -- the browser ------------------------------------------------------------------------------


def test_the_whole_flow_in_a_browser_through_envoy(shop: Shop, browser: Any):
    shop.price(
        "browser-pro",
        group="browser",
        credit_grants=[{"credit_type": "browser_calls", "amount": "5000", "on_purchase": True}],
    )
    token = shop.token("browser-user")
    products = shop.request("GET", "/api/v1/catalog/products?page_size=100", token=token).json()
    found = None
    for product in products["products"]:
        prices = shop.request(
            "GET", f"/api/v1/catalog/prices?product_id={product['product_id']}", token=token
        ).json()["prices"]
        found = next((p for p in prices if p["lookup_key"] == "browser-pro"), found)
    assert found is not None and found["hint"] == "PURCHASE_HINT_BUY"
    landing = f"{shop.sandbox.url}/sandbox/"
    created = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {
            "items": [{"catalog_price_id": found["price_id"]}],
            "success_url": landing + "?paid={CHECKOUT_SESSION_ID}",
            "cancel_url": landing + "?canceled=1",
            "request_id": "browser-buy-1",
        },
        token,
    ).json()
    assert "session" in created
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(created["url"])
        assert "SANDBOX" in page.inner_text("#sandbox-banner")
        page.fill("#card", "4242 4242 4242 4242")
        page.click("#pay")
        page.wait_for_url("**/sandbox/?paid=cs_test_*")
        status = wait_for(
            lambda: (b := shop.billing(token))["state"] == "SUBSCRIPTION_STATE_ACTIVE" and b,
            what="the webhook to activate the plan",
        )
        assert status["plan"] == "browser-pro"
        assert status["cancel_at_period_end"] is False
        balance = lambda: shop.request(  # noqa: E731
            "GET", "/api/v1/credits/balance?type=browser_calls", token=token
        ).json()["balance"]
        wait_for(lambda: balance() == "5000", what="checkout.session.completed to grant")
        portal = shop.request(
            "POST", "/api/v1/portal/sessions", {"return_url": landing + "?back=1"}, token
        )
        assert portal.status == 200, portal.body
        page.goto(portal.json()["url"])
        assert "SANDBOX" in page.inner_text("#sandbox-banner")
        sub = shop.request("GET", "/api/v1/billing/subscriptions", token=token).json()[
            "subscriptions"
        ][0]
        page.click(f"#cancel-{sub['stripe_subscription_id']}")
        page.wait_for_selector("#notice")
        assert "canceled at the end" in page.inner_text("#notice")
        after = wait_for(
            lambda: (b := shop.billing(token))["cancel_at_period_end"] and b,
            what="the webhook to record the cancellation",
        )
        assert after["state"] == "SUBSCRIPTION_STATE_ACTIVE"  # until the period ends
        assert after["plan"] == "browser-pro"
        page.click("#return")
        page.wait_for_url("**/sandbox/?back=1")
    finally:
        context.close()
    time.sleep(0)


def test_redirects_outside_the_allow_list_are_400_through_envoy_and_change_nothing(shop: Shop):
    shop.price("rest-redirect", group="rest-redirect")
    token = shop.token("rest-redirect-user")

    def provider_objects() -> tuple[int, int]:
        customers = shop.stripe.v1.customers.list(params={"limit": 100}).data
        sessions = shop.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
        return len(customers), len(sessions)

    before = provider_objects()
    not_allowed, control = "REDIRECT_URL_NOT_ALLOWED", "FIELD_INVALID"
    for field, url, reason in (
        ("success_url", "https://evil.example/ok", not_allowed),
        ("success_url", "https://app.example@evil.example/ok", not_allowed),
        ("cancel_url", "https://app.example\\@evil.example/", not_allowed),
        # A control character is refused at the edge, as in every field.
        ("success_url", "https://app.example/ok\r\nSet-Cookie: a=b", control),
        ("cancel_url", "https://app.example/\tx", control),
        ("success_url", "//evil.example/ok", not_allowed),
        ("success_url", "https://app.example:8443/ok", not_allowed),
    ):
        body = {"items": [{"lookup_key": "rest-redirect"}], "success_url": "https://app.example/ok"}
        body[field] = url
        resp = shop.request("POST", "/api/v1/checkout/sessions", body, token)
        assert (resp.status, resp.reason) == (400, reason), (url, resp.body)
    portal = shop.request(
        "POST", "/api/v1/portal/sessions", {"return_url": "https://evil.example/"}, token
    )
    assert (portal.status, portal.reason) == (400, "REDIRECT_URL_NOT_ALLOWED")
    assert provider_objects() == before  # no customer, no session at the provider


def test_checkout_and_portal_answers_carry_seed_000s_url_names(shop: Shop):
    """Seed 000 (and 002) read `checkout_url` and `portal_url`: each is the answer's `url`, and
    a conflict's `checkout_url` is the portal's (the next billing action, as seed 000 says)."""
    shop.price("rest-named-pro", group="rest-named")
    shop.price("rest-named-team", group="rest-named", amount=9900)
    token = shop.token("rest-named")
    buy = {"items": [{"lookup_key": "rest-named-pro"}], "success_url": "https://app.example/ok"}
    first = shop.request("POST", "/api/v1/checkout/sessions", buy, token).json()
    assert first["checkout_url"] == first["url"] == first["session"]["url"]
    shop.stripe.raw_request(
        "post",
        f"/v1/test_helpers/checkout/sessions/{first['session']['stripe_checkout_session_id']}/complete",
    )
    wait_for(lambda: shop.billing(token)["plan"] == "rest-named-pro", what="the webhook")
    buy["items"] = [{"lookup_key": "rest-named-team"}]
    conflict = shop.request("POST", "/api/v1/checkout/sessions", buy, token).json()
    assert conflict["checkout_url"] == conflict["url"] == conflict["portal"]["url"]
    portal = shop.request(
        "POST", "/api/v1/portal/sessions", {"return_url": "https://app.example/"}, token
    )
    assert portal.status == 200, portal.body
    assert portal.json()["portal_url"] == portal.json()["url"] != ""


def test_a_reference_stripe_cannot_hold_stays_ours_and_never_fails_the_checkout(shop: Shop):
    """Stripe's client_reference_id holds 200 characters (the sandbox refuses more, as Stripe
    does). A longer client_reference (up to the field's 1000) is kept by us, given back by
    GetCheckoutSession and the notifications, and not sent: the checkout is created, never a
    provider refusal. One within 200 reaches Stripe as it is."""
    shop.price("rest-ref", group="rest-ref")
    buy = {"items": [{"lookup_key": "rest-ref"}], "success_url": "https://app.example/ok"}
    for principal, reference, at_stripe in (
        ("rest-ref-long", "L" * 1000, None),
        ("rest-ref-short", "S" * 200, "S" * 200),
    ):
        token = shop.token(principal)
        made = shop.request(
            "POST", "/api/v1/checkout/sessions", {**buy, "client_reference": reference}, token
        )
        assert made.status == 200, made.body
        session = made.json()["session"]
        provider = shop.stripe.v1.checkout.sessions.retrieve(session["stripe_checkout_session_id"])
        assert provider.client_reference_id == at_stripe
        got = shop.request(
            "GET", f"/api/v1/checkout/sessions/{session['checkout_session_id']}", token=token
        )
        assert got.json()["client_reference"] == reference
    too_long = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {**buy, "client_reference": "x" * 1001},
        shop.token("rest-ref-too-long"),
    )
    assert (too_long.status, too_long.reason) == (400, "FIELD_INVALID")


def test_billing_status_carries_seed_002s_status(shop: Shop):
    """Seed 002's `status`: the subscription's status in Stripe's words ("active"), absent
    (null to a JSON reader) on the free plan; `state` stays beside it."""
    token = shop.token("rest-status")
    free = shop.billing(token)
    assert free["plan"] == "free" and free.get("status") is None
    shop.price("rest-status-pro", group="rest-status")
    buy = {"items": [{"lookup_key": "rest-status-pro"}], "success_url": "https://app.example/ok"}
    first = shop.request("POST", "/api/v1/checkout/sessions", buy, token).json()
    shop.stripe.raw_request(
        "post",
        f"/v1/test_helpers/checkout/sessions/{first['session']['stripe_checkout_session_id']}/complete",
    )
    paid = wait_for(
        lambda: (b := shop.billing(token))["plan"] == "rest-status-pro" and b, what="the webhook"
    )
    assert (paid["status"], paid["state"]) == ("active", "SUBSCRIPTION_STATE_ACTIVE")


def test_a_portal_without_return_url_returns_to_the_first_allowed_origin(shop: Shop):
    """Seed 002's portal request has no body: the back link is the first of
    BILLING_REDIRECT_ORIGINS (https://app.example here) instead of a 400."""
    shop.price("rest-back-pro", group="rest-back")
    token = shop.token("rest-back")
    buy = {"items": [{"lookup_key": "rest-back-pro"}], "success_url": "https://app.example/ok"}
    first = shop.request("POST", "/api/v1/checkout/sessions", buy, token).json()
    shop.stripe.raw_request(
        "post",
        f"/v1/test_helpers/checkout/sessions/{first['session']['stripe_checkout_session_id']}/complete",
    )
    wait_for(lambda: shop.billing(token)["plan"] == "rest-back-pro", what="the webhook")
    for body in (None, {}):
        portal = shop.request("POST", "/api/v1/portal/sessions", body, token)
        assert portal.status == 200, portal.body
        # (the answer's return_url is the provider's session's)
        assert portal.json()["return_url"] == "https://app.example/"


def test_seed_001s_portal_body_works_as_written(shop: Shop):
    """Seed 001 step 7, copied (a backend names the account by `accountId`, its id or alias;
    the sections' settings map to the portal's options) and answered with `sessionUrl`'s
    `session_url`."""
    shop.price("rest-seed1-pro", group="rest-seed1")
    principal = "rest-seed1"
    token = shop.token(principal)
    buy = {"items": [{"lookup_key": "rest-seed1-pro"}], "success_url": "https://app.example/ok"}
    first = shop.request("POST", "/api/v1/checkout/sessions", buy, token).json()
    shop.stripe.raw_request(
        "post",
        f"/v1/test_helpers/checkout/sessions/{first['session']['stripe_checkout_session_id']}/complete",
    )
    wait_for(lambda: shop.billing(token)["plan"] == "rest-seed1-pro", what="the webhook")
    body = {
        "accountId": principal,
        "planOverviewSettings": {"showSection": True, "allowSubscriptionCancel": False},
        "invoiceListSettings": {"showSection": True},
        "billingDetailsSettings": {"showSection": True},
    }
    portal = shop.request("POST", "/api/v1/portal/sessions", body)
    assert portal.status == 200, portal.body
    assert portal.json()["session_url"] == portal.json()["url"] != ""
    remote = shop.stripe.v1.billing_portal.configurations.list(params={"limit": 100}).data
    configured = [c for c in remote if c.to_dict()["metadata"].get("tollbooth_options")]
    (no_cancel,) = [c for c in configured if not c.features.subscription_cancel.enabled]
    assert no_cancel.features.invoice_history.enabled is True
    assert no_cancel.features.payment_method_update.enabled is True
    # Two names for one account that disagree are refused.
    both = shop.request("POST", "/api/v1/portal/sessions", {**body, "account": "someone-else"})
    assert (both.status, both.reason) == (400, "FIELD_INVALID")
    # Two names of the same account (its id and its alias) are one account, not a conflict,
    # for the backend and for the buyer's own token alike.
    account_id = shop.billing(token)["billing_account_id"]
    same = {**body, "account": account_id}
    assert shop.request("POST", "/api/v1/portal/sessions", same).status == 200
    own = shop.request("POST", "/api/v1/portal/sessions", same, token)
    assert own.status == 200, own.body
    # An id of another account beside the alias is still refused, on either surface.
    other = shop.request("POST", "/mgt/v1/token/issue", {"principal_id": "rest-seed1-other"})
    other_id = other.json()["billing_account_id"]
    for caller in (None, token):
        mixed = shop.request(
            "POST", "/api/v1/portal/sessions", {**body, "account": other_id}, caller
        )
        assert (mixed.status, mixed.reason) == (400, "FIELD_INVALID"), mixed.body


def test_a_price_bought_once_is_refused_again_through_envoy(shop: Shop):
    """Through Envoy: the second checkout of a non-stackable one-time price the account holds
    is HTTP 400 PRICE_ALREADY_PURCHASED naming the price, and the listing's hint is CURRENT."""
    import json
    import uuid

    from tests.checkout.test_seed_003 import one_time_price

    tag = uuid.uuid4().hex[:6]
    price = one_time_price(shop, f"once-{tag}", 1500)
    token = shop.token(f"rest-once-{tag}")
    buy = {"items": [{"lookup_key": f"once-{tag}"}], "success_url": "https://app.example/ok"}
    first = shop.request("POST", "/api/v1/checkout/sessions", buy, token)
    assert first.status == 200, first.body
    stripe_id = first.json()["session"]["stripe_checkout_session_id"]
    shop.stripe.raw_request("post", f"/v1/test_helpers/checkout/sessions/{stripe_id}/complete")
    listing = f"/api/v1/catalog/prices?product_id={price['product_id']}"
    wait_for(
        lambda: (
            shop.request("GET", listing, token=token).json()["prices"][0]["hint"]
            == "PURCHASE_HINT_CURRENT"
        ),
        what="the purchase",
    )
    again = shop.request("POST", "/api/v1/checkout/sessions", buy, token)
    assert (again.status, again.reason) == (400, "PRICE_ALREADY_PURCHASED"), again.body
    assert price["price_id"] in json.dumps(again.json())


def test_a_blank_account_id_is_field_required_naming_account_id(shop: Shop):
    """A backend's seed 001 body with `"accountId": ""` was refused naming `account`, a field
    the body never had; the refusal names the field the body sent (`account_id`, its proto
    name, as every error names a field), on the portal and on checkout alike. A body naming
    neither still names `account`."""
    shop.price("rest-blank-account", group="rest-blank-account")
    portal = {"return_url": "https://app.example/"}
    buy = {"items": [{"lookup_key": "rest-blank-account"}], "success_url": "https://app.example/"}
    for path, body in (("/api/v1/portal/sessions", portal), ("/api/v1/checkout/sessions", buy)):
        for names, field in (
            ({"accountId": ""}, "account_id"),
            ({"account_id": "  "}, "account_id"),
            ({"account": ""}, "account"),
            ({}, "account"),
        ):
            resp = shop.request("POST", path, {**body, **names})
            assert (resp.status, resp.reason) == (400, "FIELD_REQUIRED"), (path, resp.body)
            [info] = [d for d in resp.json()["details"] if d["@type"].endswith("ErrorInfo")]
            assert info["metadata"]["field"] == field, (path, names, resp.body)


def test_seed_003s_quantity_not_a_whole_number_is_400_and_never_rounded(shop: Shop):
    """`"quantity": 2.9999999999999999` was read by Envoy's transcoder as the double 3.0: a
    checkout of three was opened for it. A count is exact: refused, nothing created."""
    shop.price("rest-frac-qty", group="rest-frac-qty", stackable=True)
    token = shop.token("rest-frac-qty")
    before = len(shop.stripe.v1.checkout.sessions.list(params={"limit": 100}).data)
    raw = (
        b'{"line_items": [{"price": "rest-frac-qty", "quantity": 2.9999999999999999}],'
        b' "mode": "subscription", "success_url": "https://app.example/ok",'
        b' "cancel_url": "https://app.example/no"}'
    )
    resp = shop.request("POST", "/api/v1/checkout/sessions", raw, token)
    assert (resp.status, resp.reason) == (400, "MALFORMED_REQUEST"), resp.body
    assert resp.json()["details"][0]["metadata"]["field"] == "line_items.quantity"
    after = len(shop.stripe.v1.checkout.sessions.list(params={"limit": 100}).data)
    assert after == before
