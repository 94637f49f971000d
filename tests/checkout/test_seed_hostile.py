"""Hostile variants of every request seed 001 and seed 003 write, through Envoy with the
sandbox, on PostgreSQL when it is configured: each seed body with one field made wrong (a
wrong JSON type, a missing required field, an unknown field, a huge or negative number,
unicode where an identifier goes, a name of nothing) is a 4xx with the stable reason README
names, never a 5xx, and changes nothing: no row in any table of the database, no object at
the provider. Seed 003's requests carry its headers as written (`Authorization: Bearer` and
`x-api-key` together where the seed sends both)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.checkout.support import Shop, start_shop, wait_for
from tests.conftest import PG_ENV, SERVICE_KEY
from tests.devstack import Response, migrated_sqlite, throwaway_postgres
from tollbooth.db import normalize_url

pytestmark = pytest.mark.envoy

SCOPES = ["checkout", "portal", "payments", "billing:read", "credits:read"]
# Counters of the rate limiter count refused calls too, on purpose: not business state.
NOT_STATE = {"alembic_version", "rate_limit_counters"}
SESSIONS = "/api/v1/checkout/sessions"
INTENTS = "/api/v1/payment/intents"
PORTAL = "/api/v1/portal/sessions"
NOT_OK = "REDIRECT_URL_NOT_ALLOWED"


class World:
    def __init__(self, shop: Shop, url: str) -> None:
        self.shop = shop
        self.engine = create_engine(normalize_url(url))
        self.tables = [t for t in inspect(self.engine).get_table_names() if t not in NOT_STATE]
        self.ids: dict[str, str] = {}

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        return self.shop.stack.request(  # type: ignore[no-any-return]
            method, path, body, {"x-api-key": SERVICE_KEY} if headers is None else headers
        )

    def ok(self, method: str, path: str, body: Any = None, headers: Any = None) -> Any:
        resp = self.call(method, path, body, headers)
        assert resp.status == 200, (path, resp.body)
        return resp.json()

    def state(self) -> tuple[dict[str, int], dict[str, str]]:
        """Every table's row count, and every object the provider holds (its whole JSON), once
        the provider's events are delivered."""
        store = self.shop.sandbox.app.state.store

        def delivered() -> bool:
            with store.lock:
                return store.next_due_at() is None

        wait_for(delivered, 60, "the sandbox to deliver every event")
        with self.engine.connect() as conn:
            rows = {
                t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one())
                for t in self.tables
            }
        with store.lock:
            objects = dict(store.conn.execute("SELECT id, data FROM objects").fetchall())
        return rows, objects


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The shop on a PostgreSQL database of its own when one is configured (else SQLite),
    accepting the seeds' URLs; the session-create limit off (this module sends dozens a
    minute; tests/limits prove the limit)."""
    admin = os.environ.get(PG_ENV, "").strip()
    tmp = tmp_path_factory.mktemp("seed-hostile")
    with contextlib.ExitStack() as scope:
        if admin:
            url = scope.enter_context(throwaway_postgres(admin, "tollbooth_seedhostile"))
        else:
            url = migrated_sqlite(tmp / "billing.db")
        shop = start_shop(
            tmp,
            url,
            BILLING_REDIRECT_ORIGINS="https://yourapp.com",
            BILLING_CHECKOUT_DEFAULT_LOOKUP_KEY="seed-offer",
            BILLING_RATE_LIMIT_SESSION_CREATES="off",
        )
        scope.callback(shop.close)
        w = World(shop, url)
        scope.callback(w.engine.dispose)
        setup(w)
        yield w


def setup(w: World) -> None:
    """A one-time price (seed 003's 2999), a euro one, the default offer (seed 001's $49.00 a
    month); the account of seed 001 with its trial credits, subscribed; a buyer's token; a
    customer of seed 003."""
    shop = w.shop
    product = w.ok(
        "POST", f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}", {"name": "Ebook"}
    )
    for key, currency in (("seed-ebook", "usd"), ("seed-ebook-eur", "eur")):
        w.ids[key] = w.ok(
            "POST",
            f"/mgt/v1/catalog/prices?request_id={uuid.uuid4().hex}",
            {
                "product_id": product["product_id"],
                "currency": currency,
                "unit_amount": 2999,
                "type": "PRICE_TYPE_ONE_TIME",
                "lookup_key": key,
            },
        )["price_id"]
    shop.price("seed-offer", group="seed-offer", amount=4900)
    for n in range(21):
        shop.price(f"seed-many-{n}", group=f"seed-many-{n}")
    acme = w.ok(
        "POST",
        "/mgt/v1/accounts",
        {"name": "Acme Corp", "email": "billing@acme.com", "alias": "your-internal-id-123"},
    )
    w.ids["account"] = acme["id"]
    w.ok(
        "POST",
        f"/mgt/v1/accounts/{acme['id']}/credits/grants",
        {"creditType": "units", "amount": "50", "reason": "Welcome credits"},
    )
    made = w.ok(
        "POST",
        SESSIONS,
        {
            "accountId": acme["id"],
            "accountEmail": "billing@acme.com",
            "currency": "USD",
            "successUrl": "https://yourapp.com/welcome",
            "passThroughToken": "your-internal-reference",
        },
    )
    cs = made["session"]["stripe_checkout_session_id"]
    shop.stripe.raw_request("post", f"/v1/test_helpers/checkout/sessions/{cs}/complete")
    shop.wait_billed(acme["id"])
    w.ids["acme_customer"] = w.ok("GET", f"/mgt/v1/accounts/{acme['id']}")["stripe_customer_id"]
    w.ids["acme_token"] = w.ok(  # the alias is the account's principal
        "POST", "/mgt/v1/token/issue", {"principal_id": "your-internal-id-123", "scopes": SCOPES}
    )["access_token"]
    token = w.ok("POST", "/mgt/v1/token/issue", {"principal_id": "seed-buyer", "scopes": SCOPES})[
        "access_token"
    ]
    w.ids["token"] = token
    reader = w.ok(
        "POST", "/mgt/v1/token/issue", {"principal_id": "seed-buyer", "scopes": ["billing:read"]}
    )["access_token"]
    w.ids["reader"] = reader
    customer = w.ok(
        "POST",
        "/mgt/v1/customers",
        {
            "email": "customer@example.com",
            "name": "John Doe",
            "description": "Premium customer",
            "phone": "+1234567890",
            "metadata": {"user_id": "user_123"},
        },
    )
    w.ids["customer"] = customer["id"]


def both(w: World, token: str | None = None) -> dict[str, str]:
    """Seed 003's headers, translated: the buyer's bearer token and the service key."""
    return {"authorization": f"Bearer {token or w.ids['token']}", "x-api-key": SERVICE_KEY}


def buyer_alone(w: World, token: str | None = None) -> dict[str, str]:
    """A bearer token without the key: what a browser holds, held to the redirect allow-list."""
    return {"authorization": f"Bearer {token or w.ids['token']}"}


def field_of(resp: Response) -> str | None:
    for detail in resp.json().get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail.get("metadata", {}).get("field")  # type: ignore[no-any-return]
    return None


Case = tuple[str, str, Any, dict[str, str] | None, int, str]


def refused_alike(w: World, cases: list[Case]) -> None:
    """Every case is its status and reason, and all of them together change nothing."""
    before = w.state()
    wrong = []
    for method, path, body, headers, status, reason in cases:
        resp = w.call(method, path, body, headers)
        got = (resp.status, resp.reason if resp.status >= 400 else None)
        if got != (status, reason):
            wrong.append((method, path, json.dumps(body)[:200], got, resp.body[:300]))
    assert wrong == [], "\n".join(map(str, wrong))
    assert w.state() == before


def with_(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    for name, value in changes.items():
        if value is ...:
            out.pop(name, None)
        else:
            out[name] = value
    return out


# -- seed 003 -----------------------------------------------------------------------------------


def checkout_body(w: World, price: str | None = None, **changes: Any) -> dict[str, Any]:
    body = {
        "line_items": [{"price": price or w.ids["seed-ebook"], "quantity": 1}],
        "mode": "payment",
        "success_url": "https://yourapp.com/success",
        "cancel_url": "https://yourapp.com/cancel",
        "customer_email": "customer@example.com",
    }
    return with_(body, **changes)


def test_seed_003_checkout_body_made_wrong_is_a_4xx_that_creates_nothing(world: World):
    w = world
    path = f"{SESSIONS}?environment=test"
    h = both(w)
    line = {"price": w.ids["seed-ebook"], "quantity": 1}

    def items(**changes: Any) -> list[dict[str, Any]]:
        return [with_(line, **changes)]

    bad = "MALFORMED_REQUEST"
    cases: list[Case] = [
        ("POST", path, checkout_body(w, line_items=items(quantity=1.5)), h, 400, bad),
        ("POST", path, checkout_body(w, line_items=items(quantity="abc")), h, 400, bad),
        ("POST", path, checkout_body(w, line_items=items(quantity=1e30)), h, 400, bad),
        ("POST", path, checkout_body(w, line_items=items(quantity=-1)), h, 400, "INVALID_ARGUMENT"),
        (
            "POST",
            path,
            checkout_body(w, line_items=items(quantity=10**6)),
            h,
            400,
            "INVALID_ARGUMENT",
        ),
        ("POST", path, checkout_body(w, line_items=items(price=123)), h, 400, bad),
        ("POST", path, checkout_body(w, line_items=items(price=...)), h, 400, "FIELD_REQUIRED"),
        ("POST", path, checkout_body(w, line_items=items(price="")), h, 400, "FIELD_REQUIRED"),
        ("POST", path, checkout_body(w, "price_1234567890"), h, 400, "PRICE_NOT_FOUND"),
        ("POST", path, checkout_body(w, "príce_ü🎉"), h, 400, "PRICE_NOT_FOUND"),
        ("POST", path, checkout_body(w, line_items=items(bogus=1)), h, 400, "FIELD_UNKNOWN"),
        ("POST", path, checkout_body(w, line_items="x"), h, 400, bad),
        ("POST", path, checkout_body(w, line_items=[None]), h, 400, "FIELD_INVALID"),
        ("POST", path, checkout_body(w, line_items=[line, line]), h, 400, "INVALID_ARGUMENT"),
        ("POST", path, checkout_body(w, mode="donation"), h, 400, "INVALID_ARGUMENT"),
        ("POST", path, checkout_body(w, mode="subscription"), h, 400, "CHECKOUT_MODE_MISMATCH"),
        ("POST", path, checkout_body(w, mode="setup"), h, 400, "CHECKOUT_MODE_MISMATCH"),
        ("POST", path, checkout_body(w, mode=1), h, 400, bad),
        ("POST", path, checkout_body(w, customer_email="not-an-email"), h, 400, "EMAIL_INVALID"),
        ("POST", path, checkout_body(w, customer_email=123), h, 400, bad),
        ("POST", path, checkout_body(w, customer="cus_1234567890"), h, 400, "FIELD_UNKNOWN"),
        # Off the allow-list, by the buyer's token alone (a call carrying the service key,
        # a backend's, may name any origin: test_backend_redirects.py).
        (
            "POST",
            path,
            checkout_body(w, success_url="https://evil.example/success"),
            buyer_alone(w),
            400,
            "REDIRECT_URL_NOT_ALLOWED",
        ),
        (
            "POST",
            path,
            checkout_body(w, cancel_url="javascript:alert(1)"),
            h,
            400,
            "REDIRECT_URL_NOT_ALLOWED",
        ),
        (
            "POST",
            path,
            checkout_body(w, success_url="https://yourapp.com/" + "x" * 3000),
            h,
            400,
            "FIELD_INVALID",
        ),
        # The seed's environments: another than the key's is 403, a misspelt one 400.
        ("POST", f"{SESSIONS}?environment=live", checkout_body(w), h, 403, "ENVIRONMENT_MISMATCH"),
        ("POST", f"{SESSIONS}?environment=TEST", checkout_body(w), h, 400, "INVALID_ARGUMENT"),
        # Seed 003's 401 and 403.
        ("POST", path, checkout_body(w), {}, 401, "CREDENTIALS_MISSING"),
        (
            "POST",
            path,
            checkout_body(w),
            {"authorization": "Bearer nope", "x-api-key": SERVICE_KEY},
            401,
            "TOKEN_INVALID",
        ),
        (
            "POST",
            path,
            checkout_body(w),
            {"authorization": h["authorization"], "x-api-key": "not-the-key-0123456789"},
            401,
            "SERVICE_KEY_INVALID",
        ),
        ("POST", path, checkout_body(w), both(w, w.ids["reader"]), 403, "SCOPE_MISSING"),
    ]
    refused_alike(w, cases)


def test_a_line_items_error_names_line_items_the_field_the_body_has(world: World):
    """Seed 003's body lists `line_items`: an error about the list as a whole (too many
    lines, two currencies) names `line_items`, not its twin `items`, which the body never had;
    `items` sent is still named `items`."""
    w = world
    h = both(w)
    too_many = [{"price": f"seed-many-{n}", "quantity": 1} for n in range(21)]
    two_currencies = [{"price": "seed-ebook"}, {"price": "seed-ebook-eur"}]
    before = w.state()
    for lines, mode in ((too_many, "subscription"), (two_currencies, "payment")):
        resp = w.call("POST", SESSIONS, checkout_body(w, line_items=lines, mode=mode), h)
        assert (resp.status, resp.reason, field_of(resp)) == (
            400,
            "INVALID_ARGUMENT",
            "line_items",
        ), resp.body
        named = [{"lookup_key": line["price"]} for line in lines]
        resp = w.call("POST", SESSIONS, checkout_body(w, line_items=..., items=named), h)
        assert (resp.status, resp.reason, field_of(resp)) == (400, "INVALID_ARGUMENT", "items")
    assert w.state() == before


def test_seed_003_session_status_asked_wrongly_is_a_4xx(world: World):
    w = world
    h = both(w)
    base = f"{SESSIONS}/cs_test_abc123"
    refused_alike(
        w,
        [
            ("GET", f"{base}?environment=test", None, h, 404, "NOT_FOUND"),
            (
                "GET",
                f"{SESSIONS}/cs_t%C3%A9st_%F0%9F%8E%89?environment=test",
                None,
                h,
                404,
                "NOT_FOUND",
            ),
            ("GET", f"{base}?environment=live", None, h, 403, "ENVIRONMENT_MISMATCH"),
            ("GET", f"{base}?environment=test&bogus=1", None, h, 400, "FIELD_UNKNOWN"),
            ("GET", f"{base}?environment=test", None, {}, 401, "CREDENTIALS_MISSING"),
        ],
    )


def intent_body(**changes: Any) -> dict[str, Any]:
    body = {
        "amount": 2999,
        "currency": "usd",
        "description": "Purchase from YourApp",
        "receipt_email": "customer@example.com",
    }
    return with_(body, **changes)


def test_seed_003_payment_intent_body_made_wrong_is_a_4xx_that_creates_nothing(world: World):
    w = world
    h = both(w)
    amount = "PAYMENT_AMOUNT_INVALID"
    bad = "MALFORMED_REQUEST"
    cases: list[Case] = [
        ("POST", INTENTS, intent_body(amount=29.99), h, 400, bad),
        ("POST", INTENTS, intent_body(amount="abc"), h, 400, bad),
        ("POST", INTENTS, intent_body(amount=10**20), h, 400, bad),
        ("POST", INTENTS, intent_body(amount=2**63 - 1), h, 400, amount),
        ("POST", INTENTS, intent_body(amount=100_000_000), h, 400, amount),
        ("POST", INTENTS, intent_body(amount=-2999), h, 400, amount),
        ("POST", INTENTS, intent_body(amount=0), h, 400, amount),
        ("POST", INTENTS, intent_body(amount=10), h, 400, amount),  # under usd's minimum
        ("POST", INTENTS, intent_body(amount=...), h, 400, amount),
        ("POST", INTENTS, intent_body(currency=...), h, 400, "FIELD_REQUIRED"),
        ("POST", INTENTS, intent_body(currency="XYZ"), h, 400, "CURRENCY_INVALID"),
        ("POST", INTENTS, intent_body(currency="ūsd"), h, 400, "CURRENCY_INVALID"),
        ("POST", INTENTS, intent_body(currency=840), h, 400, bad),
        ("POST", INTENTS, intent_body(receipt_email="nope"), h, 400, "EMAIL_INVALID"),
        ("POST", INTENTS, intent_body(description="d" * 2000), h, 400, "FIELD_INVALID"),
        ("POST", INTENTS, intent_body(payment_method_types=["card"]), h, 400, "FIELD_UNKNOWN"),
        ("POST", INTENTS, intent_body(account="your-internal-id-123"), h, 404, "NOT_FOUND"),
        ("POST", f"{INTENTS}?environment=live", intent_body(), h, 403, "ENVIRONMENT_MISMATCH"),
        ("POST", INTENTS, intent_body(), both(w, w.ids["reader"]), 403, "SCOPE_MISSING"),
        ("POST", INTENTS, intent_body(), {}, 401, "CREDENTIALS_MISSING"),
        ("GET", f"{INTENTS}/pi_1234567890", None, h, 404, "NOT_FOUND"),
    ]
    refused_alike(w, cases)


def test_seed_003_portal_body_made_wrong_is_a_4xx_that_creates_nothing(world: World):
    w = world
    h = both(w)
    body = {"customer": w.ids["acme_customer"], "return_url": "https://yourapp.com/account"}
    cases: list[Case] = [
        # Another account's customer, to a buyer's token, is one of nobody's.
        ("POST", PORTAL, body, h, 404, "NOT_FOUND"),
        ("POST", PORTAL, with_(body, customer="cus_1234567890"), None, 404, "NOT_FOUND"),
        ("POST", PORTAL, with_(body, customer=123), None, 400, "MALFORMED_REQUEST"),
        # Off the allow-list, by the account's own token alone (a backend's key may name any).
        (
            "POST",
            PORTAL,
            with_(body, return_url="https://evil.example/account"),
            buyer_alone(w, w.ids["acme_token"]),
            400,
            "REDIRECT_URL_NOT_ALLOWED",
        ),
        (
            "POST",
            PORTAL,
            with_(body, return_url="not a url"),
            None,
            400,
            "REDIRECT_URL_NOT_ALLOWED",
        ),
        ("POST", PORTAL, with_(body, configuration="bpc_1"), None, 400, "FIELD_UNKNOWN"),
        ("POST", f"{PORTAL}?environment=live", body, None, 403, "ENVIRONMENT_MISMATCH"),
    ]
    refused_alike(w, cases)


def customer_body(**changes: Any) -> dict[str, Any]:
    body = {
        "email": "customer@example.com",
        "name": "John Doe",
        "description": "Premium customer",
        "phone": "+1234567890",
        "metadata": {"user_id": "user_123"},
    }
    return with_(body, **changes)


def test_seed_003_customer_requests_made_wrong_are_a_4xx_that_change_nothing(world: World):
    """The seed's create body again, its e-mail already a customer's (setup made it): a body
    made wrong is refused for what is wrong with it (metadata Stripe would refuse too), not as
    CUSTOMER_EMAIL_TAKEN, which a request_id would only turn into that refusal."""
    w = world
    customers = "/mgt/v1/customers"
    cus = f"{customers}/{w.ids['customer']}"
    bad = "MALFORMED_REQUEST"
    invalid = "INVALID_ARGUMENT"
    many = {f"k{n}": "v" for n in range(60)}
    cases: list[Case] = [
        ("POST", customers, customer_body(email="not-an-email"), None, 400, "EMAIL_INVALID"),
        ("POST", customers, customer_body(email=123), None, 400, bad),
        ("POST", customers, customer_body(metadata={"user_id": 123}), None, 400, bad),
        ("POST", customers, customer_body(metadata={"user_id": None}), None, 400, "FIELD_INVALID"),
        ("POST", customers, customer_body(metadata="user_123"), None, 400, bad),
        ("POST", customers, customer_body(metadata={"[user]": "1"}), None, 400, invalid),
        ("POST", customers, customer_body(metadata=many), None, 400, invalid),
        ("POST", customers, customer_body(phone=1234567890), None, 400, bad),
        ("POST", customers, customer_body(phone="call me"), None, 400, invalid),
        ("POST", customers, customer_body(phone="1" * 30), None, 400, "FIELD_INVALID"),
        ("POST", customers, customer_body(name="J" * 5000), None, 400, "FIELD_INVALID"),
        ("POST", customers, customer_body(address={"city": "X"}), None, 400, "FIELD_UNKNOWN"),
        ("POST", customers, customer_body(), {}, 401, "CREDENTIALS_MISSING"),
        ("POST", customers, customer_body(), both(w), 403, "AMBIGUOUS_CREDENTIALS"),
        ("GET", f"{customers}?limit=-1&environment=test", None, None, 400, invalid),
        ("GET", f"{customers}?limit=ten&environment=test", None, None, 400, bad),
        ("GET", f"{customers}?limit=99999999999", None, None, 400, bad),
        ("GET", f"{customers}?limit=10&environment=live", None, None, 403, "ENVIRONMENT_MISMATCH"),
        ("GET", f"{customers}?limit=10&starting_after=cus_1", None, None, 400, "FIELD_UNKNOWN"),
        ("GET", f"{customers}/cus_1234567890?environment=test", None, None, 404, "NOT_FOUND"),
        ("GET", f"{cus}?environment=live", None, None, 403, "ENVIRONMENT_MISMATCH"),
        ("PUT", cus, {"name": 123}, None, 400, bad),
        ("PUT", cus, {"email": "nope"}, None, 400, "EMAIL_INVALID"),
        ("PUT", cus, {"phone": "1" * 30}, None, 400, "FIELD_INVALID"),
        ("PUT", cus, {"name": "Jane Doe", "balance": 5}, None, 400, "FIELD_UNKNOWN"),
        ("PUT", cus, {"metadata": {"[x]": "1"}}, None, 400, invalid),
        ("PUT", f"{customers}/cus_1234567890", {"name": "Jane Doe"}, None, 404, "NOT_FOUND"),
        ("DELETE", f"{customers}/cus_1234567890?environment=test", None, None, 404, "NOT_FOUND"),
        ("DELETE", f"{cus}?environment=live", None, None, 403, "ENVIRONMENT_MISMATCH"),
    ]
    refused_alike(w, cases)
    got = w.ok("GET", f"{cus}?environment=test")
    assert (got["name"], got["email"], got["metadata"]) == (
        "John Doe",
        "customer@example.com",
        {"user_id": "user_123"},
    )


def test_seed_003_subscription_status_asked_wrongly_is_a_4xx(world: World):
    w = world
    path = "/mgt/v1/customer/subscription"
    long = "a" * 400 + "@example.com"
    refused_alike(
        w,
        [
            (
                "GET",
                f"{path}?customerEmail=user@example.com&environment=test",
                None,
                None,
                404,
                "NOT_FOUND",
            ),
            ("GET", f"{path}?environment=test", None, None, 400, "FIELD_REQUIRED"),
            ("GET", f"{path}?customerEmail=", None, None, 400, "FIELD_REQUIRED"),
            ("GET", f"{path}?customerEmail=user", None, None, 400, "EMAIL_INVALID"),
            ("GET", f"{path}?customerEmail={long}", None, None, 400, "FIELD_INVALID"),
            (
                "GET",
                f"{path}?customerEmail=a@b.co&customerEmail=c@d.co",
                None,
                None,
                400,
                "MALFORMED_REQUEST",
            ),
            ("GET", f"{path}?customer_email=billing@acme.com", None, None, 400, "FIELD_UNKNOWN"),
            (
                "GET",
                f"{path}?customerEmail=billing@acme.com&environment=live",
                None,
                None,
                403,
                "ENVIRONMENT_MISMATCH",
            ),
            ("GET", f"{path}?customerEmail=billing@acme.com", None, {}, 401, "CREDENTIALS_MISSING"),
        ],
    )


# -- seed 001 -----------------------------------------------------------------------------------


def test_seed_001_account_and_credit_requests_made_wrong_are_a_4xx_that_change_nothing(
    world: World,
):
    w = world
    acc = "/mgt/v1/accounts"
    body = {"name": "Acme Corp", "email": "billing@acme.com", "alias": "your-internal-id-456"}
    grants = f"{acc}/your-internal-id-123/credits/grants"
    grant = {"creditType": "units", "amount": "50", "reason": "Welcome credits"}
    credits = f"{acc}/your-internal-id-123/credits"
    bad = "MALFORMED_REQUEST"
    amount = "AMOUNT_INVALID"
    cases: list[Case] = [
        ("POST", acc, with_(body, alias="your-internal-id-123"), None, 409, "ACCOUNT_ALIAS_TAKEN"),
        ("POST", acc, with_(body, name=123), None, 400, bad),
        ("POST", acc, with_(body, email="billing"), None, 400, "EMAIL_INVALID"),
        ("POST", acc, with_(body, alias="acct_123"), None, 400, "INVALID_ARGUMENT"),
        ("POST", acc, with_(body, alias="../x"), None, 400, "INVALID_ARGUMENT"),
        ("POST", acc, with_(body, alias="ünïcode-id"), None, 400, "INVALID_ARGUMENT"),
        ("POST", acc, with_(body, alias="x" * 201), None, 400, "FIELD_INVALID"),
        ("POST", acc, with_(body, id="acc_abc123"), None, 400, "FIELD_UNKNOWN"),
        ("POST", grants, with_(grant, amount=50), None, 400, bad),
        ("POST", grants, with_(grant, amount=50.5), None, 400, bad),
        ("POST", grants, with_(grant, amount="-50"), None, 400, amount),
        ("POST", grants, with_(grant, amount="0"), None, 400, amount),
        ("POST", grants, with_(grant, amount="5e1"), None, 400, amount),
        ("POST", grants, with_(grant, amount="NaN"), None, 400, amount),
        ("POST", grants, with_(grant, amount="9" * 21), None, 400, amount),
        ("POST", grants, with_(grant, amount="0." + "1" * 19), None, 400, amount),
        ("POST", grants, with_(grant, amount="５０"), None, 400, amount),
        ("POST", grants, with_(grant, amount=...), None, 400, "FIELD_REQUIRED"),
        ("POST", grants, with_(grant, creditType=...), None, 400, "FIELD_REQUIRED"),
        ("POST", grants, with_(grant, creditType="ünits"), None, 400, "INVALID_ARGUMENT"),
        ("POST", grants, with_(grant, creditType=["units"]), None, 400, bad),
        (
            "POST",
            grants,
            with_(grant, expiresAt="2030-01-01T00:00:00Z"),
            None,
            400,
            "FIELD_UNKNOWN",
        ),
        ("POST", f"{acc}/acc_abc123/credits/grants", grant, None, 404, "NOT_FOUND"),
        ("POST", grants, grant, {"authorization": "Bearer x"}, 401, "TOKEN_INVALID"),
        ("GET", f"{credits}/balance", None, None, 400, "FIELD_REQUIRED"),
        ("GET", f"{credits}/balance?type=units&type=api", None, None, 400, bad),
        ("GET", f"{credits}/balance?type=%C3%BCnits", None, None, 400, "INVALID_ARGUMENT"),
        ("GET", f"{acc}/acc_abc123/credits/balance?type=units", None, None, 404, "NOT_FOUND"),
        ("GET", f"{credits}/availability?type=units", None, None, 400, "FIELD_REQUIRED"),
        ("GET", f"{credits}/availability?type=units&required=-10", None, None, 400, amount),
        ("GET", f"{credits}/availability?type=units&required=ten", None, None, 400, amount),
        ("GET", f"{credits}/availability?type=units&required=1e1", None, None, 400, amount),
        ("GET", f"{credits}/availability?type=units&required=0", None, None, 400, amount),
        (
            "GET",
            f"{credits}/availability?type=units&required={'9' * 21}",
            None,
            None,
            400,
            amount,
        ),
        (
            "GET",
            f"{credits}/availability?type=units&required=10&x=1",
            None,
            None,
            400,
            "FIELD_UNKNOWN",
        ),
    ]
    refused_alike(w, cases)
    balance = w.ok("GET", f"{credits}/balance?type=units")
    assert balance["balance"] == "50"


def test_seed_001_checkout_body_made_wrong_is_a_4xx_that_creates_nothing(world: World):
    w = world
    fresh = w.ok("POST", "/mgt/v1/accounts", {"name": "Fresh", "alias": "seed-fresh"})["id"]
    fresh_token = w.ok(
        "POST", "/mgt/v1/token/issue", {"principal_id": "seed-fresh", "scopes": SCOPES}
    )["access_token"]
    body = {
        "accountId": fresh,
        "accountEmail": "billing@acme.com",
        "currency": "USD",
        "successUrl": "https://yourapp.com/welcome",
        "passThroughToken": "your-internal-reference",
    }
    bad = "MALFORMED_REQUEST"
    cases: list[Case] = [
        ("POST", SESSIONS, with_(body, accountId="acc_abc123"), None, 404, "NOT_FOUND"),
        ("POST", SESSIONS, with_(body, accountId=...), None, 400, "FIELD_REQUIRED"),
        ("POST", SESSIONS, with_(body, accountId=[fresh]), None, 400, bad),
        ("POST", SESSIONS, with_(body, account="your-internal-id-123"), None, 400, "FIELD_INVALID"),
        ("POST", SESSIONS, with_(body, accountEmail="billing"), None, 400, "EMAIL_INVALID"),
        ("POST", SESSIONS, with_(body, currency="EUR"), None, 400, "FIELD_INVALID"),
        ("POST", SESSIONS, with_(body, currency="XYZ"), None, 400, "CURRENCY_INVALID"),
        ("POST", SESSIONS, with_(body, currency=840), None, 400, bad),
        ("POST", SESSIONS, with_(body, passThroughToken=123), None, 400, bad),
        ("POST", SESSIONS, with_(body, passThroughToken="p" * 1001), None, 400, "FIELD_INVALID"),
        # Off the allow-list, by the account's own token alone (a backend's key may name any).
        (
            "POST",
            SESSIONS,
            with_(body, successUrl="https://evil.example/welcome"),
            buyer_alone(w, fresh_token),
            400,
            "REDIRECT_URL_NOT_ALLOWED",
        ),
        # Not an http(s) URL, or one with a user name: refused for the key too.
        ("POST", SESSIONS, with_(body, successUrl="javascript:alert(1)"), None, 400, NOT_OK),
        (
            "POST",
            SESSIONS,
            with_(body, successUrl="https://yourapp.com@evil.example/"),
            None,
            400,
            NOT_OK,
        ),
        ("POST", SESSIONS, with_(body, flowId="flow_1"), None, 400, "FIELD_UNKNOWN"),
        ("POST", SESSIONS, with_(body, pt="your-internal-reference"), None, 400, "FIELD_UNKNOWN"),
    ]
    refused_alike(w, cases)
    assert w.ok("GET", f"/mgt/v1/accounts/{fresh}")["email"] == ""


def test_seed_001_usage_event_made_wrong_is_a_4xx_that_stores_nothing(world: World):
    w = world
    event = {
        "uniqueId": f"evt_{uuid.uuid4().hex[:6]}",
        "account": w.ids["account"],
        "eventName": "api_call",
        "timestamp": "2025-03-09T15:03:17Z",
        "properties": {"endpoint": "/v1/analyze", "tokens": 1500},
    }
    events = "/mgt/v1/events"
    bad = "MALFORMED_REQUEST"
    cases: list[Case] = [
        ("POST", events, with_(event, account=...), None, 400, "FIELD_REQUIRED"),
        ("POST", events, with_(event, eventName=...), None, 400, "FIELD_REQUIRED"),
        ("POST", events, with_(event, timestamp=...), None, 400, "FIELD_REQUIRED"),
        ("POST", events, with_(event, account="acc_abc123"), None, 400, "ACCOUNT_UNKNOWN"),
        ("POST", events, with_(event, timestamp="yesterday"), None, 400, bad),
        ("POST", events, with_(event, timestamp=1741532597), None, 400, bad),
        (
            "POST",
            events,
            with_(event, timestamp="9999-12-31T23:59:59Z"),
            None,
            400,
            "EVENT_TIMESTAMP_IN_FUTURE",
        ),
        (
            "POST",
            events,
            with_(event, timestamp="1900-01-01T00:00:00Z"),
            None,
            400,
            "EVENT_TIMESTAMP_TOO_OLD",
        ),
        ("POST", events, with_(event, uniqueId=123456), None, 400, bad),
        ("POST", events, with_(event, uniqueId="evt\t1"), None, 400, "FIELD_INVALID"),
        ("POST", events, with_(event, properties="tokens=1500"), None, 400, bad),
        ("POST", events, with_(event, properties={"k": "\x00"}), None, 400, "FIELD_INVALID"),
        ("POST", events, with_(event, isTrial=True), None, 400, "FIELD_UNKNOWN"),
        (
            "POST",
            events,
            event,
            {"authorization": f"Bearer {w.ids['token']}"},
            403,
            "SERVICE_KEY_REQUIRED",
        ),
    ]
    refused_alike(w, cases)


def test_seed_001_portal_body_made_wrong_is_a_4xx_that_creates_nothing(world: World):
    w = world
    body = {
        "accountId": w.ids["account"],
        "planOverviewSettings": {"showSection": True, "allowSubscriptionCancel": True},
        "invoiceListSettings": {"showSection": True},
        "billingDetailsSettings": {"showSection": True},
    }
    bad = "MALFORMED_REQUEST"
    cases: list[Case] = [
        ("POST", PORTAL, with_(body, accountId="acc_abc123"), None, 404, "NOT_FOUND"),
        ("POST", PORTAL, with_(body, accountId=...), None, 400, "FIELD_REQUIRED"),
        ("POST", PORTAL, with_(body, planOverviewSettings={"showSection": 1}), None, 400, bad),
        ("POST", PORTAL, with_(body, planOverviewSettings=True), None, 400, bad),
        (
            "POST",
            PORTAL,
            with_(body, invoiceListSettings={"showSection": True, "pageSize": 5}),
            None,
            400,
            "FIELD_UNKNOWN",
        ),
        ("POST", PORTAL, with_(body, sessionUrl="https://x"), None, 400, "FIELD_UNKNOWN"),
        # A buyer's token names its own account only: another one is nobody's.
        ("POST", PORTAL, body, {"authorization": f"Bearer {w.ids['token']}"}, 404, "NOT_FOUND"),
    ]
    refused_alike(w, cases)
