"""DebitCredits in one call (`tollbooth.credit.onecall`, the `tollbooth_debit` function) when
PostgreSQL drops the server's connection: while the call waits at the balance lock, while it
waits at a grant's row lock (its writes), and after its statement committed, before the
server reads the answer.

As for the two flushes (test_onetrip_connection_lost.py, whose helpers this reuses): the caller
gets UNAVAILABLE SERVICE_UNAVAILABLE, a killed call leaves nothing (balance, grants, ledger,
idempotency key: the statement was its own transaction), and the retry with the same
request_id debits exactly once, or answers the stored response of the debit that committed.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2
from tests.conftest import SERVICE_MD, make_env
from tests.credit.support import account, balance, check_invariants, grant, rid, stub
from tests.credit.test_onetrip_connection_lost import (
    _blocked_by,
    _debit_in_thread,
    _libpq,
    _state,
    _terminate,
)
from tests.devstack import serving
from tests.helpers import error_reason
from tests.tcpproxy import Proxy
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.credit import onetrip
from tollbooth.db.models import IdempotencyKey

pytestmark = pytest.mark.postgres


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


@pytest.fixture(autouse=True)
def one_call_only() -> Iterator[list[int]]:
    """Counts the debits the one call handed to the two flushes (none here)."""
    handed: list[int] = []
    debit = onetrip.debit

    def counted(*args: Any, **kwargs: Any) -> Any:
        handed.append(1)
        return debit(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onetrip, "debit", counted)
        yield handed


def _kill_at(served: Any, request: credit_pb2.DebitCreditsRequest, lock: str) -> Any:
    """Hold the rows `lock` selects (FOR UPDATE) in a test transaction, start the debit, kill
    the server's backend once it waits on them, release; the debit's answer."""
    channel, _deps, pids, url = served
    with (
        psycopg.connect(url, autocommit=True) as admin,
        psycopg.connect(url) as locker,
    ):
        locker.execute(lock, (request.account,))
        join = _debit_in_thread(channel, request)
        try:
            _terminate(admin, _blocked_by(admin, locker.info.backend_pid, pids))
        finally:
            locker.rollback()
        return join()


BALANCE_LOCK = "SELECT 1 FROM credit_balances WHERE billing_account_id = %s FOR UPDATE"
# The call reads the grants without locking them; its UPDATE of them waits here.
GRANTS_LOCK = "SELECT 1 FROM credit_grants WHERE billing_account_id = %s FOR UPDATE"


@pytest.mark.parametrize("lock", [BALANCE_LOCK, GRANTS_LOCK], ids=["balance", "grants"])
def test_a_connection_killed_in_the_call_is_unavailable_and_the_retry_debits_once(
    served: Any, lock: str, one_call_only: list[int]
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

    err = _kill_at(served, request, lock)

    assert isinstance(err, grpc.RpcError), err
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
    assert error_reason(err) == "SERVICE_UNAVAILABLE"
    assert "postgres" not in (err.details() or "").lower()
    with Session(deps.db.engine) as s:
        assert _state(s, acct, request.request_id) == before  # nothing of the debit
        check_invariants(s, acct)
    first = stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=30)
    assert first.balance_after == "2.5"
    assert [a.amount for a in first.allocations] == ["10", "2.5"]
    again = stub(channel).DebitCredits(request, metadata=SERVICE_MD, timeout=30)
    assert again == first
    assert balance(channel, acct).balance == "2.5"
    assert one_call_only == []  # every attempt was the one call
    with Session(deps.db.engine) as s:
        after = _state(s, acct, request.request_id)
        assert after[2:] == (1, 1)  # one ledger entry, one stored response
        check_invariants(s, acct)


class CutAfterDebit(Proxy):
    """A TCP proxy to PostgreSQL that, once armed, drops the connection on which the server
    answered a `tollbooth_debit` call that debited: its result row and everything after are
    kept back until the server's ReadyForQuery (the statement's transaction is committed by
    then), then the connection is cut; the client receives none of the call's answer."""

    def __init__(self, host: str, port: int) -> None:
        self.armed = threading.Event()
        self.cuts = 0
        super().__init__(host, port)

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        buf = b""
        held: bytes | None = None  # from the debit's DataRow on
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                buf += data
                out = b""
                while len(buf) >= 5:
                    size = 1 + struct.unpack("!I", buf[1:5])[0]
                    if len(buf) < size:
                        break
                    message, buf = buf[:size], buf[size:]
                    kind = message[:1]
                    if held is None and kind == b"D" and b"debited" in message:
                        if self.armed.is_set():
                            held = message
                            continue
                    if held is not None:
                        if kind == b"Z":
                            self.armed.clear()
                            self.cuts += 1
                            client.sendall(out)
                            raise OSError("cut")
                        held += message
                        continue
                    out += message
                client.sendall(out)
        self._end(server, client)


@pytest.fixture(scope="module")
def proxied(pg_shared_url: str) -> Iterator[tuple[grpc.Channel, Deps, CutAfterDebit]]:
    proxy = CutAfterDebit.to(pg_shared_url)
    assert isinstance(proxy, CutAfterDebit)
    deps = Deps.build(Settings.from_env(make_env(proxy.through(pg_shared_url))))
    try:
        with serving(deps) as ch:
            yield ch, deps, proxy
    finally:
        deps.db.dispose()
        proxy.close()


def test_an_answer_lost_after_the_call_committed_is_unavailable_and_the_retry_replays(
    proxied: tuple[grpc.Channel, Deps, CutAfterDebit], one_call_only: list[int]
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
    assert one_call_only == []
    with Session(deps.db.engine) as s:
        assert _state(s, acct, request.request_id) == done
