"""Every sandbox page is sent with a strict Content-Security-Policy (no script at all, styles
from the sandbox's own stylesheet only, never framed) and the headers that go with it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from tests.sandbox.support import Receiver, monthly_price, subscribe
from tollbooth.sandbox.app import SandboxHandle


def _directives(response: httpx.Response) -> dict[str, str]:
    policy = response.headers.get("content-security-policy", "")
    pairs = (d.strip().partition(" ") for d in policy.split(";") if d.strip())
    return {name: value for name, _, value in pairs}


def _strict(response: httpx.Response) -> dict[str, str]:
    csp = _directives(response)
    assert csp.get("default-src") == "'none'", response.url
    assert csp.get("frame-ancestors") == "'none'" and csp.get("base-uri") == "'none'"
    assert "script-src" not in csp  # no script at all: default-src 'none' forbids it
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    return csp


def _pages(client: stripe.StripeClient, sandbox: SandboxHandle, receiver: Receiver) -> list[str]:
    price = monthly_price(client)
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": f"{receiver.base}/ok?s={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{receiver.base}/cancel",
        }
    )
    done, sub = subscribe(client, price.id)
    other = client.v1.prices.create(  # the same product: a switch the portal confirms
        params={
            "product": str(price.product),
            "unit_amount": 2500,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "invoice_history": {"enabled": True},
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "products": [
                        {"product": str(price.product), "prices": [price.id, other.id]},
                    ],
                },
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
    intent = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    return [
        f"{sandbox.url}/sandbox/",
        str(session.url),
        str(portal.url),
        f"{portal.url}/subscriptions/{sub.id}/switch?price={other.id}",
        f"{sandbox.url}/sandbox/invoices/{sub.latest_invoice}",
        f"{sandbox.url}/sandbox/pay/{intent.id}?client_secret={intent.client_secret}",
        f"{sandbox.url}/sandbox/back?session_id=cs_test_x",
        f"{sandbox.url}/sandbox/no-such-page",
    ]


def test_every_page_and_the_stylesheet_carry_a_strict_policy(
    client: stripe.StripeClient, sandbox: SandboxHandle, receiver: Receiver
) -> None:
    for url in _pages(client, sandbox, receiver):
        response = httpx.get(url)
        assert response.status_code in (200, 404), url
        assert response.headers["content-type"].startswith("text/html"), url
        csp = _strict(response)
        assert csp.get("style-src") == "'self'"
        assert csp.get("form-action", "").startswith("'self'")
    css = httpx.get(f"{sandbox.url}/sandbox/static/sandbox.css")
    assert css.status_code == 200
    _strict(css)


def test_the_checkout_page_may_send_its_form_on_to_the_success_url_origin_only(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    """Pay posts to the sandbox, which redirects to `success_url`: `form-action` (which a
    browser applies to that redirect too) names that origin besides the sandbox's own."""
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": monthly_price(client).id, "quantity": 1}],
            "success_url": "https://app.example:8443/ok?s={CHECKOUT_SESSION_ID}",
        }
    )
    csp = _strict(httpx.get(str(session.url)))
    assert csp["form-action"].split() == ["'self'", "https://app.example:8443"]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


def test_pages_under_the_policy_still_load_their_stylesheet_and_break_no_rule(
    client: stripe.StripeClient, sandbox: SandboxHandle, receiver: Receiver, page: Any
) -> None:
    refused: list[str] = []
    page.on("console", lambda msg: refused.append(msg.text) if msg.type == "error" else None)
    for url in _pages(client, sandbox, receiver)[:-1]:
        page.goto(url)
        banner = page.locator("#sandbox-banner")
        # The stylesheet applied: the banner's stripes come from sandbox.css only.
        assert "gradient" in banner.evaluate("e => getComputedStyle(e).backgroundImage"), url
    assert not [m for m in refused if "Content Security Policy" in m], refused
