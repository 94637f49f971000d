"""Two browser tabs (two Playwright pages of one Chromium) buying two plans of one subscription
group through Envoy: the second tab's checkout takes the first one's place, so the first tab's
hosted page can no longer be paid; one subscription results, one charge."""

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
