"""Usage ingest when PostgreSQL drops the server's connection mid-batch (pg_terminate_backend
of the server's own backend, found by its lock wait on the balance row a burning metric debits):
the caller gets UNAVAILABLE SERVICE_UNAVAILABLE, nothing of the batch is stored or burned, the
next call gets a live connection, and the resend of the same unique ids is accepted (and
burned) exactly once; a second resend is all duplicates. IngestEvents and StreamEvents.

And the ambiguous case: the batch's COMMIT done, the connection cut before the server reads its
answer: the caller gets UNAVAILABLE, the batch is stored and burned once, and the resend answers
every event DUPLICATE without burning again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD
from tests.credit.lost_connection import (
    BALANCE_LOCK,
    CutAfter,
    Served,
    blocked_by,
    served_through_cut,
    served_with_pids,
    terminate,
)
from tests.credit.support import account, grant
from tests.helpers import error_reason
from tests.usage.burn_support import balance, burning_metric
from tests.usage.support import ACCEPTED, DUPLICATE, event, usage_stub
from tollbooth.db.models import UsageEvent

pytestmark = pytest.mark.postgres

EVENTS = 5


@pytest.fixture
def served(pg_url: str) -> Iterator[Served]:
    with served_with_pids(pg_url) as it:
        yield it


def _funded(channel: grpc.Channel) -> tuple[str, list[usage_pb2.UsageEvent]]:
    """An account with 100 units, a metric burning 1 unit per api_call, and a batch of events."""
    _, acct, _ = account(channel)
    grant(channel, acct, "100")
    burning_metric(channel, f"m{uuid.uuid4().hex[:8]}", "1")
    tag = uuid.uuid4().hex[:8]
    return acct, [event(f"ev-{tag}-{i}", acct) for i in range(EVENTS)]


def _batch(channel: grpc.Channel, events: list[usage_pb2.UsageEvent]) -> list[int]:
    reply = usage_stub(channel).IngestEvents(
        usage_pb2.IngestEventsRequest(events=events), metadata=SERVICE_MD, timeout=30
    )
    return [r.status for r in reply.results]


def _stream(channel: grpc.Channel, events: list[usage_pb2.UsageEvent]) -> list[int]:
    replies = usage_stub(channel).StreamEvents(
        iter([usage_pb2.StreamEventsRequest(events=events)]), metadata=SERVICE_MD, timeout=30
    )
    return [r.status for reply in replies for r in reply.results]


def _stored(deps: Any, acct: str) -> int:
    with Session(deps.db.engine) as s:
        return int(
            s.execute(
                select(func.count())
                .select_from(UsageEvent)
                .where(UsageEvent.billing_account_id == acct)
            ).scalar_one()
        )


def _unavailable(err: Any) -> None:
    assert isinstance(err, grpc.RpcError), err
    assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    assert error_reason(err) == "SERVICE_UNAVAILABLE"


def _in_thread(call: Callable[[], Any]) -> Callable[[], Any]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except grpc.RpcError as err:
            out.append(err)

    thread = threading.Thread(target=run)
    thread.start()

    def join() -> Any:
        thread.join(timeout=60)
        assert not thread.is_alive() and len(out) == 1
        return out[0]

    return join


@pytest.mark.parametrize("send", [_batch, _stream], ids=["IngestEvents", "StreamEvents"])
def test_a_connection_killed_mid_batch_is_unavailable_and_the_resend_burns_once(
    served: Served, send: Callable[[grpc.Channel, list[usage_pb2.UsageEvent]], list[int]]
) -> None:
    channel, deps, pids, url = served
    acct, events = _funded(channel)
    assert balance(channel, acct) == ("100", "0")
    with (
        psycopg.connect(url, autocommit=True) as admin,
        psycopg.connect(url) as locker,
    ):
        locker.execute(BALANCE_LOCK, (acct,))
        join = _in_thread(lambda: send(channel, events))
        try:
            terminate(admin, blocked_by(admin, locker.info.backend_pid, pids))
        finally:
            locker.rollback()
        _unavailable(join())
    assert _stored(deps, acct) == 0  # nothing of the batch
    assert balance(channel, acct) == ("100", "0")  # a live connection; nothing burned
    assert send(channel, events) == [ACCEPTED] * EVENTS
    assert balance(channel, acct) == ("95", "0")
    assert send(channel, events) == [DUPLICATE] * EVENTS
    assert balance(channel, acct) == ("95", "0")
    assert _stored(deps, acct) == EVENTS


def _commit_answered(message: bytes) -> bool:
    return message[:1] == b"C" and message[5:12] == b"COMMIT\0"


@pytest.fixture(scope="module")
def proxied(pg_shared_url: str) -> Iterator[tuple[grpc.Channel, Any, CutAfter]]:
    with served_through_cut(pg_shared_url, _commit_answered) as it:
        yield it


def test_a_batch_whose_commit_answer_is_lost_is_unavailable_and_the_resend_is_duplicates(
    proxied: tuple[grpc.Channel, Any, CutAfter],
) -> None:
    channel, deps, proxy = proxied
    acct, events = _funded(channel)
    proxy.armed.set()
    err: Any = None
    try:
        _batch(channel, events)
    except grpc.RpcError as exc:
        err = exc
    assert proxy.cuts == 1
    _unavailable(err)
    assert _stored(deps, acct) == EVENTS  # committed, once
    assert balance(channel, acct) == ("95", "0")
    assert _batch(channel, events) == [DUPLICATE] * EVENTS
    assert balance(channel, acct) == ("95", "0")


def _locks_waited(admin: psycopg.Connection[Any], holder: int) -> int:
    """Backends waiting on the holder's lock, or on a backend that does."""
    row = admin.execute(
        "WITH first AS (SELECT pid FROM pg_stat_activity"
        "  WHERE %(h)s = ANY(pg_blocking_pids(pid)) AND wait_event_type = 'Lock')"
        " SELECT count(*) FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock'"
        " AND (%(h)s = ANY(pg_blocking_pids(a.pid))"
        "  OR EXISTS (SELECT 1 FROM first f WHERE f.pid = ANY(pg_blocking_pids(a.pid))))",
        {"h": holder},
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_whose_deadline_passes_under_a_lock_is_stored_and_burned_once(
    served: Served,
) -> None:
    """IngestEvents with a 50 ms deadline, waiting on the balance lock a burn needs: the caller
    gets DEADLINE_EXCEEDED, the server goes on; the resend (sent while the first still waits)
    and every later one answer the events once between them, burned once."""
    channel, deps, _pids, url = served
    acct, events = _funded(channel)
    with (
        psycopg.connect(url, autocommit=True) as admin,
        psycopg.connect(url) as locker,
    ):
        locker.execute(BALANCE_LOCK, (acct,))
        me = locker.info.backend_pid
        try:
            with pytest.raises(grpc.RpcError) as err:
                usage_stub(channel).IngestEvents(
                    usage_pb2.IngestEventsRequest(events=events), metadata=SERVICE_MD, timeout=0.05
                )
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            deadline = time.monotonic() + 20
            while _locks_waited(admin, me) < 1:  # the server goes on: it waits on the lock
                assert time.monotonic() < deadline
                time.sleep(0.02)
            join = _in_thread(lambda: _batch(channel, events))
            while _locks_waited(admin, me) < 2:  # the resend waits too
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            locker.rollback()
        resent = join()
    assert resent == [DUPLICATE] * EVENTS  # the first committed them
    assert _batch(channel, events) == [DUPLICATE] * EVENTS
    assert _stored(deps, acct) == EVENTS
    assert balance(channel, acct) == ("95", "0")
