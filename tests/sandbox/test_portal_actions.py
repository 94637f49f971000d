"""Portal page actions over plain HTTP (the browser test covers the page itself)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from tests.sandbox.support import Receiver, monthly_price, subscribe, wait_for
from tollbooth.sandbox.app import SandboxHandle

DAY = 86400


def _portal(client: stripe.StripeClient, customer: str, features: dict[str, Any]) -> str:
    config = client.v1.billing_portal.configurations.create(params={"features": features})
    return client.v1.billing_portal.sessions.create(
        params={
            "customer": customer,
            "configuration": config.id,
            "return_url": "https://app.example/account",
        }
    ).url


def _post(url: str, data: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url, data=data or {}, follow_redirects=False)


def test_cancel_immediately_when_configured(client: stripe.StripeClient) -> None:
    done, sub = subscribe(client, monthly_price(client).id)
    url = _portal(
        client,
        str(done.customer),
        {"subscription_cancel": {"enabled": True, "mode": "immediately"}},
    )
    page = httpx.get(url)
    assert page.status_code == 200 and "SANDBOX" in page.text and "Cancel now" in page.text
    response = _post(f"{url}/subscriptions/{sub.id}/cancel")
    assert response.status_code == 303 and "notice=" in response.headers["location"]
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"


def test_cancel_refused_when_not_enabled(client: stripe.StripeClient) -> None:
    done, sub = subscribe(client, monthly_price(client).id)
    url = _portal(client, str(done.customer), {"invoice_history": {"enabled": True}})
    assert "Cancel" not in httpx.get(url).text
    response = _post(f"{url}/subscriptions/{sub.id}/cancel")
    assert "error=" in response.headers["location"]
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_another_customers_subscription_is_not_reachable(client: stripe.StripeClient) -> None:
    _, theirs = subscribe(client, monthly_price(client).id, email="them@example.com")
    mine, _ = subscribe(client, monthly_price(client).id, email="me@example.com")
    url = _portal(
        client,
        str(mine.customer),
        {"subscription_cancel": {"enabled": True, "mode": "immediately"}},
    )
    response = _post(f"{url}/subscriptions/{theirs.id}/cancel")
    assert "error=" in response.headers["location"]
    assert client.v1.subscriptions.retrieve(theirs.id).status == "active"
    assert theirs.id not in httpx.get(url).text


def test_switch_price_within_configured_products(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    basic = monthly_price(client, 1000, name="Basic")
    pro = client.v1.prices.create(
        params={
            "product": str(basic.product),
            "unit_amount": 2500,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    stranger = monthly_price(client, 9900, name="Not offered")
    done, sub = subscribe(client, basic.id)
    url = _portal(
        client,
        str(done.customer),
        {
            "subscription_update": {
                "enabled": True,
                "default_allowed_updates": ["price"],
                "products": [{"product": str(basic.product), "prices": [basic.id, pro.id]}],
            }
        },
    )
    assert pro.id in httpx.get(url).text and stranger.id not in httpx.get(url).text
    refused = _post(f"{url}/subscriptions/{sub.id}/switch", {"price": stranger.id})
    assert "error=" in refused.headers["location"]
    asked = _post(f"{url}/subscriptions/{sub.id}/switch", {"price": pro.id})
    assert asked.status_code == 200 and 'id="confirm-switch"' in asked.text
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == basic.id
    switched = _post(f"{url}/subscriptions/{sub.id}/switch", {"price": pro.id, "confirm": "yes"})
    assert "notice=" in switched.headers["location"]
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after["items"].data[0].price.id == pro.id
    wait_for(
        lambda: any(
            r.type == "customer.subscription.updated"
            and r.body["data"]["object"]["items"]["data"][0]["price"]["id"] == pro.id
            for r in receiver.about(sub.id)
        )
    )


def test_new_card_pays_the_open_invoice_and_restores_active(
    client: stripe.StripeClient, sandbox: SandboxHandle
) -> None:
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": 1_767_225_600})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    _, sub = subscribe(
        client, monthly_price(client).id, customer=customer.id, card="4000000000000341"
    )
    client.v1.test_helpers.test_clocks.advance(
        clock.id, params={"frozen_time": sub["items"].data[0].current_period_end + 60}
    )
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    url = _portal(client, customer.id, {"payment_method_update": {"enabled": True}})
    declined = _post(f"{url}/payment_method", {"card": "4000 0000 0000 0002"})
    assert "error=" in declined.headers["location"]
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    ok = _post(f"{url}/payment_method", {"card": "4242 4242 4242 4242"})
    assert "notice=" in ok.headers["location"]
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after.status == "active"
    assert client.v1.invoices.retrieve(str(after.latest_invoice)).status == "paid"
    pm = client.v1.payment_methods.retrieve(str(after.default_payment_method))
    assert pm.card is not None and pm.card.last4 == "4242"


def test_unknown_pages_are_404_and_marked_sandbox(sandbox: SandboxHandle) -> None:
    for path in ("/sandbox/portal/bps_nope", "/sandbox/checkout/cs_test_nope", "/sandbox/nope"):
        response = httpx.get(f"{sandbox.url}{path}")
        assert response.status_code == 404 and "SANDBOX" in response.text, path


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "ftp://x.example/"])
def test_redirect_urls_must_be_http(client: stripe.StripeClient, bad: str) -> None:
    price = monthly_price(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "line_items": [{"price": price.id, "quantity": 1}],
                "success_url": bad,
            }
        )
    assert err.value.param == "success_url"


def test_the_portal_shows_only_messages_of_its_own_never_text_from_the_url(
    client: stripe.StripeClient,
) -> None:
    """`?error=` and `?notice=` carry a code the sandbox chose, shown as its fixed text; any
    other value (attacker-chosen text in a link to our page) shows nothing."""
    done, sub = subscribe(client, monthly_price(client).id)
    url = _portal(client, str(done.customer), {"invoice_history": {"enabled": True}})
    planted = "Your account is locked: call +1 555 0100 now"
    for name in ("error", "notice"):
        page = httpx.get(url, params={name: planted})
        assert page.status_code == 200
        assert "555 0100" not in page.text and f'id="{name}"' not in page.text
    refused = _post(f"{url}/subscriptions/{sub.id}/cancel")
    location = refused.headers["location"]
    shown = httpx.get(httpx.URL(url).join(location))
    assert 'id="error"' in shown.text and "not enabled" in shown.text
    code = httpx.URL(location).params["error"]
    assert code.isascii() and " " not in code  # a code, not the text itself
