"""Non-ASCII e-mail addresses on the sandbox's hosted pages, in Chromium through Envoy.

The billing service takes an internationalised address (`zoë@exämple.com`, RFC 6531) as an
account's e-mail, and the sandbox prefills it on its checkout page. A browser's
`<input type=email>` refuses a non-ASCII local part, so that buyer could not pay with the
address the page itself had filled in. The page checks the address itself: any script works,
a malformed one gets the page's own error, never a 500.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.checkout.support import SCOPES, Shop, wait_for

pytestmark = pytest.mark.envoy

ZOE = "zoë@exämple.com"


def _buyer(shop: Shop, email: str = "") -> str:
    resp = shop.request(
        "POST",
        "/mgt/v1/token/issue",
        {
            "principal_id": f"email-{uuid.uuid4().hex[:8]}",
            "user_id": "u1",
            "scopes": SCOPES,
            **({"email": email} if email else {}),
        },
    )
    assert resp.status == 200, resp.body
    return str(resp.json()["access_token"])


def _checkout(shop: Shop, token: str, lookup_key: str) -> dict[str, Any]:
    landing = f"{shop.sandbox.url}/sandbox/"
    created = shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {
            "items": [{"lookup_key": lookup_key}],
            "success_url": landing + "?paid={CHECKOUT_SESSION_ID}",
            "cancel_url": landing + "?canceled=1",
            "request_id": uuid.uuid4().hex,
        },
        token,
    )
    assert created.status == 200, created.body
    return created.json()  # type: ignore[no-any-return]


@pytest.fixture
def page(browser: Any) -> Any:
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def test_a_buyer_whose_account_e_mail_is_not_ascii_pays_on_the_checkout_page(
    shop: Shop, page: Any
) -> None:
    shop.price("idn-pro", group="idn", amount=1900)
    token = _buyer(shop, ZOE)
    made = _checkout(shop, token, "idn-pro")
    page.goto(made["url"])
    assert page.input_value("#email") == ZOE  # the account's own address, prefilled
    page.fill("#card", "4242 4242 4242 4242")
    page.click("#pay")
    page.wait_for_url("**/sandbox/?paid=cs_test_*")
    status = wait_for(
        lambda: (b := shop.billing(token))["state"] == "SUBSCRIPTION_STATE_ACTIVE" and b,
        what="the webhook to activate the plan",
    )
    assert status["plan"] == "idn-pro"
    paid = shop.stripe.v1.checkout.sessions.retrieve(made["session"]["stripe_checkout_session_id"])
    assert paid.customer_details is not None and paid.customer_details.email == ZOE


def test_a_typed_idn_address_is_kept_as_typed(shop: Shop, page: Any) -> None:
    shop.price("idn-typed", group="idn-typed", amount=1900)
    token = _buyer(shop)
    made = _checkout(shop, token, "idn-typed")
    page.goto(made["url"])
    page.fill("#email", "用户@例子.广告")
    page.fill("#card", "4242 4242 4242 4242")
    page.click("#pay")
    page.wait_for_url("**/sandbox/?paid=cs_test_*")
    paid = shop.stripe.v1.checkout.sessions.retrieve(made["session"]["stripe_checkout_session_id"])
    assert paid.customer_details is not None and paid.customer_details.email == "用户@例子.广告"


def test_a_malformed_address_gets_the_page_s_error_and_pays_nothing(shop: Shop, page: Any) -> None:
    shop.price("idn-bad", group="idn-bad", amount=1900)
    token = _buyer(shop)
    made = _checkout(shop, token, "idn-bad")
    page.goto(made["url"])
    page.fill("#email", "zoë at exämple")
    page.fill("#card", "4242 4242 4242 4242")
    page.click("#pay")
    page.wait_for_selector("#error")
    assert "e-mail address" in page.inner_text("#error")
    assert page.input_value("#email") == "zoë at exämple"  # kept to correct
    stripe_id = made["session"]["stripe_checkout_session_id"]
    assert shop.stripe.v1.checkout.sessions.retrieve(stripe_id).status == "open"


def test_a_form_not_sent_as_utf8_is_a_clear_400(shop: Shop) -> None:
    """A client posting Latin-1 bytes (`zo\\xeb@...`): the page says so, not a card error."""
    shop.price("idn-latin1", group="idn-latin1", amount=1900)
    made = _checkout(shop, _buyer(shop), "idn-latin1")
    stripe_id = made["session"]["stripe_checkout_session_id"]
    answer = httpx.post(
        f"{shop.sandbox.url}/sandbox/checkout/{stripe_id}/pay",
        content="email=zoë@exämple.com&card=4242424242424242".encode("latin-1"),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400
    assert "UTF-8" in answer.text and "SANDBOX" in answer.text
    assert shop.stripe.v1.checkout.sessions.retrieve(stripe_id).status == "open"
