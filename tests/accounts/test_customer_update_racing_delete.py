"""Seed 003's `PUT /v1/stripe/customers/{id}` racing its `DELETE`, through Envoy on PostgreSQL
with the sandbox: an update that loses to a delete is 404 NOT_FOUND, as any request naming a
deleted customer is, never the provider's refusal of the deleted customer (400
PROVIDER_REQUEST_INVALID), and an update refused so changes nothing stored."""

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
from tests.conftest import PG_ENV
from tests.devstack import Response, throwaway_postgres
from tollbooth.db import normalize_url

pytestmark = pytest.mark.envoy

CUSTOMERS = "/mgt/v1/customers"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Shop, str]]:
    admin = os.environ.get(PG_ENV, "").strip()
    if not admin:
        pytest.skip(f"row locks in the order they were asked for: PostgreSQL ({PG_ENV})")
    tmp = tmp_path_factory.mktemp("customer-race")
    with contextlib.ExitStack() as scope:
        url = scope.enter_context(throwaway_postgres(admin, "tollbooth_cusrace"))
        made = start_shop(tmp, url)
        scope.callback(made.close)
        yield made, url


def customer(shop: Shop) -> dict[str, Any]:
    resp = shop.request(
        "POST",
        CUSTOMERS,
        {"email": f"race-{uuid.uuid4().hex[:8]}@example.com", "name": "John Doe"},
    )
    assert resp.status == 200, resp.body
    return resp.json()  # type: ignore[no-any-return]


def in_thread(call: Any) -> tuple[threading.Thread, list[Response]]:
    out: list[Response] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


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


def account_name(engine: Any, account_id: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT name FROM billing_accounts WHERE id = :id"), {"id": account_id}
            ).scalar_one()
        )


def test_an_update_queued_behind_a_delete_is_not_found_and_changes_nothing(
    shop: tuple[Shop, str],
) -> None:
    """The update read the customer before the delete committed, then waited for the
    account's row behind it: once it has the row, the customer is deleted."""
    w, url = shop
    made = customer(w)
    cus, account = made["id"], made["account_id"]
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as holder:
            holder.execute(
                text("SELECT id FROM billing_accounts WHERE id = :id FOR UPDATE"), {"id": account}
            )
            deleting, deleted = in_thread(lambda: w.request("DELETE", f"{CUSTOMERS}/{cus}"))
            wait_for(lambda: waiting_on_locks(engine) >= 1, 30, "the delete to wait for the row")
            updating, updated = in_thread(
                lambda: w.request("PUT", f"{CUSTOMERS}/{cus}", {"name": "Jane Doe"})
            )
            wait_for(lambda: waiting_on_locks(engine) >= 2, 30, "the update to queue behind it")
            holder.rollback()
        deleting.join(30)
        updating.join(30)
        assert deleted[0].status == 200, deleted[0].body
        assert (updated[0].status, updated[0].reason) == (404, "NOT_FOUND"), updated[0].body
        assert account_name(engine, account) == "John Doe"
    finally:
        engine.dispose()


def test_an_update_whose_provider_call_follows_a_delete_is_not_found(
    shop: tuple[Shop, str],
) -> None:
    """The update committed, then the customer was deleted (here and at the provider) before
    the update reached the provider: the provider's "No such customer" is the deletion, 404."""
    w, _ = shop
    made = customer(w)
    cus = made["id"]
    stall = w.sandbox.stalls.add("POST", f"/v1/customers/{cus}", seconds=30)
    try:
        updating, updated = in_thread(
            lambda: w.request("PUT", f"{CUSTOMERS}/{cus}", {"name": "Jane Doe"})
        )
        assert stall.entered.wait(30), "the update never reached the provider"
        deleted = w.request("DELETE", f"{CUSTOMERS}/{cus}")
        assert deleted.status == 200, deleted.body
    finally:
        stall.release.set()
    updating.join(30)
    assert (updated[0].status, updated[0].reason) == (404, "NOT_FOUND"), updated[0].body
    again = w.request("GET", f"{CUSTOMERS}/{cus}")
    assert (again.status, again.reason) == (404, "NOT_FOUND")
