"""Where a backend may send the buyer back: seed 003's and seed 001's step 4 bodies send
success, cancel and return URLs on `https://yourapp.com/...` from a backend (Stripe's secret
key, our service key), and Stripe takes any http(s) URL from such a caller. Through Envoy, on a
stack whose BILLING_REDIRECT_ORIGINS is the default (`make run`'s: the CORS origins, which do
not include yourapp.com), a call that carries the service key (alone, or beside the buyer's
token as seed 003 sends them) may name any absolute http(s) URL; a bearer token alone (what a
browser holds) is still held to the allow-list; and every other check of a redirect URL (no
`javascript:`, no userinfo, no backslash, no control character) holds for the service key
too. On PostgreSQL when it is configured."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.checkout.support import Shop, start_shop, wait_for
from tests.conftest import PG_ENV, SERVICE_KEY
from tests.devstack import Response, throwaway_postgres
from tollbooth.db.models import CheckoutSession

pytestmark = pytest.mark.envoy

SESSIONS = "/api/v1/checkout/sessions"
PORTAL = "/api/v1/portal/sessions"
KEY = {"x-api-key": SERVICE_KEY}
OFFER = "backend-offer"  # BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY: seed 001's body names no items
NOT_ALLOWED = "REDIRECT_URL_NOT_ALLOWED"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    admin = os.environ.get(PG_ENV, "").strip()
    tmp = tmp_path_factory.mktemp("backend-redirects")
    with contextlib.ExitStack() as scope:
        url = (
            scope.enter_context(throwaway_postgres(admin, "tollbooth_backredir")) if admin else None
        )
        s = start_shop(
            tmp,
            url,
            default_origins=True,
            BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY=OFFER,
            BILLING_RATE_LIMIT_SESSION_CREATES="off",
        )
        scope.callback(s.close)
        # The premise: the seeds' origin is not on the default allow-list.
        origins = s.stack.settings.redirect_origins
        assert origins and not any("yourapp.com" in o for o in origins)
        s.price(OFFER, group=OFFER, amount=4900)
        yield s


def call(shop: Shop, method: str, path: str, body: Any, headers: dict[str, str]) -> Response:
    return shop.stack.request(method, path, body, headers)  # type: ignore[no-any-return]


def both(token: str) -> dict[str, str]:
    """Seed 003's headers translated: the buyer's bearer token and the service key."""
    return {"authorization": f"Bearer {token}", **KEY}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def one_time_price(shop: Shop, lookup_key: str, amount: int) -> str:
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
    return str(price.json()["price_id"])


def seed_003_checkout(price_id: str, mode: str, **changes: str) -> dict[str, Any]:
    return {
        "line_items": [{"price": price_id, "quantity": 1}],
        "mode": mode,
        "success_url": "https://yourapp.com/success",
        "cancel_url": "https://yourapp.com/cancel",
        "customer_email": "customer@example.com",
        **changes,
    }


def seed_001_checkout(account: str, **changes: str) -> dict[str, Any]:
    return {
        "accountId": account,
        "accountEmail": "billing@acme.com",
        "currency": "USD",
        "successUrl": "https://yourapp.com/welcome",
        "passThroughToken": "your-internal-reference",
        **changes,
    }


def price_for(shop: Shop, mode: str) -> str:
    lookup = f"backredir-{mode}-{uuid.uuid4().hex[:6]}"
    if mode == "payment":
        return one_time_price(shop, lookup, 2999)
    return str(shop.price(lookup, group=lookup, amount=2999)["price_id"])


def billed(shop: Shop, principal: str) -> tuple[str, str]:
    """The principal's account with a paid subscription, bought on an allowed origin: its
    bearer token and its provider customer."""
    token = shop.token(principal)
    lookup = f"backredir-plan-{uuid.uuid4().hex[:6]}"
    shop.price(lookup, group=lookup)
    body = {"items": [{"lookup_key": lookup}], "success_url": "http://localhost:3000/ok"}
    made = shop.request("POST", SESSIONS, body, token)
    assert made.status == 200, made.body
    cs = made.json()["session"]["stripe_checkout_session_id"]
    shop.stripe.raw_request("post", f"/v1/test_helpers/checkout/sessions/{cs}/complete")
    wait_for(lambda: shop.billing(token)["plan"] == lookup, what="the webhook")
    account = shop.request("GET", f"/mgt/v1/accounts/{principal}").json()
    assert account["stripe_customer_id"].startswith("cus_")
    return token, account["stripe_customer_id"]


def state(shop: Shop) -> tuple[int, int]:
    """Our checkout rows and the provider's objects."""
    with shop.stack.deps.db.transaction(readonly=True) as session:
        rows = session.scalar(select(func.count()).select_from(CheckoutSession)) or 0
    store = shop.sandbox.app.state.store
    with store.lock:
        objects = store.conn.execute("SELECT count(*) FROM objects").fetchone()[0]
    return rows, objects


# -- served for a backend -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["payment", "subscription"])
def test_seed_003_checkout_with_the_service_key_returns_to_the_seeds_own_urls(
    shop: Shop, mode: str
):
    """Seed 003's body as written, with its headers (the buyer's token beside the key) and with
    the key alone (naming the account): served, and the provider's session carries the URLs."""
    price_id = price_for(shop, mode)
    token = shop.token(f"backredir-3-{uuid.uuid4().hex[:6]}")
    principal = f"backredir-3k-{uuid.uuid4().hex[:6]}"
    shop.token(principal)  # the account the backend names
    for headers, body in (
        (both(token), seed_003_checkout(price_id, mode)),
        (KEY, seed_003_checkout(price_id, mode, account=principal)),
    ):
        made = call(shop, "POST", f"{SESSIONS}?environment=test", body, headers)
        assert made.status == 200, (headers.keys(), made.body)
        cs = made.json()["session"]["stripe_checkout_session_id"]
        remote = shop.stripe.v1.checkout.sessions.retrieve(cs)
        assert (remote.mode, remote.success_url, remote.cancel_url) == (
            mode,
            "https://yourapp.com/success",
            "https://yourapp.com/cancel",
        )


def test_seed_003_portal_with_the_service_key_returns_to_the_seeds_own_url(shop: Shop):
    """ "Customer Portal": `{"customer": "cus_...", "return_url": "https://yourapp.com/account"}`
    by the key alone and by both headers: served with that return_url, at the provider too."""
    token, customer = billed(shop, f"backredir-portal-{uuid.uuid4().hex[:6]}")
    body = {"customer": customer, "return_url": "https://yourapp.com/account"}
    for headers in (KEY, both(token)):
        resp = call(shop, "POST", PORTAL, body, headers)
        assert resp.status == 200, (headers.keys(), resp.body)
        got = resp.json()
        assert got["return_url"] == "https://yourapp.com/account"
        stored = shop.sandbox.engine.store.get(got["portal_session_id"])
        assert stored is not None and stored["return_url"] == "https://yourapp.com/account"


def test_seed_001_step_4_body_with_the_service_key_is_served(shop: Shop):
    """Step 4's body as written, the key in `x-api-key`: the default offer, sent back to
    `https://yourapp.com/welcome`."""
    account = shop.request(
        "POST", "/mgt/v1/accounts", {"name": "Acme Corp", "alias": f"bk-{uuid.uuid4().hex[:8]}"}
    ).json()["id"]
    made = call(shop, "POST", SESSIONS, seed_001_checkout(account), KEY)
    assert made.status == 200, made.body
    got = made.json()
    assert got["checkout_session_id"].startswith("chk_")
    remote = shop.stripe.v1.checkout.sessions.retrieve(got["session"]["stripe_checkout_session_id"])
    assert remote.success_url == "https://yourapp.com/welcome"


# -- still refused ------------------------------------------------------------------------------


def test_a_bearer_token_alone_is_still_held_to_the_allow_list(shop: Shop):
    """The same bodies by the buyer's token alone (what a browser holds): 400
    REDIRECT_URL_NOT_ALLOWED, and nothing is created here or at the provider."""
    principal = f"backredir-b-{uuid.uuid4().hex[:6]}"
    token, customer = billed(shop, principal)
    account = shop.request("GET", f"/mgt/v1/accounts/{principal}").json()["id"]
    price_id = price_for(shop, "payment")
    before = state(shop)
    for path, body in (
        (f"{SESSIONS}?environment=test", seed_003_checkout(price_id, "payment")),
        (
            SESSIONS,
            seed_003_checkout(price_id, "payment", success_url="http://localhost:3000/ok"),
        ),  # the cancel_url alone off the list
        (SESSIONS, seed_001_checkout(account)),
        (PORTAL, {"customer": customer, "return_url": "https://yourapp.com/account"}),
    ):
        resp = call(shop, "POST", path, body, bearer(token))
        assert (resp.status, resp.reason) == (400, NOT_ALLOWED), (path, body, resp.body)
    assert state(shop) == before


@pytest.fixture(scope="module")
def backend_buyer(shop: Shop) -> tuple[str, str, str]:
    """A billed account's principal and provider customer, and a one-time price."""
    principal = f"backredir-k-{uuid.uuid4().hex[:6]}"
    _, customer = billed(shop, principal)
    return principal, customer, price_for(shop, "payment")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", NOT_ALLOWED),
        ("https://yourapp.com@evil.example/", NOT_ALLOWED),
        ("https://user:pw@yourapp.com/", NOT_ALLOWED),
        ("https://yourapp.com\\@evil.example/", NOT_ALLOWED),
        ("https:\\\\evil.example", NOT_ALLOWED),
        ("//evil.example/", NOT_ALLOWED),
        ("/relative", NOT_ALLOWED),
        ("ftp://yourapp.com/", NOT_ALLOWED),
        ("https://yourapp.com:99999/", NOT_ALLOWED),
        # Stripe refuses a URL with a space anywhere (url_invalid): refused before it is sent.
        ("https://your app.com/", NOT_ALLOWED),
        ("https://yourapp.com/thank you", NOT_ALLOWED),
        ("https://yourapp.com/" + "x" * 3000, "FIELD_INVALID"),  # the field's max_length
        # A control character is refused at the edge, as in every field (README).
        ("https://yourapp.com/ok\r\nSet-Cookie: a=b", "FIELD_INVALID"),
        ("https://yourapp.com/\tx", "FIELD_INVALID"),
        ("https://yourapp.com/\x00", "FIELD_INVALID"),
    ],
)
def test_the_service_key_still_refuses_what_is_not_a_plain_http_url(
    shop: Shop, backend_buyer: tuple[str, str, str], url: str, reason: str
):
    """Each of success_url, cancel_url (seed 003's checkout) and return_url (its portal) made
    wrong, by the key: 400 with the reason, nothing created."""
    principal, customer, price_id = backend_buyer
    before = state(shop)
    for path, body in (
        (SESSIONS, seed_003_checkout(price_id, "payment", account=principal, success_url=url)),
        (SESSIONS, seed_003_checkout(price_id, "payment", account=principal, cancel_url=url)),
        (PORTAL, {"customer": customer, "return_url": url}),
    ):
        resp = call(shop, "POST", path, body, KEY)
        assert (resp.status, resp.reason) == (400, reason), (path, body, resp.body)
    assert state(shop) == before
