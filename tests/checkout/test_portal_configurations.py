"""Portal configurations at the provider: ours is found again however many others the Stripe
account holds (every page of the listing, not the first 100), and the plan switch lists at most
the 10 products Stripe allows, those the account holds first. Over real gRPC against the
sandbox, which refuses more than 10 products as Stripe does."""

from __future__ import annotations

import time

import pytest
import stripe

from billing.v1 import catalog_pb2, checkout_pb2
from tests.checkout.support import World
from tests.conftest import SERVICE_MD, bearer_md
from tollbooth.provider.client import StripeProvider

FEATURES = {"invoice_history": {"enabled": True}}


def ours(world: World) -> list[str]:
    listing = world.stripe.v1.billing_portal.configurations.list(params={"limit": 100})
    return [
        c.id for c in listing.auto_paging_iter() if c.to_dict()["metadata"].get("tollbooth_options")
    ]


def test_a_configuration_past_the_first_page_is_found_again_not_made_twice(world: World):
    first = StripeProvider("sk_test_x", world.sandbox.url).portal_configuration(FEATURES)
    for _ in range(100):  # another integration's configurations, all newer than ours
        world.stripe.v1.billing_portal.configurations.create(
            params={"features": {"invoice_history": {"enabled": False}}}
        )
    store = world.sandbox.app.state.store
    with store.tx() as tx:  # a day later: the create's idempotency key is gone
        tx.forget_idempotency_before(time.time() + 1)
    # Another replica, or this one restarted: nothing in memory.
    again = StripeProvider("sk_test_x", world.sandbox.url).portal_configuration(FEATURES)
    assert again == first
    assert ours(world) == [first]


def test_the_sandbox_refuses_more_than_ten_plan_switch_products_as_stripe_does(world: World):
    products = [world.stripe.v1.products.create(params={"name": f"p{n}"}).id for n in range(11)]
    prices = [
        world.stripe.v1.prices.create(
            params={
                "product": p,
                "currency": "usd",
                "unit_amount": 100,
                "recurring": {"interval": "month"},
            }
        ).id
        for p in products
    ]
    entries = [{"product": p, "prices": [q]} for p, q in zip(products, prices, strict=True)]
    update = {"enabled": True, "default_allowed_updates": ["price"], "products": entries}
    with pytest.raises(stripe.InvalidRequestError) as err:
        world.stripe.v1.billing_portal.configurations.create(
            params={"features": {"subscription_update": update}}  # type: ignore[typeddict-item]
        )
    assert err.value.param == "features[subscription_update][products]"
    update["products"] = entries[:10]
    world.stripe.v1.billing_portal.configurations.create(
        params={"features": {"subscription_update": update}}  # type: ignore[typeddict-item]
    )


def test_the_plan_switch_lists_ten_products_the_held_one_among_them(world: World):
    """Twelve plans of one group, each its own product, the account holding the last: the
    portal opens (Stripe takes at most 10 products), listing the held plan and nine others."""
    plans = [world.price(f"tier{n}", group="plan", amount=1000 + n) for n in range(12)]
    token, _ = world.token()
    world.pay(world.buy(token, "tier11").session.stripe_checkout_session_id)
    world.settled()
    portal = world.checkout.CreatePortalSession(
        checkout_pb2.CreatePortalSessionRequest(return_url="https://app.example/account"),
        metadata=bearer_md(token),
    )
    store = world.sandbox.app.state.store
    with store.lock:
        config_id = store.get(portal.portal_session_id)["configuration"]
    update = world.stripe.v1.billing_portal.configurations.retrieve(config_id).to_dict()[
        "features"
    ]["subscription_update"]
    offered = [price for entry in update["products"] for price in entry["prices"]]
    held = world.catalog.GetPrice(
        catalog_pb2.GetPriceRequest(price_id=plans[11].price_id), metadata=SERVICE_MD
    ).stripe_price_id
    assert update["enabled"] is True and len(update["products"]) == 10
    assert held in offered and len(offered) == 10
