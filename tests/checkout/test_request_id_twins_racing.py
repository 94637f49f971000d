"""Seed 003's checkout body sent twice at once under one `request_id`, the two differing in a
URL, through Envoy on PostgreSQL with the sandbox: the one whose answer is stored first is
answered, and the other is 400 IDEMPOTENCY_KEY_REUSED, as it is when it comes second, having
changed nothing. Here the
first is answered the open session of the price (it asks for exactly what that session asks
for), and the other, asking for another cancel URL, must not be handed that session (it is
not what it asked for, and its own request expired it meanwhile)."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.checkout.support import Shop, start_shop, wait_for
from tests.conftest import PG_ENV, SERVICE_KEY
from tests.devstack import Response, throwaway_postgres
from tollbooth.db import normalize_url

pytestmark = pytest.mark.envoy

SESSIONS = "/api/v1/checkout/sessions"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Shop, str]]:
    admin = os.environ.get(PG_ENV, "").strip()
    if not admin:
        pytest.skip(f"a table lock holds one request at its claim: PostgreSQL ({PG_ENV})")
    tmp = tmp_path_factory.mktemp("twins")
    with contextlib.ExitStack() as scope:
        url = scope.enter_context(throwaway_postgres(admin, "tollbooth_twins"))
        made = start_shop(tmp, url, BILLING_REDIRECT_ORIGINS="https://yourapp.com")
        scope.callback(made.close)
        yield made, url


def one_time_price(shop: Shop) -> str:
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
            "unit_amount": 2999,
            "type": "PRICE_TYPE_ONE_TIME",
            "lookup_key": f"ebook-{uuid.uuid4().hex[:8]}",
        },
    )
    assert price.status == 200, price.body
    return str(price.json()["price_id"])


def seed_body(price: str, request_id: str, cancel_url: str) -> dict[str, Any]:
    return {
        "line_items": [{"price": price, "quantity": 1}],
        "mode": "payment",
        "success_url": "https://yourapp.com/success",
        "cancel_url": cancel_url,
        "customer_email": "customer@example.com",
        "request_id": request_id,
    }


def waiting_on_locks(engine: Any) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def in_thread(call: Any) -> tuple[threading.Thread, list[Response]]:
    out: list[Response] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


def session_id(resp: Response) -> str:
    assert resp.status == 200, resp.body
    return str(resp.json()["session"]["checkout_session_id"])


def checkouts_of(engine: Any, account_id: str) -> list[str]:
    with engine.connect() as conn:
        return [
            str(row[0])
            for row in conn.execute(
                text("SELECT id FROM checkout_sessions WHERE billing_account_id = :a"),
                {"a": account_id},
            )
        ]


def test_a_twin_asking_other_urls_is_refused_and_leaves_the_first_ones_checkout_payable(
    shop: tuple[Shop, str],
) -> None:
    w, url = shop
    token = w.token(f"twins-{uuid.uuid4().hex[:8]}")
    headers = {"authorization": f"Bearer {token}", "x-api-key": SERVICE_KEY}
    price = one_time_price(w)
    same = "https://yourapp.com/cancel"
    other = "https://yourapp.com/cancel-other"

    def post(request_id: str, cancel_url: str) -> Response:
        return w.stack.request(  # type: ignore[no-any-return]
            "POST", SESSIONS, seed_body(price, request_id, cancel_url), headers
        )

    opened = post(uuid.uuid4().hex, same)  # the price's open session
    open_one = session_id(opened)
    account_id = opened.json()["session"]["billing_account_id"]
    stripe_id = opened.json()["session"]["stripe_checkout_session_id"]
    twin_key = uuid.uuid4().hex
    engine = create_engine(normalize_url(url))
    stall = w.sandbox.stalls.add("POST", "/v1/checkout/sessions", seconds=30)
    try:
        with engine.connect() as holder:
            # The first twin (asking what the open session asks) gets as far as writing to
            # the request_id's key and waits there; the second starts then, and gets as far
            # as it can (before the fix: to the provider, expiring the open session).
            holder.execute(text("LOCK TABLE idempotency_keys IN EXCLUSIVE MODE"))
            first, first_out = in_thread(lambda: post(twin_key, same))
            wait_for(lambda: waiting_on_locks(engine) >= 1, 30, "the first twin at its claim")
            second, second_out = in_thread(lambda: post(twin_key, other))
            wait_for(  # at the provider, or waiting for the first twin's plan
                lambda: stall.entered.is_set() or waiting_on_locks(engine) >= 2,
                30,
                "the second twin to get as far as it can",
            )
            holder.rollback()
        first.join(30)
        assert session_id(first_out[0]) == open_one
    finally:
        stall.release.set()
    second.join(30)
    refused = second_out[0]
    assert (refused.status, refused.reason) == (400, "IDEMPOTENCY_KEY_REUSED"), refused.body
    # Either sent again: the same answers.
    assert session_id(post(twin_key, same)) == open_one
    again = post(twin_key, other)
    assert (again.status, again.reason) == (400, "IDEMPOTENCY_KEY_REUSED"), again.body
    # The refused twin changed nothing: the first one's answer can still be paid, and no
    # checkout of its own was made.
    assert w.stripe.v1.checkout.sessions.retrieve(stripe_id).status == "open"
    assert checkouts_of(engine, account_id) == [open_one]
    engine.dispose()
