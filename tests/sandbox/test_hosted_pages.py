"""The hosted pages in headless Chromium (Debian's package, never a downloaded browser).

Screenshots land in var/test-artifacts/. Without /usr/bin/chromium these tests skip, unless
BILLING_TEST_REQUIRE_BROWSER=1 (as in .ci/run), which makes them fail instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.conftest import ARTIFACTS
from tests.sandbox.support import Receiver, monthly_price, subscribe, wait_for
from tollbooth.sandbox.app import SandboxHandle


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


def _session(
    client: stripe.StripeClient, receiver: Receiver, amount: int
) -> stripe.checkout.Session:
    price = monthly_price(client, amount, name="Team plan")
    return client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 2}],
            "success_url": f"{receiver.base}/success?session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{receiver.base}/canceled",
            "customer_email": "browser@example.com",
        }
    )


def test_pay_on_checkout_page(
    page: Any, client: stripe.StripeClient, receiver: Receiver, sandbox: SandboxHandle
) -> None:
    session = _session(client, receiver, 1250)
    page.goto(session.url)
    assert "SANDBOX" in page.inner_text("#sandbox-banner")
    assert "SANDBOX" in page.title()
    assert "Team plan" in page.inner_text("#line-items")
    assert "25.00 USD" in page.inner_text("#total")
    page.fill("#card", "4242 4242 4242 4242")
    page.screenshot(path=str(ARTIFACTS / "checkout.png"), full_page=True)
    page.click("#pay")
    page.wait_for_url(f"{receiver.base}/success**")
    assert page.url.endswith(f"session_id={session.id}")
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.status == "complete" and done.payment_status == "paid"
    sub = client.v1.subscriptions.retrieve(str(done.subscription))
    assert sub.status == "active" and sub["items"].data[0].quantity == 2
    completed = wait_for(
        lambda: [r for r in receiver.about(session.id) if r.type == "checkout.session.completed"],
        what="signed checkout.session.completed",
    )
    assert completed[0].body["data"]["object"]["subscription"] == sub.id


def test_declining_card_on_checkout_page(
    page: Any, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = _session(client, receiver, 800)
    page.goto(session.url)
    page.fill("#card", "4000 0000 0000 0002")
    page.click("#pay")
    page.wait_for_selector("#error")
    assert "declined" in page.inner_text("#error")
    assert "SANDBOX" in page.inner_text("#sandbox-banner")
    page.screenshot(path=str(ARTIFACTS / "checkout-declined.png"), full_page=True)
    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again.status == "open" and again.subscription is None
    page.click("#cancel")
    page.wait_for_url(f"{receiver.base}/canceled")
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"


@pytest.mark.parametrize(
    "typed",
    [
        "4242 4242 4242 424\u00b2",  # a superscript two: str.isdigit, yet no int() of it
        "4242 4242 4242 4242\u00b2",  # not the test Visa with something after it
        "\uff14\uff12\uff14\uff12" * 4,  # full-width digits, not a card number Stripe reads
        "\u0664\u0662\u0664\u0662" * 4,  # Arabic-Indic digits
    ],
)
def test_a_card_number_of_other_digits_is_an_incorrect_number_not_a_500(
    page: Any, client: stripe.StripeClient, receiver: Receiver, typed: str
) -> None:
    """A card number is ASCII digits (spaces and dashes between them are dropped): anything
    else in it is Stripe's `incorrect_number` on the page and from the helper, the session
    left open; never a 500 (a superscript two was one)."""
    session = _session(client, receiver, 800)
    page.goto(session.url)
    page.fill("#card", typed)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#pay")
    assert answer.value.status == 303
    page.wait_for_selector("#error")
    assert "incorrect" in page.inner_text("#error")
    with pytest.raises(stripe.CardError) as refused:
        client.raw_request(
            "post", f"/v1/test_helpers/checkout/sessions/{session.id}/complete", card=typed
        )
    assert refused.value.code == "incorrect_number"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"


def test_cancel_on_portal_page(page: Any, client: stripe.StripeClient, receiver: Receiver) -> None:
    done, sub = subscribe(
        client,
        monthly_price(client, 2000, name="Portal plan").id,
        email="portal-browser@example.com",
    )
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "invoice_history": {"enabled": True},
                "payment_method_update": {"enabled": True},
                "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
            }
        }
    )
    portal = client.v1.billing_portal.sessions.create(
        params={
            "customer": str(done.customer),
            "configuration": config.id,
            "return_url": f"{receiver.base}/account",
        }
    )
    page.goto(portal.url)
    assert "SANDBOX" in page.inner_text("#sandbox-banner")
    assert "/sandbox/portal/" in page.url
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.number is not None and invoice.number in page.inner_text("#invoices")
    assert "Portal plan" in page.inner_text(f"#sub-{sub.id}")
    page.screenshot(path=str(ARTIFACTS / "portal.png"), full_page=True)
    page.click(f"#cancel-{sub.id}")
    page.wait_for_selector("#notice")
    assert "canceled at the end" in page.inner_text("#notice")
    assert page.locator("#cancel-notice").is_visible()
    page.screenshot(path=str(ARTIFACTS / "portal-canceled.png"), full_page=True)
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after.cancel_at_period_end is True and after.status == "active"
    wait_for(
        lambda: any(
            r.type == "customer.subscription.updated"
            and r.body["data"]["object"]["cancel_at_period_end"]
            for r in receiver.about(sub.id)
        ),
        what="subscription updated event",
    )
    page.click("#return")
    page.wait_for_url(f"{receiver.base}/account")


def test_the_portal_shows_a_cancel_at_and_its_undo_clears_it(
    page: Any, client: stripe.StripeClient, receiver: Receiver
) -> None:
    """A cancellation scheduled for any instant (`cancel_at`, set through the API) shows on the
    portal page as one at the period's end does, with its date; "Don't cancel" clears it."""
    done, sub = subscribe(
        client,
        monthly_price(client, 2000, name="Dated plan").id,
        email="portal-cancel-at@example.com",
    )
    at = int(sub["items"].data[0].current_period_start) + 10 * 86400
    client.v1.subscriptions.update(sub.id, params={"cancel_at": at})
    config = client.v1.billing_portal.configurations.create(
        params={"features": {"subscription_cancel": {"enabled": True, "mode": "at_period_end"}}}
    )
    portal = client.v1.billing_portal.sessions.create(
        params={
            "customer": str(done.customer),
            "configuration": config.id,
            "return_url": f"{receiver.base}/account",
        }
    )
    page.goto(portal.url)
    notice = page.inner_text("#cancel-notice")
    assert dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M") in notice
    page.click(f"#renew-{sub.id}")
    page.wait_for_selector("#notice")
    assert page.locator("#cancel-notice").count() == 0
    after = client.v1.subscriptions.retrieve(sub.id)
    assert (after.cancel_at, after.status) == (None, "active")
    wait_for(
        lambda: any(
            r.type == "customer.subscription.updated"
            and r.body["data"]["object"]["cancel_at"] is None
            and r.body["data"]["previous_attributes"].get("cancel_at") == at
            for r in receiver.about(sub.id)
        ),
        what="the update event clearing cancel_at",
    )


def test_paying_with_the_back_page_as_success_url_lands_on_it_with_the_session_id(
    page: Any, client: stripe.StripeClient, sandbox: SandboxHandle
) -> None:
    """The README's success and cancel URLs point at `/sandbox/back`, which answers."""
    price = monthly_price(client, 900, name="Back page plan")
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": f"{sandbox.url}/sandbox/back?checkout={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{sandbox.url}/sandbox/back?canceled=1",
            "customer_email": "back@example.com",
        }
    )
    page.goto(session.url)
    page.fill("#card", "4242 4242 4242 4242")
    page.click("#pay")
    page.wait_for_url(f"{sandbox.url}/sandbox/back**")
    assert "SANDBOX" in page.inner_text("#sandbox-banner")
    assert page.inner_text("h1") == "Back in your app"
    assert session.id in page.inner_text("#params")


def test_two_tabs_paying_one_session_pay_once_and_both_land_on_the_success_page(
    browser: Any, client: stripe.StripeClient, receiver: Receiver
) -> None:
    """The buyer opened the checkout twice and pays in both tabs: one payment, one
    subscription; the second tab's Pay (a stale form) goes to the success page too, not to a
    402 "Payment Required" for a session that is paid."""
    session = _session(client, receiver, 700)
    context = browser.new_context()
    try:
        first, second = context.new_page(), context.new_page()
        for tab in (first, second):
            tab.goto(session.url)
            tab.fill("#card", "4242 4242 4242 4242")
        first.click("#pay")
        first.wait_for_url(f"{receiver.base}/success**")
        with second.expect_navigation() as nav:
            second.click("#pay")
        answer = nav.value
        second.wait_for_url(f"{receiver.base}/success**")
        assert second.url.endswith(f"session_id={session.id}")
        assert answer is not None and answer.status < 400
    finally:
        context.close()
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.status == "complete"
    customer = str(done.customer)
    subs = client.v1.subscriptions.list(params={"customer": customer, "status": "all"}).data
    assert [s.id for s in subs] == [done.subscription]
    invoices = client.v1.invoices.list(params={"customer": customer}).data
    assert [i.status for i in invoices] == ["paid"]
    completed = wait_for(
        lambda: [r for r in receiver.about(session.id) if r.type == "checkout.session.completed"],
        what="signed checkout.session.completed",
    )
    assert len({r.body["id"] for r in completed}) == 1


def test_a_page_form_over_the_limit_is_a_413_page_not_a_500(
    client: stripe.StripeClient, receiver: Receiver, sandbox: SandboxHandle
) -> None:
    """Every POST of the hosted pages reads at most 64 KiB of form: more is a 413 page (with
    the SANDBOX banner), never a server error, and nothing is paid or changed."""
    import httpx

    session = _session(client, receiver, 600)
    big = {"card": "4242424242424242", "name": "x" * 70_000}
    for path in (
        f"/sandbox/checkout/{session.id}/pay",
        "/sandbox/portal/bps_none/payment_method",
        "/sandbox/portal/bps_none/subscriptions/sub_none/cancel",
        "/sandbox/pay/pi_none",
    ):
        r = httpx.post(sandbox.url + path, data=big, timeout=10)
        assert r.status_code == 413, (path, r.status_code)
        assert r.headers["content-type"].startswith("text/html")
        assert "SANDBOX" in r.text and "too large" in r.text
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"


def test_back_after_a_decline_then_paying_shows_the_paid_session_not_a_resubmission(
    page: Any, client: stripe.StripeClient, receiver: Receiver
) -> None:
    """Declined, then paid: Back from the success page lands on a page (the paid session),
    never on the browser's "confirm form resubmission" (a POST answer kept no-store). The
    decline still keeps the e-mail and name, never the card number."""
    session = _session(client, receiver, 650)
    page.goto(session.url)
    page.fill("#email", "back@example.com")
    page.fill("#name", "Back Button")
    page.fill("#card", "4000 0000 0000 0002")
    page.click("#pay")
    page.wait_for_selector("#error")
    assert "declined" in page.inner_text("#error")
    assert page.input_value("#email") == "back@example.com"
    assert page.input_value("#name") == "Back Button"
    assert page.input_value("#card") == ""
    page.reload()  # a reload asks nothing either, and sends nothing again
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    page.fill("#card", "4242 4242 4242 4242")
    page.click("#pay")
    page.wait_for_url(f"{receiver.base}/success**")
    page.go_back()
    assert page.url.startswith(session.url)
    assert page.inner_text("#status") == "This checkout session is complete."


def test_back_after_a_plan_switch_lands_on_a_page(client: stripe.StripeClient, page: Any) -> None:
    """The switch's confirmation is a page of its own (GET): Back after confirming shows it
    again, now saying there is nothing to change, instead of a form resubmission."""
    from tests.sandbox.support import subscribe

    product = client.v1.products.create(params={"name": "Seats"}).id
    prices = [
        client.v1.prices.create(
            params={
                "product": product,
                "unit_amount": amount,
                "currency": "usd",
                "recurring": {"interval": "month"},
                "nickname": name,
            }
        )
        for amount, name in ((1000, "small"), (3000, "large"))
    ]
    done, sub = subscribe(client, prices[0].id)
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "products": [{"product": product, "prices": [p.id for p in prices]}],
                }
            }
        }
    )
    portal = client.v1.billing_portal.sessions.create(
        params={
            "customer": str(done.customer),
            "configuration": config.id,
            "return_url": "https://app.example/account",
        }
    )
    page.goto(portal.url)
    page.select_option(f"#switch-{sub.id}", prices[1].id)
    page.click(f"#switch-button-{sub.id}")
    page.wait_for_selector("#confirm-switch")
    page.click("#confirm-switch")
    page.wait_for_selector("#notice")
    assert page.inner_text("#notice") == "Plan changed."
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after["items"].data[0].price.id == prices[1].id
    page.go_back()
    page.wait_for_selector("#notice")
    assert "current plan already" in page.inner_text("#notice")
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == prices[1].id


def test_a_refused_forms_attempt_shows_on_its_own_page_only_and_is_bounded() -> None:
    from tollbooth.sandbox.pages import Attempts

    kept = Attempts(size=2)
    token = kept.keep("cs_test_one", error="Your card was declined.", email="a@b.example", name="")
    assert kept.get("cs_test_one", token) == {
        "error": "Your card was declined.",
        "email": "a@b.example",
        "name": "",
    }
    assert kept.get("cs_test_one", token) == kept.get("cs_test_one", token)  # reload: same
    assert kept.get("cs_test_two", token) == {}  # another page's token shows nothing
    assert kept.get("cs_test_one", None) == {} and kept.get("cs_test_one", "nope") == {}
    kept.keep("pi_a", error="x")
    kept.keep("pi_b", error="y")
    assert kept.get("cs_test_one", token) == {}  # the oldest went
