"""Every PostgreSQL connection of the server and the sidecar terminated every 100 ms while
accounts create checkouts and pay them, the provider's webhooks delivered through the sidecar
meanwhile (real concurrent clients, the sandbox redelivering what the sidecar refused):
every failed CreateCheckoutSession answers UNAVAILABLE (never INTERNAL, never a 4xx), its
retry with the same request_id answers one session, the provider holds one session per
request, and once the kills stop every paid checkout is fulfilled exactly once (its credits
granted once, one credits.granted notice each).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from billing.v1 import catalog_pb2
from tests.checkout.support import World, start_world, wait_for
from tests.credit.lost_connection import libpq
from tests.helpers import error_reason
from tollbooth.app import inbox_worker
from tollbooth.webhooks import service
from tollbooth.webhooks import worker as worker_module

pytestmark = pytest.mark.postgres

ACCOUNTS = 3
EACH = 2
GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="10", on_purchase=True)]


def _holds(world: World, account: str, amount: str) -> bool:
    return world.balance(account, "api_calls") == amount


def _answered(call: Any) -> Any:
    """The call's answer; after the kills a call may still meet a pooled connection killed
    less than a second ago (not pinged yet: `tollbooth.db`), answered UNAVAILABLE once."""
    for _ in range(3):
        try:
            return call()
        except grpc.RpcError as err:
            assert (err.code(), error_reason(err)) == (
                grpc.StatusCode.UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
            )
    return call()


@pytest.fixture
def world(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The stack with the sandbox delivering, and the inbox worker `serve-grpc` runs beside
    the server (it applies again what failed), retrying after 100 ms. An attempt whose failure
    could not be recorded either (that connection killed too) is retried once its lease runs
    out: 120 s, 2 s here. The clients retry faster than `session_creates` allows (20 a
    minute, every attempt counted): that limit is off here."""
    monkeypatch.setattr(service, "LEASE_SEC", 2)
    monkeypatch.setattr(worker_module, "LEASE_SEC", 2)
    w = start_world(
        pg_url,
        tmp_path,
        BILLING_INBOX_RETRY_FIRST_MS="100",
        BILLING_RATE_LIMIT_SESSION_CREATES="off",
    )
    worker = inbox_worker(w.deps, interval_sec=0.1).start()
    yield w
    worker.stop()
    w.stop()


def test_checkouts_and_their_webhooks_under_repeated_kills_are_each_fulfilled_once(
    world: World, pg_url: str
) -> None:
    world.price("pack", recurring=False, stackable=True, grants=GRANTS)
    tokens = [world.token() for _ in range(ACCOUNTS)]
    seen: list[str] = []
    paid: dict[str, list[Any]] = {account: [] for _token, account in tokens}
    lock = threading.Lock()
    killing = threading.Event()
    killing.set()
    stop = time.monotonic() + 25

    def killer() -> None:
        with psycopg.connect(libpq(pg_url), autocommit=True) as admin:
            while killing.is_set():
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                time.sleep(0.1)

    def buyer(token: str, account: str) -> None:
        for i in range(EACH):
            request_id = f"chaos-{account}-{i}"
            while True:
                try:
                    answer = world.buy(token, "pack", request_id=request_id)
                    break
                except grpc.RpcError as err:
                    with lock:
                        seen.append(f"{err.code().name} {error_reason(err)}")
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                    assert time.monotonic() < stop
                    time.sleep(0.02)
            world.pay(answer.session.stripe_checkout_session_id)
            with lock:
                paid[account].append((request_id, answer.session))

    kill = threading.Thread(target=killer)
    kill.start()
    buyers = [threading.Thread(target=buyer, args=pair) for pair in tokens]
    try:
        for b in buyers:
            b.start()
        time.sleep(3)  # the kills go on for a while under the load
    finally:
        killing.clear()
        kill.join(timeout=30)
    for b in buyers:
        b.join(timeout=60)
        assert not b.is_alive()
    assert set(seen) <= {"UNAVAILABLE SERVICE_UNAVAILABLE", "UNAVAILABLE PROVIDER_UNAVAILABLE"}
    world.settled()
    for token, account in tokens:
        assert len(paid[account]) == EACH
        for request_id, session in paid[account]:  # the retry answers the same session
            again = _answered(partial(world.buy, token, "pack", request_id=request_id)).session
            assert again.stripe_checkout_session_id == session.stripe_checkout_session_id
        wait_for(
            partial(_holds, world, account, str(10 * EACH)),
            30,
            "the paid checkouts to be fulfilled",
        )
    world.settled()
    for _token, account in tokens:
        assert world.balance(account, "api_calls") == str(10 * EACH)
        assert world.notifications(account).count("credits.granted") == EACH
    listed = world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
    assert sorted(s.id for s in listed) == sorted(
        session.stripe_checkout_session_id for pairs in paid.values() for _r, session in pairs
    )
