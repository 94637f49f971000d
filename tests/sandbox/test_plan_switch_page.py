"""The portal's plan switch in headless Chromium: it offers the prices of the subscription's
group only (the catalog's `tollbooth_subscription_group` price metadata), the current one
selected, and changes nothing until the buyer confirms. The checkout page labels each line
with the price's nickname or lookup key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.sandbox.support import subscribe

GROUP = "tollbooth_subscription_group"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


def _price(client: stripe.StripeClient, product: str, amount: int, group: str, **extra: Any) -> Any:
    return client.v1.prices.create(
        params={
            "product": product,
            "unit_amount": amount,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "metadata": {GROUP: group},
            **extra,
        }
    )


def test_the_switch_lists_the_group_only_with_the_current_selected_and_asks_first(
    client: stripe.StripeClient, page: Any
) -> None:
    product = client.v1.products.create(params={"name": "Plans"}).id
    basic = _price(client, product, 1000, "seats", nickname="basic")
    pro = _price(
        client, product, 2500, "seats", metadata={GROUP: "seats", "tollbooth_lookup_key": "pro"}
    )
    storage = _price(client, product, 500, "storage", nickname="storage-10gb")
    done, sub = subscribe(client, basic.id)
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "products": [{"product": product, "prices": [basic.id, pro.id, storage.id]}],
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
    select = f"#switch-{sub.id}"
    offered = page.eval_on_selector_all(f"{select} option", "os => os.map(o => o.value)")
    assert sorted(offered) == sorted([basic.id, pro.id])  # not the storage group's price
    assert page.input_value(select) == basic.id  # the current plan is selected
    labels = page.inner_text(select)
    assert "(basic)" in labels and "(pro)" in labels

    page.select_option(select, pro.id)
    page.click(f"#switch-button-{sub.id}")
    page.wait_for_selector("#confirm-switch")
    summary = page.inner_text("#confirm-summary")
    assert "basic" in summary and "pro" in summary
    after_asking = client.v1.subscriptions.retrieve(sub.id)
    assert after_asking["items"].data[0].price.id == basic.id  # nothing until confirmed
    page.click("#confirm-switch")
    page.wait_for_selector("#notice")
    assert "Plan changed" in page.inner_text("#notice")
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == pro.id
    assert page.input_value(select) == pro.id


def test_a_price_of_another_group_is_refused_even_when_posted(
    client: stripe.StripeClient, page: Any
) -> None:
    import httpx

    product = client.v1.products.create(params={"name": "Plans"}).id
    basic = _price(client, product, 1000, "seats")
    storage = _price(client, product, 500, "storage")
    done, sub = subscribe(client, basic.id)
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "products": [{"product": product, "prices": [basic.id, storage.id]}],
                }
            }
        }
    )
    url = client.v1.billing_portal.sessions.create(
        params={
            "customer": str(done.customer),
            "configuration": config.id,
            "return_url": "https://app.example/account",
        }
    ).url
    for data in ({"price": storage.id}, {"price": storage.id, "confirm": "yes"}):
        resp = httpx.post(f"{url}/subscriptions/{sub.id}/switch", data=data)
        assert resp.status_code == 303 and "error=" in resp.headers["location"]
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == basic.id


def test_checkout_lines_show_the_price_nickname_or_lookup_key(
    client: stripe.StripeClient, page: Any
) -> None:
    product = client.v1.products.create(params={"name": "Team plan"}).id
    named = _price(client, product, 1000, "team", nickname="team-monthly")
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": named.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
        }
    )
    page.goto(str(session.url))
    line = page.inner_text("#line-items tbody tr")
    assert "Team plan" in line and "(team-monthly)" in line


def test_a_switch_from_a_tab_left_open_after_cancelling_in_another_asks_nothing(
    client: stripe.StripeClient, browser: Any
) -> None:
    """Two tabs on one portal: the first cancels the subscription now; the second, still
    showing it, asks to switch plan. No confirmation of a switch that cannot happen: the
    portal again, saying the subscription is canceled (not that the price is not offered),
    and nothing changed."""
    product = client.v1.products.create(params={"name": "Plans"}).id
    basic = _price(client, product, 1000, "seats", nickname="basic")
    pro = _price(client, product, 2500, "seats", nickname="pro")
    done, sub = subscribe(client, basic.id)
    config = client.v1.billing_portal.configurations.create(
        params={
            "features": {
                "subscription_cancel": {"enabled": True, "mode": "immediately"},
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "products": [{"product": product, "prices": [basic.id, pro.id]}],
                },
            }
        }
    )
    url = client.v1.billing_portal.sessions.create(
        params={
            "customer": str(done.customer),
            "configuration": config.id,
            "return_url": "https://app.example/account",
        }
    ).url
    context = browser.new_context()
    try:
        first, second = context.new_page(), context.new_page()
        first.goto(url)
        second.goto(url)
        first.click(f"#cancel-{sub.id}")
        first.wait_for_selector("#notice")
        assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"

        second.select_option(f"#switch-{sub.id}", pro.id)
        second.click(f"#switch-button-{sub.id}")
        second.wait_for_load_state()
        assert second.locator("#confirm-switch").count() == 0
        assert "canceled" in second.inner_text("#error")
        after = client.v1.subscriptions.retrieve(sub.id)
        assert after.status == "canceled" and after["items"].data[0].price.id == basic.id
    finally:
        context.close()
