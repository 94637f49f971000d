"""ReserveCredits, CommitReservation and GrantCredits on PostgreSQL in two round trips
(`tollbooth.credit.pipelined`).

Round trips are counted on the wire (`tests.credit.wire`). The equivalence test runs one
script of calls (successes, replays, refusals, overage paid back, a depletion) twice on fresh
accounts with the same clock, once on the general path and once on the two-round-trip path,
and compares the answers and every row written, ids aside. The overspend race of holds and
debits under concurrent clients is test_concurrency.py's, which goes through this path.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2 as c
from tests.conftest import SERVICE_MD
from tests.credit.support import account, check_invariants, error_metadata, rid, stub
from tests.credit.wire import Wire, serve_traced, traced
from tests.helpers import error_reason
from tollbooth.app import Deps
from tollbooth.credit import burns, twotrips
from tollbooth.credit.servicer import CreditServicer

pytestmark = pytest.mark.postgres

T = dt.datetime(2031, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def wired(pg_shared_url: str) -> Iterator[tuple[grpc.Channel, Wire, Deps]]:
    yield from serve_traced(pg_shared_url)


def when(at: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(at)
    return out


def test_grant_reserve_and_commit_take_two_round_trips_each(wired) -> None:  # type: ignore[no-untyped-def]
    ch, wire, deps = wired
    _, acct, _ = account(ch)
    for i, amount in enumerate(["10", "5"]):  # the second reuses the prepared statements
        g = c.GrantCreditsRequest(
            account=acct, credit_type="units", amount=amount, priority=i, request_id=rid()
        )
        reply, trips, statements = traced(ch, wire, "GrantCredits", g)
        assert isinstance(reply, c.CreditGrant), reply
        assert trips == 2, statements
        assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
    # The announcement was queued by the grant's own transaction.
    with Session(deps.db.engine) as s:
        queued = s.execute(
            text("SELECT payload FROM notification_outbox WHERE dedupe_key = :k"),
            {"k": f"credits.granted:{reply.grant_id}"},
        ).scalar_one()
        assert queued["amount"] == "5" and queued["request_id"] == g.request_id
    reply, trips, _ = traced(ch, wire, "GrantCredits", g)  # a replay
    assert isinstance(reply, c.CreditGrant) and reply.amount == "5" and trips == 2

    holds = []
    for amount in ["12", "1"]:
        r = c.ReserveCreditsRequest(
            account=acct, credit_type="units", amount=amount, ttl_seconds=60, request_id=rid()
        )
        reply, trips, statements = traced(ch, wire, "ReserveCredits", r)
        assert isinstance(reply, c.CreditReservation), reply
        assert reply.state == c.RESERVATION_STATE_HELD and trips == 2, statements
        holds.append(reply)
    reply, trips, _ = traced(ch, wire, "ReserveCredits", r)  # a replay
    assert reply == holds[-1] and trips == 2

    for hold, amount in [(holds[0], "7.5"), (holds[1], "")]:
        m = c.CommitReservationRequest(
            account=acct, reservation_id=hold.reservation_id, amount=amount, request_id=rid()
        )
        reply, trips, statements = traced(ch, wire, "CommitReservation", m)
        assert isinstance(reply, c.CreditReservation), reply
        assert reply.state == c.RESERVATION_STATE_COMMITTED and trips == 2, statements
    assert reply.committed_amount == "1"
    again, trips, _ = traced(ch, wire, "CommitReservation", m)  # a replay
    assert again == reply and trips == 2
    # Refused after the first flush: rolled back, nothing written.
    closed = c.CommitReservationRequest(
        account=acct, reservation_id=hold.reservation_id, request_id=rid()
    )
    err = traced(ch, wire, "CommitReservation", closed)[0]
    assert error_reason(err) == "RESERVATION_CLOSED"
    with Session(deps.db.engine) as s:
        got = check_invariants(s, acct)
        assert got[(acct, "units")] == Decimal("6.5")  # 15 - 7.5 - 1
    # Every pooled connection is back in transaction mode, outside any transaction.
    pool: Any = deps.db.engine.pool
    for record in list(pool._pool.queue):
        conn = record.dbapi_connection
        assert conn is not None and not conn.autocommit
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# -- the same answers and rows as the general path ---------------------------------------------

_IDS = re.compile(r"\b(?:acct|cgr|crs|dbt|cle)_[0-9a-f]{24}\b")


class Canon:
    """Ids (and one run's request id prefix) as names given in order of first appearance."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.names: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(self.tag, "RUN")
            return _IDS.sub(lambda m: self.names.setdefault(m[0], f"id{len(self.names)}"), value)
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


def outcome(fn: Any) -> Any:
    """A call's answer, or its refusal (code, reason, message, details)."""
    try:
        reply: Message = fn()
        return ("ok", type(reply).__name__, MessageToDict(reply))
    except grpc.RpcError as err:
        return ("error", err.code().name, error_reason(err), err.details(), error_metadata(err))


def script(ch: grpc.Channel, deps: Deps, tag: str) -> tuple[str, list[Any]]:
    """The calls; their outcomes in order."""
    _, acct, _ = account(ch)
    s, md = stub(ch), SERVICE_MD
    with deps.db.transaction() as session:  # overage: 3 burnt beyond a zero balance
        burns.burn(
            session,
            acct,
            "units",
            Decimal(3),
            reason="usage:m",
            metadata={"event_ids": '["e1"]'},
            clock=lambda: T,
        )

    def key(n: str) -> str:
        return f"{tag}-{n}"

    def grant(n: str, amount: str, account: str = acct, **kw: Any) -> Any:
        kw.setdefault("credit_type", "units")
        req = c.GrantCreditsRequest(account=account, amount=amount, request_id=key(n), **kw)
        return outcome(lambda: s.GrantCredits(req, metadata=md, timeout=10))

    def reserve(n: str, amount: str, **kw: Any) -> Any:
        req = c.ReserveCreditsRequest(
            account=acct, credit_type="units", amount=amount, request_id=key(n), **kw
        )
        return outcome(lambda: s.ReserveCredits(req, metadata=md, timeout=10))

    def commit(n: str, reservation: str, amount: str = "") -> Any:
        req = c.CommitReservationRequest(
            account=acct, reservation_id=reservation, amount=amount, request_id=key(n)
        )
        return outcome(lambda: s.CommitReservation(req, metadata=md, timeout=10))

    def hold_id(got: Any) -> str:
        return str(got[2]["reservationId"])

    out = [
        grant("g1", "2", reason="pays back"),  # all of it pays overage back: depleted grant
        grant("g2", "10", metadata={"k": "v"}),  # pays the last 1 back
        g3 := grant("g3", "5", priority=1, expire_time=when(T + dt.timedelta(days=1))),
        grant("g2", "10", metadata={"k": "v"}),  # a replay
        grant("g4", "1", expire_time=when(T - dt.timedelta(seconds=1))),  # in the past
        grant("g5", "1", account="acct_" + "0" * 24),  # no such account
        grant("g6", "1", credit_type="x" * 300),  # a credit type refused
    ]
    r1 = reserve("r1", "12", ttl_seconds=60, reason="job")
    r2 = reserve("r2", "2")
    out += [
        r1,
        r2,
        reserve("r1", "12", ttl_seconds=60, reason="job"),  # a replay
        reserve("r1", "1"),  # the key reused
        reserve("r3", "100"),  # short
        reserve("r4", "1", ttl_seconds=-1),  # ttl refused
        # What r1 holds of g3 is voided when the commit gives it back.
        outcome(
            lambda: s.VoidGrant(
                c.VoidGrantRequest(account=acct, grant_id=g3[2]["grantId"], request_id=key("v")),
                metadata=md,
                timeout=10,
            )
        ),
        commit("c1", hold_id(r1), "7.5"),
        commit("c1", hold_id(r1), "7.5"),  # a replay
        commit("c2", hold_id(r1)),  # closed
        commit("c3", hold_id(r2), "3"),  # more than held
        commit("c4", hold_id(r2), "abc"),  # not an amount
        commit("c5", "crs_" + "0" * 24),  # no such reservation
    ]
    r5 = reserve("r5", "1.5")  # the rest of the balance
    out += [r5, commit("c6", hold_id(r5)), commit("c7", hold_id(r2), "0")]  # depleted; released
    return acct, out


def rows(deps: Deps, acct: str) -> list[Any]:
    """Every row the script wrote for `acct`, in a stable order."""
    queries = [
        "SELECT *, allocations IS NULL AS no_allocations, metadata IS NULL AS no_metadata"
        " FROM credit_ledger WHERE billing_account_id = :a ORDER BY seq",
        "SELECT * FROM credit_grants WHERE billing_account_id = :a ORDER BY seq",
        "SELECT r.* FROM credit_reservations AS r WHERE billing_account_id = :a"
        " ORDER BY (SELECT min(seq) FROM credit_ledger AS l WHERE l.reservation_id = r.id)",
        "SELECT * FROM credit_balances WHERE billing_account_id = :a",
        "SELECT type, billing_account_id, dedupe_key, payload, created_at"
        " FROM notification_outbox WHERE billing_account_id = :a"
        " ORDER BY type, payload ->> 'request_id'",
    ]
    with Session(deps.db.engine) as s:
        return [[dict(r._mapping) for r in s.execute(text(q), {"a": acct})] for q in queries]


def test_the_general_path_and_two_round_trips_answer_and_write_the_same(  # type: ignore[no-untyped-def]
    wired, monkeypatch
) -> None:
    ch, _, deps = wired
    monkeypatch.setattr(CreditServicer, "clock", staticmethod(lambda: T))
    finished = []
    finish = twotrips.Trip.finish
    monkeypatch.setattr(
        twotrips.Trip, "finish", lambda self, *a: finished.append(1) or finish(self, *a)
    )
    results = []
    for general in (True, False):
        tag = uuid.uuid4().hex
        with monkeypatch.context() as m:
            if general:
                m.setattr(CreditServicer, "_in_two_round_trips", lambda self, req, fast: None)
            acct, outcomes = script(ch, deps, tag)
        canon = Canon(tag)
        results.append((canon(outcomes), canon(rows(deps, acct))))
        assert bool(finished) is not general  # the path under test was taken
        with Session(deps.db.engine) as s:
            check_invariants(s, acct)
    (general_out, general_rows), (fast_out, fast_rows) = results
    assert fast_out == general_out
    assert fast_rows == general_rows
    kinds = [e["kind"] for e in fast_rows[0]]
    assert kinds[:4] == ["overage", "grant", "overage_paid", "grant"] and "void" in kinds
    assert "credits.balance_depleted" in [n["type"] for n in fast_rows[4]]
