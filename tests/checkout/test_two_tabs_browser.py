"""Two browser tabs (two Playwright pages of one Chromium) buying through Envoy: two plans of one
subscription group (the second tab's checkout takes the first one's place, so the first tab's
hosted page can no longer be paid), or the same plan (both tabs get the one open session);
either way one subscription results, one charge. And a tab left open on a session that expires
meanwhile pays nothing, while buying again works."""

from __future__ import annotations

from typing import Any

import pytest

from tests.checkout.support import Shop, wait_for

pytestmark = pytest.mark.envoy


def _checkout(shop: Shop, token: str, lookup_key: str, landing: str, request_id: str) -> Any:
    created = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {
            "items": [{"lookup_key": lookup_key}],
            "success_url": landing + "?paid={CHECKOUT_SESSION_ID}",
            "cancel_url": landing + "?canceled=1",
            "request_id": request_id,
        },
        token,
    )
    assert created.status == 200, created.body
    return created.json()


def test_two_tabs_buying_two_plans_of_one_group_end_with_one_plan_and_one_charge(
    shop: Shop, browser: Any
) -> None:
    shop.price("tabs-pro", group="tabs", amount=1900)
    shop.price("tabs-team", group="tabs", amount=4900)
    token = shop.token("two-tabs-user")
    landing = f"{shop.sandbox.url}/sandbox/"
    context = browser.new_context()
    first_tab, second_tab = context.new_page(), context.new_page()
    for page in (first_tab, second_tab):
        page.set_default_timeout(30_000)
    try:
        pro = _checkout(shop, token, "tabs-pro", landing, "tab-pro")
        first_tab.goto(pro["url"])  # the first tab shows pro's card form
        team = _checkout(shop, token, "tabs-team", landing, "tab-team")
        assert team["session"]["checkout_session_id"] != pro["session"]["checkout_session_id"]
        second_tab.goto(team["url"])
        second_tab.fill("#card", "4242 4242 4242 4242")
        second_tab.click("#pay")
        second_tab.wait_for_url("**/sandbox/?paid=cs_test_*")
        # The first tab, still open on pro's form, tries to pay: pro's session expired.
        first_tab.fill("#card", "4242 4242 4242 4242")
        first_tab.click("#pay")
        first_tab.wait_for_load_state()
        assert "?paid=" not in first_tab.url
        status = wait_for(
            lambda: (b := shop.billing(token))["state"] == "SUBSCRIPTION_STATE_ACTIVE" and b,
            what="the webhook to activate the plan",
        )
        assert status["plan"] == "tabs-team"
    finally:
        context.close()
    pro_session = shop.stripe.v1.checkout.sessions.retrieve(
        pro["session"]["stripe_checkout_session_id"]
    )
    assert pro_session.status == "expired" and pro_session.payment_status == "unpaid"
    subs = shop.stripe.v1.subscriptions.list(
        params={"customer": str(pro_session.customer), "status": "all"}
    ).data
    assert len(subs) == 1
    listed = shop.request("GET", "/api/v1/billing/subscriptions", token=token).json()
    assert len(listed["subscriptions"]) == 1


def _charges_of(shop: Shop, stripe_session_id: str) -> list[Any]:
    session = shop.stripe.v1.checkout.sessions.retrieve(stripe_session_id)
    invoices = shop.stripe.v1.invoices.list(params={"customer": str(session.customer)}).data
    return [i for i in invoices if i.status == "paid"]


def test_the_same_plan_bought_in_two_tabs_each_with_its_own_request_id_is_one_charge(
    shop: Shop, browser: Any
) -> None:
    """A page that makes a new request_id per click (as the README's TypeScript example does,
    `crypto.randomUUID()`), open in two tabs: both Buy buttons get the one open session back,
    and paying it in both tabs charges once and records one subscription."""
    shop.price("same-pro", group="same", amount=1900)
    token = shop.token("same-plan-two-tabs")
    landing = f"{shop.sandbox.url}/sandbox/"
    first = _checkout(shop, token, "same-pro", landing, "click-1")
    second = _checkout(shop, token, "same-pro", landing, "click-2")
    assert second["url"] == first["url"]
    context = browser.new_context()
    tabs = [context.new_page(), context.new_page()]
    try:
        for tab, answer in zip(tabs, (first, second), strict=True):
            tab.set_default_timeout(30_000)
            tab.goto(answer["url"])
            tab.fill("#card", "4242 4242 4242 4242")
        for tab in tabs:  # both forms were shown before either was paid
            tab.click("#pay")
            tab.wait_for_url("**/sandbox/?paid=cs_test_*")
        wait_for(
            lambda: shop.billing(token)["state"] == "SUBSCRIPTION_STATE_ACTIVE",
            what="the webhook to activate the plan",
        )
    finally:
        context.close()
    stripe_id = first["session"]["stripe_checkout_session_id"]
    assert len(_charges_of(shop, stripe_id)) == 1
    listed = shop.request("GET", "/api/v1/billing/subscriptions", token=token).json()
    assert len(listed["subscriptions"]) == 1


def test_a_checkout_that_expires_while_its_tab_is_open_is_not_paid_and_buying_again_works(
    shop: Shop, browser: Any
) -> None:
    """The session expires at the provider with its page still open (its 24 hours passed):
    Pay there charges nothing, and the next Buy gets a new session, not the expired one."""
    shop.price("late-pro", group="late", amount=1900)
    token = shop.token("expired-mid-checkout")
    landing = f"{shop.sandbox.url}/sandbox/"
    stale = _checkout(shop, token, "late-pro", landing, "late-1")
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    try:
        tab.goto(stale["url"])
        stale_id = stale["session"]["stripe_checkout_session_id"]
        shop.stripe.v1.checkout.sessions.expire(stale_id)
        wait_for(
            lambda: (
                shop.request("GET", f"/api/v1/checkout/sessions/{stale_id}", token=token)
                .json()
                .get("session_status")
                == "expired"
            ),
            what="the expiry to be recorded",
        )
        tab.fill("#card", "4242 4242 4242 4242")
        tab.click("#pay")
        tab.wait_for_load_state()
        assert "?paid=" not in tab.url
        again = _checkout(shop, token, "late-pro", landing, "late-2")
        assert again["url"] != stale["url"]
        tab.goto(again["url"])
        tab.fill("#card", "4242 4242 4242 4242")
        tab.click("#pay")
        tab.wait_for_url("**/sandbox/?paid=cs_test_*")
        wait_for(
            lambda: shop.billing(token)["state"] == "SUBSCRIPTION_STATE_ACTIVE",
            what="the webhook to activate the plan",
        )
    finally:
        context.close()
    assert len(_charges_of(shop, again["session"]["stripe_checkout_session_id"])) == 1
    assert shop.stripe.v1.checkout.sessions.retrieve(stale_id).payment_status == "unpaid"
