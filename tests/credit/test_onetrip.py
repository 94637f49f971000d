"""DebitCredits on PostgreSQL in one round trip (`tollbooth.credit.onecall`: one call of the
`tollbooth_debit` function), and in two (`tollbooth.credit.onetrip`) when the function hands
the request back.

Round trips are counted on the wire (`tests.credit.wire`): libpq's trace of every connection
the server checks out, one round trip per run of client messages answered by the server. The
overspend race and concurrent copies of one request are proven in test_concurrency.py (two
servers, 64 clients), which goes through this path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2
from tests.credit.support import account, balance, check_invariants, grant, rid
from tests.credit.wire import Wire, serve_traced, traced
from tests.helpers import error_reason
from tollbooth.app import Deps
from tollbooth.db.models import (
    CreditBalance,
    CreditGrant,
    CreditLedgerEntry,
    IdempotencyKey,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def wired(pg_shared_url: str) -> Iterator[tuple[grpc.Channel, Wire, Deps]]:
    yield from serve_traced(pg_shared_url)


def debit_traced(
    channel: grpc.Channel, wire: Wire, request: credit_pb2.DebitCreditsRequest
) -> tuple[Any, int, list[str]]:
    return traced(channel, wire, "DebitCredits", request)


def test_a_debit_by_account_id_takes_one_round_trip(wired) -> None:  # type: ignore[no-untyped-def]
    ch, wire, deps = wired
    _, acct, _ = account(ch)
    grant(ch, acct, "10")
    grant(ch, acct, "5", priority=1)
    req = credit_pb2.DebitCreditsRequest(
        account=acct, credit_type="units", amount="12.5", request_id=rid(), metadata={"k": "v"}
    )
    reply, trips, statements = debit_traced(ch, wire, req)
    assert isinstance(reply, credit_pb2.CreditDebit), reply
    assert reply.balance_after == "2.5"
    assert [a.amount for a in reply.allocations] == ["10", "2.5"]
    # One statement (unnamed, never prepared: see test_onecall_prepared.py), one round trip.
    assert len(statements) == 1 and "tollbooth_debit(" in statements[0], statements
    assert trips == 1, statements
    with Session(deps.db.engine) as s:
        check_invariants(s, acct)
        entry = s.execute(
            select(CreditLedgerEntry).where(CreditLedgerEntry.debit_id == reply.debit_id)
        ).scalar_one()
        assert entry.amount == Decimal("-12.5") and entry.attributes == {"k": "v"}
        stored = s.execute(
            select(IdempotencyKey.response).where(IdempotencyKey.key == req.request_id)
        ).scalar_one()
        assert credit_pb2.CreditDebit.FromString(stored) == reply
    # Later debits likewise: one round trip, the claim, the lock, the grants, the writes, the
    # stored response and COMMIT together.
    for _ in range(4):
        again = credit_pb2.DebitCreditsRequest(
            account=acct, credit_type="units", amount="0.5", request_id=rid()
        )
        reply, trips, statements = debit_traced(ch, wire, again)
        assert isinstance(reply, credit_pb2.CreditDebit), reply
        assert trips == 1, statements
    # A replay: the same call (the claim finds the key), the original response.
    reply, trips, _ = debit_traced(ch, wire, req)
    assert isinstance(reply, credit_pb2.CreditDebit) and reply.balance_after == "2.5"
    assert trips == 1
    assert balance(ch, acct).balance == "0.5"


def test_refusals_and_the_general_path_leave_the_pool_clean(wired) -> None:  # type: ignore[no-untyped-def]
    ch, wire, deps = wired
    principal, acct, _ = account(ch)
    grant(ch, acct, "3")
    # Refused after the first pipeline: rolled back, the key free again.
    short = credit_pb2.DebitCreditsRequest(
        account=acct, credit_type="units", amount="4", request_id=rid()
    )
    err, trips, _ = debit_traced(ch, wire, short)
    assert isinstance(err, grpc.RpcError) and error_reason(err) == "INSUFFICIENT_CREDITS"
    reused = credit_pb2.DebitCreditsRequest(
        account=acct, credit_type="units", amount="5", request_id=short.request_id
    )
    err = debit_traced(ch, wire, reused)[0]
    assert error_reason(err) == "INSUFFICIENT_CREDITS"  # not IDEMPOTENCY_KEY_REUSED
    # Same key, other parameters, after a success: refused as reused.
    ok = credit_pb2.DebitCreditsRequest(
        account=principal, credit_type="units", amount="1", request_id=rid()
    )
    assert isinstance(debit_traced(ch, wire, ok)[0], credit_pb2.CreditDebit)
    ok.amount = "2"
    assert error_reason(debit_traced(ch, wire, ok)[0]) == "IDEMPOTENCY_KEY_REUSED"
    # An expiry due: the general path records it, in the same transaction.
    past = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    when = Timestamp()
    when.FromDatetime(past)
    g = grant(ch, acct, "1", expire_time=when)
    with Session(deps.db.engine) as s, s.begin():
        s.execute(
            update(CreditBalance)
            .where(CreditBalance.billing_account_id == acct)
            .values(next_event_at=past - dt.timedelta(seconds=5))
        )
        s.execute(
            update(CreditGrant)
            .where(CreditGrant.id == g.grant_id)
            .values(expire_at=past - dt.timedelta(seconds=5))
        )
    later = credit_pb2.DebitCreditsRequest(
        account=acct, credit_type="units", amount="2", request_id=rid()
    )
    reply, trips, _ = debit_traced(ch, wire, later)
    assert isinstance(reply, credit_pb2.CreditDebit), reply
    assert reply.balance_after == "0" and trips > 2
    with Session(deps.db.engine) as s:
        check_invariants(s, acct)
        kinds = s.execute(
            select(CreditLedgerEntry.kind)
            .where(CreditLedgerEntry.billing_account_id == acct)
            .order_by(CreditLedgerEntry.seq)
        ).scalars()
        assert list(kinds) == ["grant", "debit", "grant", "expiration", "debit"]
    # Every pooled connection is back in transaction mode, outside any transaction.
    pool: Any = deps.db.engine.pool
    for record in list(pool._pool.queue):
        conn = record.dbapi_connection
        assert conn is not None and not conn.autocommit
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
