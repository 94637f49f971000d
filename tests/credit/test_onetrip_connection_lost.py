"""DebitCredits' two flushes (`tollbooth.credit.onetrip`) when PostgreSQL drops the server's
connection: during the first flush, between the flushes, during the second.

The one-call path (`tollbooth.credit.onecall`) is turned off here (autouse fixture), so every
debit takes the two flushes, as one that the function hands back does; the one call's own
cases are in test_onecall_connection_lost.py.

The connection is killed for real (`pg_terminate_backend` from another session) at the named
moment, through a real gRPC channel: the caller gets UNAVAILABLE SERVICE_UNAVAILABLE (retry
with the same request_id), nothing of the debit is left (balance, grants, ledger, idempotency
key), the next calls get a live connection, and the retry with the same request_id debits
exactly once.

Moments: "during" a flush is the server's backend waiting on a row lock that another session
holds (the balance row for the first flush's SELECT ... FOR UPDATE, a grant row for the second
flush's UPDATE), found by its lock wait (`pg_blocking_pids`, `wait_event_type`), never by the
text of its statement, and checked to be the server's connection; whether the engine has
planned the debit yet tells which flush it waits in. "Between" is the engine's planning in
Python, while the first flush's balance lock is held.

And the ambiguous case: the second flush's COMMIT done, the connection cut before the server
reads its answer (a TCP proxy that drops the stream at COMMIT's CommandComplete). The caller
cannot know the debit was made; the retry with the same request_id answers the stored
response, and the account is debited once.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2
from tests.conftest import SERVICE_MD, make_env
from tests.credit.support import account, balance, check_invariants, grant, rid, stub
from tests.devstack import serving
from tests.helpers import error_reason
from tests.tcpproxy import Proxy
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.credit import debits, onecall
from tollbooth.db import normalize_url
from tollbooth.db.models import CreditBalance, CreditGrant, CreditLedgerEntry, IdempotencyKey

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def two_flushes_only() -> Iterator[None]:
    """Every debit through the two flushes: the one call hands each one back (a patch of its
    own, which the tests' `monkeypatch.undo()` leaves in place)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onecall, "debit", lambda *args, **kwargs: None)
        yield


def _libpq(url: str) -> str:
    return normalize_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="module")
def served(pg_shared_url: str) -> Iterator[tuple[grpc.Channel, Deps, dict[int, int], str]]:
    """A server on the shared database, a channel to it, the backend pid of the connection
    each server thread checked out last, and a libpq URL of the database."""
    deps = Deps.build(Settings.from_env(make_env(pg_shared_url)))
    pids: dict[int, int] = {}

    def checked_out(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        pids[threading.get_ident()] = dbapi_conn.info.backend_pid

    event.listen(deps.db.engine, "checkout", checked_out)
    try:
        with serving(deps) as ch:
            yield ch, deps, pids, _libpq(pg_shared_url)
    finally:
        deps.db.dispose()


def _terminate(admin: psycopg.Connection[Any], pid: int) -> None:
    """Kill backend `pid` and wait until it is gone."""
    row = admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
    assert row is not None and row[0] is True, pid


def _blocked_by(admin: psycopg.Connection[Any], locker: int, server: dict[int, int]) -> int:
    """The pid of the one backend waiting on a lock that backend `locker` holds (found by its
    lock wait, never by its statement's text), which must be one of the server's."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE %s = ANY(pg_blocking_pids(pid)) AND wait_event_type = 'Lock'",
            (locker,),
        ).fetchall()
        assert len(rows) <= 1, rows
        if rows:
            pid = int(rows[0][0])
            assert pid in server.values(), (pid, server)  # the server's connection
            return pid
        time.sleep(0.02)  # poll (bounded): the debit has not reached the lock yet
    raise AssertionError("the debit never waited on the test's lock")


def _debit_in_thread(
    channel: grpc.Channel, request: credit_pb2.DebitCreditsRequest
) -> Callable[[], Any]:
    """Start the call; the returned function joins it and gives its reply or its RpcError."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=60))
        except grpc.RpcError as err:
            out.append(err)

    thread = threading.Thread(target=run)
    thread.start()

    def join() -> Any:
        thread.join(timeout=90)
        assert not thread.is_alive() and len(out) == 1
        return out[0]

    return join


def _planned(monkeypatch: Any) -> list[int]:
    """A list that grows by one each time the engine plans a debit (after the first flush)."""
    planned: list[int] = []
    plan = debits.plan_debit

    def counted(*args: Any, **kwargs: Any) -> Any:
        planned.append(1)
        return plan(*args, **kwargs)

    monkeypatch.setattr(debits, "plan_debit", counted)
    return planned


def _kill_at_lock(
    served: Any,
    request: credit_pb2.DebitCreditsRequest,
    monkeypatch: Any,
    *,
    lock: str,
    planned_before: list[int],
) -> Any:
    """Hold the rows `lock` selects (FOR UPDATE) in a test transaction, start the debit,
    kill the server's backend once it waits on them, release; the debit's answer. When it
    waits, the engine has planned the debit `planned_before` times (which flush it is in)."""
    channel, _deps, pids, url = served
    planned = _planned(monkeypatch)
    with (
        psycopg.connect(url, autocommit=True) as admin,
        psycopg.connect(url) as locker,
    ):
        locker.execute(lock, (request.account,))
        join = _debit_in_thread(channel, request)
        try:
            pid = _blocked_by(admin, locker.info.backend_pid, pids)
            assert planned == planned_before
            _terminate(admin, pid)
        finally:
            locker.rollback()
        return join()


def _kill_during_first_flush(
    served: Any, request: credit_pb2.DebitCreditsRequest, monkeypatch: Any
) -> Any:
    # The first flush waits at the balance lock (after BEGIN and the key's claim), before
    # the engine plans.
    lock = "SELECT 1 FROM credit_balances WHERE billing_account_id = %s FOR UPDATE"
    return _kill_at_lock(served, request, monkeypatch, lock=lock, planned_before=[])


def _kill_between_flushes(
    served: Any, request: credit_pb2.DebitCreditsRequest, monkeypatch: Any
) -> Any:
    channel, _deps, pids, url = served
    planned = debits.plan_debit
    killed: list[int] = []

    def plan_after_the_kill(*args: Any, **kwargs: Any) -> Any:
        # The server thread, after the first flush: its connection holds the balance lock.
        with psycopg.connect(url, autocommit=True) as admin:
            pid = pids[threading.get_ident()]
            _terminate(admin, pid)
        killed.append(pid)
        return planned(*args, **kwargs)

    monkeypatch.setattr(debits, "plan_debit", plan_after_the_kill)
    try:
        return _debit_in_thread(channel, request)()
    finally:
        monkeypatch.undo()
        assert len(killed) == 1  # the two-flush path ran, and was cut there


def _kill_during_second_flush(
    served: Any, request: credit_pb2.DebitCreditsRequest, monkeypatch: Any
) -> Any:
    # The first flush reads the grants without locking them; the second one (the debit's
    # writes, their first part the grants' UPDATE) waits at their lock, once planned.
    lock = "SELECT 1 FROM credit_grants WHERE billing_account_id = %s FOR UPDATE"
    return _kill_at_lock(served, request, monkeypatch, lock=lock, planned_before=[1])


def _state(session: Session, acct: str, key: str) -> tuple[Any, ...]:
    b = session.execute(
        select(CreditBalance.balance, CreditBalance.seq).where(
            CreditBalance.billing_account_id == acct
        )
    ).one()
    remaining = session.execute(
        select(CreditGrant.id, CreditGrant.remaining, CreditGrant.state)
        .where(CreditGrant.billing_account_id == acct)
        .order_by(CreditGrant.id)
    ).all()
    debits_of_key = session.execute(
        select(func.count())
        .select_from(CreditLedgerEntry)
        .where(CreditLedgerEntry.billing_account_id == acct, CreditLedgerEntry.request_id == key)
    ).scalar_one()
    keys = session.execute(
        select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.key == key)
    ).scalar_one()
    return tuple(b), tuple(tuple(r) for r in remaining), debits_of_key, keys


@pytest.mark.parametrize(
    "kill",
    [_kill_during_first_flush, _kill_between_flushes, _kill_during_second_flush],
    ids=["during-first-flush", "between-flushes", "during-second-flush"],
)
def test_a_connection_killed_in_the_two_flushes_is_unavailable_and_the_retry_debits_once(
    served: Any, kill: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel, deps, _pids, _url = served
    _, acct, _ = account(channel)
    grant(channel, acct, "10")
    grant(channel, acct, "5", priority=1)
    request = credit_pb2.DebitCreditsRequest(
        account=acct, credit_type="units", amount="12.5", request_id=rid(), metadata={"k": "v"}
    )
    with Session(deps.db.engine) as s:
        before = _state(s, acct, request.request_id)
    assert before[0] == (Decimal("15"), 2) and before[2:] == (0, 0)

    err = kill(served, request, monkeypatch)

    assert isinstance(err, grpc.RpcError), err
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
    assert error_reason(err) == "SERVICE_UNAVAILABLE"
    assert "postgres" not in (err.details() or "").lower()
    with Session(deps.db.engine) as s:
        assert _state(s, acct, request.request_id) == before  # nothing of the debit
        check_invariants(s, acct)
    # The same request again (the killed connection is not handed out): debited once.
    first = stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=30)
    assert first.balance_after == "2.5"
    assert [a.amount for a in first.allocations] == ["10", "2.5"]
    again = stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=30)
    assert again == first
    assert balance(channel, acct).balance == "2.5"
    with Session(deps.db.engine) as s:
        after = _state(s, acct, request.request_id)
        assert after[2:] == (1, 1)  # one ledger entry, one stored response
        check_invariants(s, acct)


class CutAtCommit(Proxy):
    """A TCP proxy to PostgreSQL that, once armed, drops the connection whose server answers a
    COMMIT: the answers before it reach the client, the COMMIT's CommandComplete and anything
    after do not (the transaction is committed; the client cannot know)."""

    def __init__(self, host: str, port: int) -> None:
        self.armed = threading.Event()
        self.cuts = 0
        super().__init__(host, port)

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        """The server's messages (type byte, length), forwarded whole, up to the cut."""
        buf = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                buf += data
                out = b""
                while len(buf) >= 5:
                    size = 1 + struct.unpack("!I", buf[1:5])[0]
                    if len(buf) < size:
                        break
                    message, buf = buf[:size], buf[size:]
                    if message[:1] == b"C" and message[5:12] == b"COMMIT\0" and self.armed.is_set():
                        self.armed.clear()
                        self.cuts += 1
                        client.sendall(out)
                        raise OSError("cut")
                    out += message
                client.sendall(out)
        self._end(server, client)


@pytest.fixture(scope="module")
def proxied(pg_shared_url: str) -> Iterator[tuple[grpc.Channel, Deps, CutAtCommit]]:
    """A server whose database connections go through `CutAtCommit`."""
    proxy = CutAtCommit.to(pg_shared_url)
    deps = Deps.build(Settings.from_env(make_env(proxy.through(pg_shared_url))))
    try:
        with serving(deps) as ch:
            yield ch, deps, proxy
    finally:
        deps.db.dispose()
        proxy.close()


def test_an_answer_lost_after_commit_is_unavailable_and_the_retry_replays_the_one_debit(
    proxied: tuple[grpc.Channel, Deps, CutAtCommit],
) -> None:
    channel, deps, proxy = proxied
    _, acct, _ = account(channel)
    grant(channel, acct, "10")
    grant(channel, acct, "5", priority=1)
    request = credit_pb2.DebitCreditsRequest(
        account=acct, credit_type="units", amount="12.5", request_id=rid()
    )
    proxy.armed.set()
    with pytest.raises(grpc.RpcError) as exc:
        stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=30)
    assert proxy.cuts == 1
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value.details()
    assert error_reason(exc.value) == "SERVICE_UNAVAILABLE"
    with Session(deps.db.engine) as s:
        done = _state(s, acct, request.request_id)
        assert done[0] == (Decimal("2.5"), 3) and done[2:] == (1, 1)  # committed, once
        stored = s.execute(
            select(IdempotencyKey.response).where(IdempotencyKey.key == request.request_id)
        ).scalar_one()
        check_invariants(s, acct)
    retried = stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=30)
    assert retried == credit_pb2.CreditDebit.FromString(stored)
    assert retried.balance_after == "2.5"
    assert [a.amount for a in retried.allocations] == ["10", "2.5"]
    assert balance(channel, acct).balance == "2.5"
    with Session(deps.db.engine) as s:
        assert _state(s, acct, request.request_id) == done
