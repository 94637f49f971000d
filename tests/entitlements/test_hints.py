"""Catalog purchase hints for a bearer caller after purchases in the sandbox: buy, manage or
current per price, on SQLite and PostgreSQL."""

from __future__ import annotations

from billing.v1 import catalog_pb2
from tests.checkout.support import World
from tests.conftest import SERVICE_MD, bearer_md
from tests.entitlements.support import bought

H = catalog_pb2


def hints(world: World, product_id: str, token: str = "") -> dict[str, int]:
    md = bearer_md(token) if token else SERVICE_MD
    listed = world.catalog.ListPrices(
        catalog_pb2.ListPricesRequest(product_id=product_id), metadata=md, timeout=10
    )
    return {p.lookup_key: p.hint for p in listed.prices}


def test_hints_follow_what_the_account_holds(world: World):
    pro = world.price("pro", group="plan")
    product = pro.product_id
    world.price("team", group="plan", product_id=product, amount=9900)
    world.price("seats", group="plan", stackable=True, product_id=product, amount=500)
    world.price("lifetime", recurring=False, product_id=product, amount=19900)
    world.price("pack", recurring=False, stackable=True, product_id=product, amount=1000)
    token, _ = world.token()
    assert set(hints(world, product, token).values()) == {H.PURCHASE_HINT_BUY}

    bought(world, token, "pro")
    bought(world, token, "seats")
    bought(world, token, "lifetime")
    bought(world, token, "pack")
    assert hints(world, product, token) == {
        "pro": H.PURCHASE_HINT_CURRENT,  # held
        "team": H.PURCHASE_HINT_MANAGE,  # the same group: change it in the portal
        "seats": H.PURCHASE_HINT_BUY,  # stackable: held, and more can be bought
        "lifetime": H.PURCHASE_HINT_CURRENT,  # a non-stackable one-time purchase is held
        "pack": H.PURCHASE_HINT_BUY,  # stackable one-time: buy again
    }
    # Another account sees only BUY; a service caller no hint at all.
    other, _ = world.token()
    assert set(hints(world, product, other).values()) == {H.PURCHASE_HINT_BUY}
    assert set(hints(world, product).values()) == {H.PURCHASE_HINT_UNSPECIFIED}


def test_a_canceled_plan_is_buy_again(world: World):
    pro = world.price("pro", group="plan")
    world.price("team", group="plan", product_id=pro.product_id, amount=9900)
    token, _ = world.token()
    bought(world, token, "pro")
    assert hints(world, pro.product_id, token)["team"] == H.PURCHASE_HINT_MANAGE
    (sub,) = world.stripe.v1.subscriptions.list(params={"limit": 100}).data
    world.stripe.v1.subscriptions.cancel(sub.id)
    world.settled()
    assert set(hints(world, pro.product_id, token).values()) == {H.PURCHASE_HINT_BUY}
