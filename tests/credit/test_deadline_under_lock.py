"""A DebitCredits caller whose deadline (50 ms) runs out while the debit waits on a lock (the
balance row, or a grant row, held by another session): the caller gets DEADLINE_EXCEEDED and
cannot know whether the debit was made. Whatever the server did with it, the account is
debited at most once, and the retry with the same request_id answers the one debit, the same
answer every time: retried after the lock is let go, or sent while the first still waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2
from tests.conftest import SERVICE_MD
from tests.credit.lost_connection import (
    BALANCE_LOCK,
    GRANTS_LOCK,
    Served,
    funded_debit,
    served_with_pids,
    state,
)
from tests.credit.support import account, check_invariants, grant, rid, stub
from tests.helpers import error_reason

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def served(pg_shared_url: str) -> Iterator[Served]:
    with served_with_pids(pg_shared_url) as it:
        yield it


def _waiting_on(admin: psycopg.Connection[Any], locker: int) -> int:
    """How many backends wait on a lock that backend `locker` holds, or on one of those."""
    row = admin.execute(
        "WITH first AS (SELECT pid FROM pg_stat_activity"
        "  WHERE %s = ANY(pg_blocking_pids(pid)) AND wait_event_type = 'Lock')"
        " SELECT count(*) FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock'"
        " AND (%s = ANY(pg_blocking_pids(a.pid))"
        "  OR EXISTS (SELECT 1 FROM first f WHERE f.pid = ANY(pg_blocking_pids(a.pid))))",
        (locker, locker),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _until(what: str, done: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.02)  # poll (bounded)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def _retry(channel: grpc.Channel, request: Any) -> Any:
    """The retry's answer once the server has settled the first call: an answer in progress
    is retryable (ABORTED or UNAVAILABLE), never a 4xx about the request."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=10)
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE), (
                err.code(),
                error_reason(err),
                err.details(),
            )
            assert time.monotonic() < deadline, "the retry never got an answer"
            time.sleep(0.05)  # the first call is still settling (bounded)


def _debited_once(channel: grpc.Channel, deps: Any, request: Any, answers: list[Any]) -> None:
    for answer in answers:
        assert answer.balance_after == "2.5"
        assert [a.amount for a in answer.allocations] == ["10", "2.5"]
        assert answer == answers[0]
    assert _retry(channel, request) == answers[0]
    with Session(deps.db.engine) as s:
        after = state(s, request.account, request.request_id)
        assert after[0] == (Decimal("2.5"), 3)  # one debit
        assert after[2:] == (1, 1)  # one ledger entry, one stored response
        check_invariants(s, request.account)


@pytest.mark.parametrize("lock", [BALANCE_LOCK, GRANTS_LOCK], ids=["balance", "grants"])
@pytest.mark.parametrize("retry", ["after-release", "while-waiting"])
def test_a_debit_whose_deadline_passes_under_a_lock_is_made_at_most_once(
    served: Served, lock: str, retry: str
) -> None:
    channel, deps, _pids, url = served
    _acct, request = funded_debit(channel)
    retried: list[Any] = []
    with (
        psycopg.connect(url, autocommit=True) as admin,
        psycopg.connect(url) as locker,
    ):
        locker.execute(lock, (request.account,))
        me = locker.info.backend_pid
        try:
            with pytest.raises(grpc.RpcError) as err:
                stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=0.05)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # The server goes on with it: its backend waits on the lock (the case this is about).
            _until("the debit to wait on the lock", lambda: _waiting_on(admin, me) == 1)
            if retry == "while-waiting":
                worker = threading.Thread(target=lambda: retried.append(_retry(channel, request)))
                worker.start()
                # The retry has reached the database (waiting on the key or on the lock).
                _until("the retry to wait", lambda: _waiting_on(admin, me) == 2)
                time.sleep(0.2)
        finally:
            locker.rollback()
        if retry == "while-waiting":
            worker.join(timeout=30)
            assert not worker.is_alive()
    _debited_once(channel, deps, request, retried or [_retry(channel, request)])


def test_debits_racing_on_one_account_with_short_deadlines_each_debit_once(
    served: Served,
) -> None:
    """Real contention: 12 clients debit one account at once, each with a 50 ms deadline
    (most give up while waiting on the others' balance lock), then each retries its own
    request_id until answered: every request is debited exactly once, and its retries all
    answer the same."""
    channel, deps, _pids, _url = served
    _, acct, _ = account(channel)
    grant(channel, acct, "100")
    requests = [
        credit_pb2.DebitCreditsRequest(
            account=acct, credit_type="units", amount=f"1.{i:02d}", request_id=rid()
        )
        for i in range(12)
    ]
    start = threading.Barrier(len(requests))
    gave_up: list[str] = []

    def hurry(request: Any) -> None:
        start.wait(timeout=30)
        try:
            stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=0.05)
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
            gave_up.append(request.request_id)

    threads = [threading.Thread(target=hurry, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    answers = [_retry(channel, r) for r in requests]
    assert [_retry(channel, r) for r in requests] == answers
    total = sum(Decimal(r.amount) for r in requests)
    with Session(deps.db.engine) as s:
        for r in requests:
            assert state(s, acct, r.request_id)[2:] == (1, 1)
        assert state(s, acct, requests[0].request_id)[0][0] == Decimal("100") - total
        check_invariants(s, acct)
