"""The credit writes other than DebitCredits (GrantCredits, VoidGrant, ReserveCredits,
CommitReservation, ReleaseReservation) when PostgreSQL drops the server's connection while the
write waits on a lock another session holds (the account's balance, grant and reservation rows;
the server's backend found by its lock wait and terminated): the caller gets UNAVAILABLE
SERVICE_UNAVAILABLE, nothing of the write is left, the next call gets a live connection, and
the retry with the same request_id makes the write exactly once (a second retry answers the
same and changes nothing).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2
from tests.conftest import SERVICE_MD
from tests.credit.lost_connection import (
    Served,
    blocked_by,
    served_with_pids,
    terminate,
)
from tests.credit.support import account, check_invariants, grant, reserve, rid, stub
from tests.helpers import error_reason

pytestmark = pytest.mark.postgres

LOCKS = (
    "SELECT 1 FROM credit_balances WHERE billing_account_id = %(a)s FOR UPDATE",
    "SELECT 1 FROM credit_grants WHERE billing_account_id = %(a)s FOR UPDATE",
    "SELECT 1 FROM credit_reservations WHERE billing_account_id = %(a)s FOR UPDATE",
)


@pytest.fixture(scope="module")
def served(pg_shared_url: str) -> Iterator[Served]:
    with served_with_pids(pg_shared_url) as it:
        yield it


def _dump(session: Session, acct: str, key: str) -> tuple[Any, ...]:
    """Every credit row of the account, and the stored responses of request `key`."""
    rows = []
    for table in ("credit_balances", "credit_grants", "credit_reservations", "credit_ledger"):
        rows.append(
            sorted(
                str(r)
                for r in session.execute(
                    text(f"SELECT t.* FROM {table} t WHERE billing_account_id = :a"),  # noqa: S608
                    {"a": acct},
                )
            )
        )
    keys = session.execute(
        text("SELECT count(*) FROM idempotency_keys WHERE key = :k"), {"k": key}
    ).scalar_one()
    return (*rows, keys)


Write = Callable[[grpc.Channel, str], tuple[str, Callable[[], Any]]]


def _grant(channel: grpc.Channel, acct: str) -> tuple[str, Callable[[], Any]]:
    key = rid()
    return key, lambda: grant(channel, acct, "7", request_id=key)


def _void(channel: grpc.Channel, acct: str) -> tuple[str, Callable[[], Any]]:
    made = grant(channel, acct, "7")
    key = rid()
    request = credit_pb2.VoidGrantRequest(account=acct, grant_id=made.grant_id, request_id=key)
    return key, lambda: stub(channel).VoidGrant(request, metadata=SERVICE_MD, timeout=30)


def _reserve(channel: grpc.Channel, acct: str) -> tuple[str, Callable[[], Any]]:
    key = rid()
    return key, lambda: reserve(channel, acct, "4", request_id=key)


def _commit(channel: grpc.Channel, acct: str) -> tuple[str, Callable[[], Any]]:
    held = reserve(channel, acct, "4")
    key = rid()
    request = credit_pb2.CommitReservationRequest(
        account=acct, reservation_id=held.reservation_id, amount="3", request_id=key
    )
    return key, lambda: stub(channel).CommitReservation(request, metadata=SERVICE_MD, timeout=30)


def _release(channel: grpc.Channel, acct: str) -> tuple[str, Callable[[], Any]]:
    held = reserve(channel, acct, "4")
    key = rid()
    request = credit_pb2.ReleaseReservationRequest(
        account=acct, reservation_id=held.reservation_id, request_id=key
    )
    return key, lambda: stub(channel).ReleaseReservation(request, metadata=SERVICE_MD, timeout=30)


@pytest.mark.parametrize(
    "write",
    [_grant, _void, _reserve, _commit, _release],
    ids=["GrantCredits", "VoidGrant", "ReserveCredits", "CommitReservation", "ReleaseReservation"],
)
def test_a_write_whose_connection_is_killed_is_unavailable_and_its_retry_writes_once(
    served: Served, write: Write
) -> None:
    channel, deps, pids, url = served
    _, acct, _ = account(channel)
    grant(channel, acct, "15")
    key, call = write(channel, acct)
    with Session(deps.db.engine) as s:
        before = _dump(s, acct, key)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except grpc.RpcError as err:
            outcome.append(err)

    with (
        psycopg.connect(url, autocommit=True) as admin,
        psycopg.connect(url) as locker,
    ):
        for lock in LOCKS:
            locker.execute(lock, {"a": acct})
        worker = threading.Thread(target=run)
        worker.start()
        try:
            terminate(admin, blocked_by(admin, locker.info.backend_pid, pids))
        finally:
            locker.rollback()
        worker.join(timeout=60)
        assert not worker.is_alive()
    (err,) = outcome
    assert isinstance(err, grpc.RpcError), err
    assert (err.code(), error_reason(err)) == (
        grpc.StatusCode.UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    ), err.details()
    with Session(deps.db.engine) as s:
        assert _dump(s, acct, key) == before  # nothing of the write
    first = call()
    with Session(deps.db.engine) as s:
        once = _dump(s, acct, key)
        assert once != before and once[-1] == 1
        check_invariants(s, acct)
    assert call() == first
    with Session(deps.db.engine) as s:
        assert _dump(s, acct, key) == once
