"""CreateCheckoutSession callers whose deadline (50 ms) passes while the server waits on the
account's row (locked by another session): the caller gets DEADLINE_EXCEEDED; the server goes
on, and the retry with the same request_id (sent while the first still waits, or after)
answers one session, the same every time, and the provider holds exactly one."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text

from billing.v1 import checkout_pb2
from tests.checkout.support import World
from tests.conftest import bearer_md

pytestmark = pytest.mark.postgres


def _request(request_id: str) -> checkout_pb2.CreateCheckoutSessionRequest:
    return checkout_pb2.CreateCheckoutSessionRequest(
        items=[checkout_pb2.CheckoutItem(lookup_key="pro", quantity=1)],
        success_url="https://app.example/ok?cs={CHECKOUT_SESSION_ID}",
        cancel_url="https://app.example/pricing",
        request_id=request_id,
    )


def _waiting(admin: Any, holder: int) -> int:
    """Backends waiting on the holder's lock, or on a backend that does."""
    return int(
        admin.execute(
            text(
                "WITH first AS (SELECT pid FROM pg_stat_activity"
                "  WHERE :h = ANY(pg_blocking_pids(pid)) AND wait_event_type = 'Lock')"
                " SELECT count(*) FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock'"
                " AND (:h = ANY(pg_blocking_pids(a.pid))"
                "  OR EXISTS (SELECT 1 FROM first f WHERE f.pid = ANY(pg_blocking_pids(a.pid))))"
            ),
            {"h": holder},
        ).scalar_one()
    )


def _until(what: str, done: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.02)  # poll (bounded)
    raise AssertionError(f"{what} did not happen within {seconds} s")


@pytest.mark.parametrize("retry", ["after-release", "while-waiting"])
def test_a_checkout_whose_deadline_passes_under_the_account_lock_opens_one_session(
    pg_world: World, retry: str
) -> None:
    world = pg_world
    world.price("pro", group="plan")
    token, account = world.token()
    md = bearer_md(token)
    answers: list[Any] = []

    def ask() -> None:
        answers.append(
            world.checkout.CreateCheckoutSession(_request("late"), metadata=md, timeout=30)
        )

    engine = create_engine(world.deps.db.url)
    try:
        with (
            # Autocommit: pg_stat_activity is read afresh by every poll, not once per transaction.
            engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin,
            engine.connect() as locker,
        ):
            trans = locker.begin()
            locker.execute(
                text("SELECT id FROM billing_accounts WHERE id = :a FOR UPDATE"), {"a": account}
            )
            me = int(locker.execute(text("SELECT pg_backend_pid()")).scalar_one())
            worker = threading.Thread(target=ask)
            try:
                with pytest.raises(grpc.RpcError) as err:
                    world.checkout.CreateCheckoutSession(
                        _request("late"), metadata=md, timeout=0.05
                    )
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                _until("the checkout to wait on the lock", lambda: _waiting(admin, me) == 1)
                if retry == "while-waiting":
                    worker.start()
                    _until("the retry to wait", lambda: _waiting(admin, me) == 2)
            finally:
                trans.rollback()
            if retry == "while-waiting":
                worker.join(timeout=60)
                assert not worker.is_alive()
    finally:
        engine.dispose()
    if not answers:
        ask()
    ask()
    assert answers[0].session == answers[1].session
    listed = world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
    assert [s.id for s in listed] == [answers[0].session.stripe_checkout_session_id]
