"""Seed 003's checkout through Envoy on PostgreSQL: its body as written (`line_items[].price`,
`mode`, `customer_email`) in `payment` and `setup` mode, completed in headless Chromium on the
sandbox's hosted page; the status call by the provider's `cs_...` id; a mode that does not fit
the prices is a 400 that creates nothing; setup mode makes the saved card the customer's
default payment method."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import create_engine, func, select

from tests.checkout.support import Shop, wait_for
from tollbooth.db import normalize_url
from tollbooth.db.models import BillingAccount, CheckoutSession

pytestmark = pytest.mark.envoy
SESSIONS = "/api/v1/checkout/sessions"


@pytest.fixture(scope="module")
def pg_shop(tmp_path_factory: pytest.TempPathFactory, pg_shared_url: str) -> Iterator[Shop]:
    from tests.checkout.support import start_shop

    shop = start_shop(tmp_path_factory.mktemp("seed003"), pg_shared_url)
    shop.database_url = pg_shared_url  # type: ignore[attr-defined]
    yield shop
    shop.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


def one_time_price(shop: Shop, lookup_key: str, amount: int) -> dict[str, Any]:
    product = shop.request(
        "POST", f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}", {"name": "Ebook"}
    )
    assert product.status == 200, product.body
    price = shop.request(
        "POST",
        f"/mgt/v1/catalog/prices?request_id={uuid.uuid4().hex}",
        {
            "product_id": product.json()["product_id"],
            "currency": "usd",
            "unit_amount": amount,
            "type": "PRICE_TYPE_ONE_TIME",
            "lookup_key": lookup_key,
        },
    )
    assert price.status == 200, price.body
    return price.json()  # type: ignore[no-any-return]


def seed_body(shop: Shop, mode: str, price: str | None, email: str) -> dict[str, Any]:
    """Seed 003's body as written (only its URLs point at the sandbox's landing page)."""
    landing = f"{shop.sandbox.url}/sandbox/back"
    body: dict[str, Any] = {
        "mode": mode,
        "success_url": landing + "?done={CHECKOUT_SESSION_ID}",
        "cancel_url": landing + "?canceled=1",
        "customer_email": email,
    }
    if price is not None:
        body["line_items"] = [{"price": price, "quantity": 1}]
    return body


def session_id_from(url: str) -> str:
    return parse_qs(urlparse(url).query)["done"][0]


def status_of(shop: Shop, token: str, cs_id: str) -> tuple[str, str]:
    resp = shop.request("GET", f"{SESSIONS}/{cs_id}?environment=test", token=token)
    assert resp.status == 200, resp.body
    body = resp.json()
    return body["session_status"], body["session_payment_status"]


def rows(shop: Shop) -> tuple[int, list[str | None]]:
    engine = create_engine(normalize_url(shop.database_url))  # type: ignore[attr-defined]
    try:
        with engine.connect() as conn:
            sessions = conn.execute(select(func.count()).select_from(CheckoutSession)).scalar()
            emails = list(conn.execute(select(BillingAccount.email)).scalars())
            return int(sessions or 0), sorted(emails, key=str)
    finally:
        engine.dispose()


def test_seed_003_payment_body_is_paid_in_chromium_and_its_status_is_complete_paid(
    pg_shop: Shop, page: Any
):
    shop = pg_shop
    price = one_time_price(shop, "seed-ebook", 2999)
    first = shop.token("seed003-first")
    # Our catalog price id works as `price`; the checkout links the price to the provider.
    made = shop.request(
        "POST", SESSIONS, seed_body(shop, "payment", price["price_id"], "first@example.com"), first
    )
    assert made.status == 200, made.body
    assert made.json()["session"]["mode"] == "CHECKOUT_MODE_PAYMENT"
    linked = shop.request("GET", f"/mgt/v1/catalog/prices/{price['price_id']}").json()
    stripe_price = linked["stripe_price_id"]
    assert stripe_price.startswith("price_") and stripe_price != price["price_id"]

    # Seed 003's body with the provider's price id, as the seed shows it.
    token = shop.token("seed003-buyer")
    created = shop.request(
        "POST", SESSIONS, seed_body(shop, "payment", stripe_price, "buyer@example.com"), token
    )
    assert created.status == 200, created.body
    session = created.json()["session"]
    assert session["mode"] == "CHECKOUT_MODE_PAYMENT"
    assert session["amount_total"] == "2999"
    cs_id = session["stripe_checkout_session_id"]
    assert status_of(shop, token, cs_id) == ("open", "unpaid")

    page.goto(created.json()["url"])
    line = page.inner_text("#line-items tbody tr")
    assert "Ebook" in line and "seed-ebook" in line  # the product and the price's lookup key
    assert page.input_value("#email") == "buyer@example.com"  # customer_email reached Stripe
    # A declined card: the form keeps the e-mail and the name, never the card number.
    page.fill("#email", "other@example.com")
    page.fill("#name", "Ada Buyer")
    page.fill("#card", "4000 0000 0000 0002")
    page.click("#pay")
    page.wait_for_selector("#error")
    assert page.input_value("#email") == "other@example.com"
    assert page.input_value("#name") == "Ada Buyer"
    assert page.input_value("#card") == ""
    assert page.get_attribute("#card", "value") == ""  # not sent back in the HTML either
    page.fill("#card", "4242 4242 4242 4242")
    page.click("#pay")
    page.wait_for_url("**/sandbox/back?done=cs_test_*")
    assert session_id_from(page.url) == cs_id

    wait_for(lambda: status_of(shop, token, cs_id) == ("complete", "paid"), what="the webhook")
    by_ours = shop.request("GET", f"{SESSIONS}/{session['checkout_session_id']}", token=token)
    assert by_ours.json()["status"] == "CHECKOUT_SESSION_STATUS_COMPLETE"
    assert by_ours.json()["payment_status"] == "PAYMENT_STATUS_PAID"
    purchases = shop.request("GET", "/api/v1/billing/purchases", token=token).json()
    assert [p["price_id"] for p in purchases["purchases"]] == [price["price_id"]]
    # Another account's session answers like one that does not exist; so does a made-up id.
    for ident in (cs_id, session["checkout_session_id"], "cs_test_nosuchsession"):
        other = shop.request("GET", f"{SESSIONS}/{ident}", token=first)
        assert other.status == 404, (ident, other.body)
    live = shop.request("GET", f"{SESSIONS}/{cs_id}?environment=live", token=token)
    assert (live.status, live.reason) == (403, "ENVIRONMENT_MISMATCH")


def test_seed_003_setup_body_saves_the_card_as_the_customers_default(pg_shop: Shop, page: Any):
    shop = pg_shop
    token = shop.token("seed003-setup")
    created = shop.request(
        "POST", SESSIONS, seed_body(shop, "setup", None, "keep@example.com"), token
    )
    assert created.status == 200, created.body
    session = created.json()["session"]
    assert session["mode"] == "CHECKOUT_MODE_SETUP"
    assert session.get("items", []) == []
    cs_id = session["stripe_checkout_session_id"]
    customer_id = shop.stripe.v1.checkout.sessions.retrieve(cs_id).customer
    assert isinstance(customer_id, str)
    customer = shop.stripe.v1.customers.retrieve(customer_id)
    assert customer.email == "keep@example.com"
    assert (customer.invoice_settings.default_payment_method or None) is None

    page.goto(created.json()["url"])
    assert page.inner_text("#pay") == "Save card"
    page.fill("#card", "4242 4242 4242 4242")
    page.click("#pay")
    page.wait_for_url("**/sandbox/back?done=cs_test_*")

    wait_for(
        lambda: status_of(shop, token, cs_id) == ("complete", "no_payment_required"),
        what="checkout.session.completed",
    )
    remote = shop.stripe.v1.checkout.sessions.retrieve(cs_id)
    assert isinstance(remote.setup_intent, str)
    saved = shop.stripe.v1.setup_intents.retrieve(remote.setup_intent)
    assert saved.status == "succeeded" and saved.payment_method
    wait_for(
        lambda: (
            shop.stripe.v1.customers.retrieve(customer_id).invoice_settings.default_payment_method
            == saved.payment_method
        ),
        what="the default payment method",
    )
    # Nothing was bought.
    purchases = shop.request("GET", "/api/v1/billing/purchases", token=token).json()
    assert purchases.get("purchases", []) == []


def test_a_mode_that_does_not_fit_the_prices_is_400_and_creates_nothing(pg_shop: Shop):
    shop = pg_shop
    monthly = shop.price("seed-monthly", group="seed003")
    once = one_time_price(shop, "seed-once", 500)
    token = shop.token("seed003-mismatch")

    def provider_objects() -> tuple[int, int]:
        customers = shop.stripe.v1.customers.list(params={"limit": 100}).data
        sessions = shop.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
        return len(customers), len(sessions)

    before = provider_objects(), rows(shop)
    for mode, price, reason in (
        ("payment", monthly["price_id"], "CHECKOUT_MODE_MISMATCH"),
        ("payment", "seed-monthly", "CHECKOUT_MODE_MISMATCH"),  # by lookup key
        ("subscription", once["price_id"], "CHECKOUT_MODE_MISMATCH"),
        ("setup", once["price_id"], "CHECKOUT_MODE_MISMATCH"),
        ("donation", once["price_id"], "INVALID_ARGUMENT"),
        ("payment", "price_nosuchprice", "PRICE_NOT_FOUND"),
    ):
        resp = shop.request(
            "POST", SESSIONS, seed_body(shop, mode, price, "mismatch@example.com"), token
        )
        assert (resp.status, resp.reason) == (400, reason), (mode, price, resp.body)
    both = seed_body(shop, "payment", once["price_id"], "mismatch@example.com")
    both["items"] = [{"lookup_key": "seed-once"}]
    resp = shop.request("POST", SESSIONS, both, token)
    assert (resp.status, resp.reason) == (400, "INVALID_ARGUMENT")
    # No checkout row, no e-mail given to the account, nothing at the provider.
    assert (provider_objects(), rows(shop)) == before
    assert "mismatch@example.com" not in before[1][1]
    # The same prices in their own modes are fine.
    for mode, price in (("subscription", "seed-monthly"), ("payment", "seed-once")):
        ok = shop.request(
            "POST", SESSIONS, seed_body(shop, mode, price, "mismatch@example.com"), token
        )
        assert ok.status == 200, ok.body
        assert ok.json()["session"]["mode"] == f"CHECKOUT_MODE_{mode.upper()}"
