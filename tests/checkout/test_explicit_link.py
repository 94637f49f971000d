"""A price linked explicitly to a Stripe price (CreatePrice/UpdatePrice's `stripe_price_id`, a
catalog file) sells at that Stripe price's figures: Stripe charges the Stripe price, whatever
ours says. CreatePrice/UpdatePrice refuse such a link (tests/catalog/test_stripe_links_checked.py);
one stored otherwise (a catalog file, a link stored before they compared) charging another
amount, currency or recurrence is refused at checkout (400 STRIPE_PRICE_MISMATCH, naming both)
before anything is created at Stripe, and leaves no open checkout behind; a matching link
sells. Through Envoy with the sandbox."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.checkout.support import Shop, start_shop

pytestmark = pytest.mark.envoy

DATABASES: dict[int, str] = {}  # id(shop) -> its database file


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("explicit-link")
    s = start_shop(tmp)
    DATABASES[id(s)] = f"sqlite:///{tmp / 'billing.db'}"
    yield s
    s.close()


def linked_behind_the_api(shop: Shop, price: dict[str, Any], stripe_price_id: str) -> None:
    """Store a link as a catalog file or an older release did, without CreatePrice's check."""
    engine = sa.create_engine(DATABASES[id(shop)])
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE prices SET stripe_price_id = :s WHERE id = :p"),
            {"s": stripe_price_id, "p": price["price_id"]},
        )
    engine.dispose()


def stripe_price(shop: Shop, amount: int, interval: str = "month") -> str:
    """A Stripe price made at the provider directly (as in the dashboard)."""
    product = shop.stripe.v1.products.create(params={"name": f"Dashboard {uuid.uuid4().hex[:6]}"})
    price = shop.stripe.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": interval},  # type: ignore[typeddict-item]
        }
    )
    return str(price.id)


def sessions_at_stripe(shop: Shop) -> int:
    return len(shop.stripe.v1.checkout.sessions.list(params={"limit": 100}).data)


def checkout(shop: Shop, token: str, lookup: str) -> Any:
    return shop.request(
        "POST",
        "/api/v1/checkout/sessions",
        {"items": [{"lookup_key": lookup}], "success_url": "https://app.example/done"},
        token,
    )


def test_a_link_to_a_stripe_price_charging_another_amount_is_refused_at_checkout(shop: Shop):
    lookup = f"team-{uuid.uuid4().hex[:6]}"
    cheap = stripe_price(shop, 2900)
    team = shop.price(lookup, group=lookup, amount=9900)
    linked_behind_the_api(shop, team, cheap)
    token = shop.token(f"buyer-{uuid.uuid4().hex[:6]}")
    before = sessions_at_stripe(shop)
    for _ in range(2):  # the second meets the same refusal: nothing was left open
        resp = checkout(shop, token, lookup)
        assert (resp.status, resp.reason) == (400, "STRIPE_PRICE_MISMATCH"), resp.body
        detail = resp.json()["details"][0]["metadata"]
        assert (detail["price_id"], detail["stripe_price_id"]) == (team["price_id"], cheap)
    assert sessions_at_stripe(shop) == before
    assert shop.billing(token)["plan"] == "free"
    # The operator links a Stripe price that charges 9900 a month: the same checkout sells.
    fixed = stripe_price(shop, 9900)
    relinked = shop.request(
        "PATCH",
        f"/mgt/v1/catalog/prices/{team['price_id']}?update_mask=stripe_price_id"
        f"&request_id={uuid.uuid4().hex}",
        {"stripe_price_id": fixed},
    )
    assert relinked.status == 200, relinked.body
    sold = checkout(shop, token, lookup)
    assert sold.status == 200, sold.body
    assert int(sold.json()["session"]["amount_total"]) == 9900
    assert sessions_at_stripe(shop) == before + 1


def test_a_link_to_a_stripe_price_of_another_recurrence_is_refused(shop: Shop):
    lookup = f"yearly-{uuid.uuid4().hex[:6]}"
    monthly = stripe_price(shop, 4900, "month")
    yearly = shop.price(
        lookup,
        group=lookup,
        amount=4900,
        recurring={"interval": "RECURRING_INTERVAL_YEAR"},
    )
    linked_behind_the_api(shop, yearly, monthly)
    token = shop.token(f"buyer-{uuid.uuid4().hex[:6]}")
    resp = checkout(shop, token, lookup)
    assert (resp.status, resp.reason) == (400, "STRIPE_PRICE_MISMATCH"), resp.body


def test_a_matching_explicit_link_sells(shop: Shop):
    lookup = f"pro-{uuid.uuid4().hex[:6]}"
    linked = stripe_price(shop, 2900)
    shop.price(lookup, group=lookup, amount=2900, stripe_price_id=linked)
    token = shop.token(f"buyer-{uuid.uuid4().hex[:6]}")
    resp = checkout(shop, token, lookup)
    assert resp.status == 200, resp.body
    session = shop.stripe.v1.checkout.sessions.retrieve(
        resp.json()["session"]["stripe_checkout_session_id"]
    )
    assert session.amount_total == 2900
