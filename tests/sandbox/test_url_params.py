"""Redirect URLs the sandbox refuses as Stripe does: 400 `url_invalid` naming the parameter,
nothing created."""

from __future__ import annotations

import pytest
import stripe

from tests.sandbox.support import monthly_price

MALFORMED = [
    "http://",
    "https://",
    "https:///x",
    "https://:443/x",
    "https://exa mple.com/",
    "https://example.com/a b",
    " https://example.com/",
    "https://example.com/\x07",
    "https://example.com/\r\nx",
    "https://example.com/\x7f",
    "https://example.com:99999/",
    "https://example.com:x/",
    "https://[::1/",
    "https://ex<ample.com/",
]


def _refused(err: pytest.ExceptionInfo[stripe.InvalidRequestError], param: str) -> None:
    assert err.value.http_status == 400
    assert err.value.code == "url_invalid" and err.value.param == param
    body = err.value.json_body or {}
    assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("bad", MALFORMED)
@pytest.mark.parametrize("param", ["success_url", "cancel_url"])
def test_a_malformed_checkout_redirect_url_is_400_url_invalid(
    client: stripe.StripeClient, param: str, bad: str
) -> None:
    customer = client.v1.customers.create(params={"email": "urls@example.com"})
    params = {
        "mode": "subscription",
        "customer": customer.id,
        "line_items": [{"price": monthly_price(client).id, "quantity": 1}],
        "success_url": "https://app.example/ok",
        param: bad,
    }
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(params=params)
    _refused(err, param)
    listed = client.v1.checkout.sessions.list(params={"customer": customer.id})
    assert listed.data == []


@pytest.mark.parametrize("bad", MALFORMED)
def test_a_malformed_portal_return_url_is_400_url_invalid(
    client: stripe.StripeClient, bad: str
) -> None:
    customer = client.v1.customers.create(params={"email": "portal-urls@example.com"})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing_portal.sessions.create(
            params={"customer": customer.id, "return_url": bad}
        )
    _refused(err, "return_url")


@pytest.mark.parametrize("bad", ["https://", "https://exa mple.com/"])
def test_a_malformed_default_return_url_is_400_url_invalid(
    client: stripe.StripeClient, bad: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing_portal.configurations.create(
            params={"features": {"invoice_history": {"enabled": True}}, "default_return_url": bad}
        )
    _refused(err, "default_return_url")


@pytest.mark.parametrize(
    "good",
    [
        "https://app.example/ok?session={CHECKOUT_SESSION_ID}",
        "http://127.0.0.1:8080/back",
        "http://[::1]:8080/back",
        "https://app.example",
        "https://bücher.example/danke",
        "https://app.example/a%20b#frag",
    ],
)
def test_well_formed_redirect_urls_are_kept_as_given(
    client: stripe.StripeClient, good: str
) -> None:
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": monthly_price(client).id, "quantity": 1}],
            "success_url": good,
            "cancel_url": good,
        }
    )
    assert session.success_url == good and session.cancel_url == good
    customer = client.v1.customers.create(params={"email": "kept@example.com"})
    portal = client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "return_url": good}
    )
    assert portal.return_url == good
