"""What the connection-lost tests of DebitCredits share (test_onetrip_connection_lost.py for
the two flushes, test_onecall_connection_lost.py for the one call): a server whose backends are
known by thread, killing a backend once it waits on a lock the test holds, a proxy that cuts
the server's connection once a chosen answer is committed, and the two outcomes every case
asserts (a killed debit leaves nothing and its retry debits once; a debit whose answer was lost
is replayed from its stored response).
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
from sqlalchemy import event, func, make_url, select
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2
from tests.conftest import SERVICE_MD, make_env
from tests.credit.support import account, balance, check_invariants, grant, rid, stub
from tests.devstack import serving
from tests.helpers import error_reason
from tests.tcpproxy import Proxy
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db import normalize_url
from tollbooth.db.models import CreditBalance, CreditGrant, CreditLedgerEntry, IdempotencyKey

Served = tuple[grpc.Channel, Deps, dict[int, int], str]

BALANCE_LOCK = "SELECT 1 FROM credit_balances WHERE billing_account_id = %s FOR UPDATE"
# Debits read the grants without locking them; their UPDATE of them waits here.
GRANTS_LOCK = "SELECT 1 FROM credit_grants WHERE billing_account_id = %s FOR UPDATE"


def libpq(url: str) -> str:
    return normalize_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.contextmanager
def served_with_pids(pg_url: str) -> Iterator[Served]:
    """A server on the database, a channel to it, the backend pid of the connection each
    server thread checked out last, and a libpq URL of the database."""
    deps = Deps.build(Settings.from_env(make_env(pg_url)))
    pids: dict[int, int] = {}

    def checked_out(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        pids[threading.get_ident()] = dbapi_conn.info.backend_pid

    event.listen(deps.db.engine, "checkout", checked_out)
    try:
        with serving(deps) as ch:
            yield ch, deps, pids, libpq(pg_url)
    finally:
        deps.db.dispose()


def terminate(admin: psycopg.Connection[Any], pid: int) -> None:
    """Kill backend `pid` and wait until it is gone."""
    row = admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone()
    assert row is not None and row[0] is True, pid


def blocked_by(admin: psycopg.Connection[Any], locker: int, server: dict[int, int]) -> int:
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


def debit_in_thread(
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


def kill_at_lock(
    served: Served,
    request: credit_pb2.DebitCreditsRequest,
    lock: str,
    while_blocked: Callable[[], None] = lambda: None,
) -> Any:
    """Hold the rows `lock` selects (FOR UPDATE) in a test transaction, start the debit, kill
    the server's backend once it waits on them (`while_blocked` runs first), release; the
    debit's answer."""
    channel, _deps, pids, url = served
    with (
        psycopg.connect(url, autocommit=True) as admin,
        psycopg.connect(url) as locker,
    ):
        locker.execute(lock, (request.account,))
        join = debit_in_thread(channel, request)
        try:
            pid = blocked_by(admin, locker.info.backend_pid, pids)
            while_blocked()
            terminate(admin, pid)
        finally:
            locker.rollback()
        return join()


def state(session: Session, acct: str, key: str) -> tuple[Any, ...]:
    """The account's balance and seq, its grants, the ledger entries and stored responses of
    request `key`."""
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


def funded_debit(channel: grpc.Channel) -> tuple[str, credit_pb2.DebitCreditsRequest]:
    """An account holding 10 and 5 (priority 1) units, and a debit of 12.5 that takes both."""
    _, acct, _ = account(channel)
    grant(channel, acct, "10")
    grant(channel, acct, "5", priority=1)
    request = credit_pb2.DebitCreditsRequest(
        account=acct, credit_type="units", amount="12.5", request_id=rid(), metadata={"k": "v"}
    )
    return acct, request


def _debited_once(channel: grpc.Channel, request: credit_pb2.DebitCreditsRequest) -> Any:
    """The request (again): 12.5 of 15 taken, 10 then 2.5; its replay answers the same."""
    first = stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=30)
    assert first.balance_after == "2.5"
    assert [a.amount for a in first.allocations] == ["10", "2.5"]
    again = stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=30)
    assert again == first
    assert balance(channel, request.account).balance == "2.5"
    return first


def _unavailable(err: Any) -> None:
    assert isinstance(err, grpc.RpcError), err
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
    assert error_reason(err) == "SERVICE_UNAVAILABLE"
    assert "postgres" not in (err.details() or "").lower()


def check_killed_then_once(
    channel: grpc.Channel,
    deps: Deps,
    request: credit_pb2.DebitCreditsRequest,
    kill: Callable[[], Any],
) -> None:
    """`kill()` makes the debit and kills its connection on the way: the caller gets
    UNAVAILABLE, nothing of the debit is left, and the retry with the same request_id (on a
    live connection) debits exactly once."""
    acct, key = request.account, request.request_id
    with Session(deps.db.engine) as s:
        before = state(s, acct, key)
    assert before[0] == (Decimal("15"), 2) and before[2:] == (0, 0)
    _unavailable(kill())
    with Session(deps.db.engine) as s:
        assert state(s, acct, key) == before  # nothing of the debit
        check_invariants(s, acct)
    _debited_once(channel, request)
    with Session(deps.db.engine) as s:
        assert state(s, acct, key)[2:] == (1, 1)  # one ledger entry, one stored response
        check_invariants(s, acct)


def check_lost_then_replayed(
    channel: grpc.Channel, deps: Deps, proxy: CutAfter, request: credit_pb2.DebitCreditsRequest
) -> None:
    """The debit's answer is lost after it committed (`proxy` armed): the caller gets
    UNAVAILABLE, the debit is there once, and the retry answers its stored response."""
    acct, key = request.account, request.request_id
    proxy.armed.set()
    err: Any = None
    try:
        stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=30)
    except grpc.RpcError as exc:
        err = exc
    assert proxy.cuts == 1
    _unavailable(err)
    with Session(deps.db.engine) as s:
        done = state(s, acct, key)
        assert done[0] == (Decimal("2.5"), 3) and done[2:] == (1, 1)  # committed, once
        stored = s.execute(
            select(IdempotencyKey.response).where(IdempotencyKey.key == key)
        ).scalar_one()
        check_invariants(s, acct)
    retried = _debited_once(channel, request)
    assert retried == credit_pb2.CreditDebit.FromString(stored)
    with Session(deps.db.engine) as s:
        assert state(s, acct, key) == done


class CutAfter(Proxy):
    """A TCP proxy to PostgreSQL that, once armed, drops the connection on which the server
    sends a message `marks` picks: that message and everything after are kept back until the
    server's ReadyForQuery (the statement's transaction has ended by then), then the
    connection is cut; the client receives none of them."""

    def __init__(self, host: str, port: int, marks: Callable[[bytes], bool]) -> None:
        self.armed = threading.Event()
        self.cuts = 0
        self.marks = marks
        super().__init__(host, port)

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        buf = b""
        holding = False
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                buf += data
                out = b""
                while len(buf) >= 5:
                    size = 1 + struct.unpack("!I", buf[1:5])[0]
                    if len(buf) < size:
                        break
                    message, buf = buf[:size], buf[size:]
                    if not holding and self.armed.is_set() and self.marks(message):
                        holding = True
                    if holding:
                        if message[:1] == b"Z":
                            self.armed.clear()
                            self.cuts += 1
                            client.sendall(out)
                            raise OSError("cut")
                        continue
                    out += message
                client.sendall(out)
        self._end(server, client)


@contextlib.contextmanager
def served_through_cut(
    pg_url: str, marks: Callable[[bytes], bool]
) -> Iterator[tuple[grpc.Channel, Deps, CutAfter]]:
    """A server whose database connections go through a `CutAfter(marks)` proxy."""
    target = make_url(normalize_url(pg_url))
    proxy = CutAfter(target.host or "127.0.0.1", target.port or 5432, marks)
    deps = Deps.build(Settings.from_env(make_env(proxy.through(pg_url))))
    try:
        with serving(deps) as ch:
            yield ch, deps, proxy
    finally:
        deps.db.dispose()
        proxy.close()
