"""The one-call debit (`tollbooth_debit`, `tollbooth.credit.onecall`) equals the engine's.

Hypothesis draws sequences of grants (amounts at the storable edges: 18 fractional digits, up
to 19 integer ones; priorities with ties; expiries with ties, to the microsecond, some coming
due during the sequence), holds, voids and debits (a share of the balance, all of it, a
quantum, more than there is; reasons in any script; metadata). Each sequence runs on two
accounts: on one, every debit goes the servicer's way on PostgreSQL (`onecall.debit`, then the
Python path when the function hands it back), on the other straight through
`debits.debit` (the engine, `credit/engine.py`). After every step the two accounts have the
same ledger rows, grant remainders, holds and states, balance figures and depletion
notifications (ids aside: grants are matched by their seq), and every answer of the function
is, byte for byte, the stored response and `debit_out` of its ledger entry.

A deterministic case covers more grants than the function's batch (`GRANT_BATCH`).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from billing.v1 import credit_pb2
from tests.credit.support import check_invariants
from tollbooth import amounts, errors
from tollbooth.accounts.service import ensure_account
from tollbooth.auth.caller import SERVICE
from tollbooth.credit import debits, grants, onecall, onetrip, reservations
from tollbooth.credit.servicer import debit_out
from tollbooth.credit.unit import GRANT_BATCH
from tollbooth.db import Database
from tollbooth.db.models import (
    CreditBalance,
    CreditGrant,
    CreditLedgerEntry,
    CreditReservation,
    IdempotencyKey,
    NotificationOutbox,
)

pytestmark = pytest.mark.postgres

T = dt.datetime(2033, 1, 1, tzinfo=dt.UTC)
EXAMPLES = 400 if os.environ.get("BILLING_SOAK") == "1" else 80
SCOPE = "service|DebitCreditsRequest"


@pytest.fixture(scope="module")
def db(pg_shared_url: str) -> Iterator[Database]:
    database = Database(pg_shared_url)
    yield database
    database.dispose()


def _amount(whole: int, frac: int) -> str:
    return amounts.fmt(Decimal(f"{whole}.{frac:018d}"))


STORABLE = st.one_of(
    st.builds(_amount, st.integers(0, 10**19 - 1), st.integers(1, 10**18 - 1)),
    st.builds(_amount, st.integers(0, 100), st.sampled_from([0, 1, 5 * 10**17, 10**18 - 1])),
    st.sampled_from(["0.000000000000000001", "9999999999999999999.999999999999999999", "1"]),
).filter(lambda a: Decimal(a) > 0)
# Expiries (seconds after the step, and microseconds): mostly far, with ties; a few near
# ones, which come due during the sequence (an expiry due: handed back).
EXPIRY = st.one_of(
    st.none(),
    st.tuples(st.sampled_from([3600, 7200]), st.sampled_from([0, 1, 999_999])),
    st.tuples(st.integers(3600, 86400), st.integers(0, 999_999)),
    st.tuples(st.sampled_from([2, 3]), st.sampled_from([0, 999_999])),
)
REASON = st.one_of(st.just(""), st.text(max_size=12).filter(lambda t: t.isprintable()))
META = st.one_of(st.just({}), st.just({"k": "v"}), st.just({"é": "✓", "a": ""}))
GRANT = st.tuples(st.just("grant"), STORABLE, st.integers(-1, 1), EXPIRY)
# A share of the balance (in 10^-18); 1: all of it, 0: one quantum.
SHARE = st.one_of(st.integers(2, 10**18), st.sampled_from([0, 1]))
DEBIT = st.tuples(st.just("debit"), SHARE, REASON, META)
OPS = st.tuples(
    st.lists(GRANT, min_size=1, max_size=8),
    st.lists(
        st.one_of(
            GRANT,
            DEBIT,
            DEBIT,
            DEBIT,
            st.tuples(st.just("debit_amount"), STORABLE, REASON, META),
            st.tuples(st.just("reserve"), st.integers(1, 10**18)),
            st.tuples(st.just("void"), st.integers(0, 20)),
        ),
        min_size=1,
        max_size=10,
    ),
).map(lambda parts: parts[0] + parts[1])


def _figures(db: Database, acct: str) -> tuple[Any, ...]:
    """Everything a debit changes, ids replaced by grant seq (ledger ids left out)."""
    with db.transaction(readonly=True) as s:
        gs = s.execute(select(CreditGrant).where(CreditGrant.billing_account_id == acct)).scalars()
        seq_of = {}
        grant_rows = []
        for g in sorted(gs, key=lambda g: g.seq):
            seq_of[g.id] = g.seq
            grant_rows.append(
                (g.seq, g.amount, g.remaining, g.held, g.state, g.priority, g.expire_at)
            )
        bal = s.execute(
            select(CreditBalance).where(CreditBalance.billing_account_id == acct)
        ).scalar_one_or_none()
        balance = (
            None
            if bal is None
            else (
                bal.balance,
                bal.reserved,
                bal.seq,
                bal.next_event_at,
                bal.depleted,
                bal.depletions,
                bal.updated_at,
                bal.overage,
            )
        )
        ledger = [
            (
                e.seq,
                e.kind,
                e.amount,
                e.balance_after,
                seq_of.get(e.grant_id or ""),
                e.debit_id is not None,
                e.reason,
                e.request_id,
                [(seq_of[a["grant_id"]], a["amount"]) for a in e.allocations or []],
                e.attributes,
                e.created_at,
                e.overage,
            )
            for e in s.execute(
                select(CreditLedgerEntry)
                .where(CreditLedgerEntry.billing_account_id == acct)
                .order_by(CreditLedgerEntry.seq)
            ).scalars()
        ]
        holds = sorted(
            (r.amount, r.state, [(seq_of[a["grant_id"]], a["amount"]) for a in r.allocations])
            for r in s.execute(
                select(CreditReservation).where(CreditReservation.billing_account_id == acct)
            ).scalars()
        )
        notices = s.execute(
            select(func.count())
            .select_from(NotificationOutbox)
            .where(NotificationOutbox.billing_account_id == acct)
        ).scalar_one()
    return balance, grant_rows, ledger, holds, notices


def _debit_one_call(
    db: Database, acct: str, amount: str, why: str, key: str, meta: dict[str, str], clock: Any
) -> tuple[Any, bool]:
    """The servicer's PostgreSQL path: (reply or DomainError reason, whether the function
    answered)."""
    args = onetrip.args_of(acct, "units", amount, why, key, meta)
    assert args is not None
    try:
        reply = onecall.debit(
            db,
            SERVICE,
            args,
            scope=SCOPE,
            digest="d" * 64,
            clock=clock,
            parse=credit_pb2.CreditDebit.FromString,
        )
    except errors.DomainError as exc:
        return (exc.reason, str(exc)), False
    if reply is not None:
        return reply, True
    return _debit_engine(db, acct, amount, why, key, meta, clock), False


def _debit_engine(
    db: Database, acct: str, amount: str, why: str, key: str, meta: dict[str, str], clock: Any
) -> Any:
    """The two-flush path alone: its reply, or its DomainError's (reason, message)."""
    try:
        with db.transaction() as s:
            entry = debits.debit(
                s,
                SERVICE,
                acct,
                credit_type="units",
                amount=amount,
                reason=why,
                request_id=key,
                metadata=meta,
                clock=clock,
            )
            return debit_out(entry)
    except errors.DomainError as exc:
        return (exc.reason, str(exc))


def _same_reply(a: Any, b: Any, seq_a: dict[str, int], seq_b: dict[str, int]) -> None:
    if isinstance(a, tuple) or isinstance(b, tuple):
        assert a == b
        return
    assert (a.amount, a.balance_after, a.reason, a.request_id, a.create_time, a.credit_type) == (
        b.amount,
        b.balance_after,
        b.reason,
        b.request_id,
        b.create_time,
        b.credit_type,
    )
    assert [(seq_a[x.grant_id], x.amount) for x in a.allocations] == [
        (seq_b[x.grant_id], x.amount) for x in b.allocations
    ]


def _grant_seqs(db: Database, acct: str) -> dict[str, int]:
    with db.transaction(readonly=True) as s:
        rows = s.execute(
            select(CreditGrant.id, CreditGrant.seq).where(CreditGrant.billing_account_id == acct)
        ).all()
    return {gid: seq for gid, seq in rows}


def _check_stored(db: Database, acct: str, key: str, reply: credit_pb2.CreditDebit) -> None:
    """The function's answer is byte for byte its stored response and Python's `debit_out`
    of the ledger entry it wrote (protobuf's deterministic serialisation)."""
    raw = reply.SerializeToString(deterministic=True)
    with db.transaction(readonly=True) as s:
        stored = s.execute(
            select(IdempotencyKey.response).where(
                IdempotencyKey.scope == SCOPE, IdempotencyKey.key == key
            )
        ).scalar_one()
        entry = s.execute(
            select(CreditLedgerEntry).where(CreditLedgerEntry.debit_id == reply.debit_id)
        ).scalar_one()
        assert entry.billing_account_id == acct
        assert bytes(stored) == raw
        assert debit_out(entry).SerializeToString(deterministic=True) == raw


def run(db: Database, ops: list[tuple[Any, ...]], made: list[str] | None = None) -> int:
    """The sequence on two accounts (appended to `made`); how many debits the function itself
    answered."""
    with db.transaction() as s:
        a = ensure_account(s, f"p-{uuid.uuid4().hex[:10]}")[0].id
        b = ensure_account(s, f"p-{uuid.uuid4().hex[:10]}")[0].id
    if made is not None:
        made += [a, b]
    answered = 0
    for n, op in enumerate(ops):
        at = T + dt.timedelta(seconds=n)
        clock = (lambda moment: lambda: moment)(at)
        kind = op[0]
        if kind == "grant":
            _, amount, priority, expiry = op
            expire_at = (
                None
                if expiry is None
                else at + dt.timedelta(seconds=expiry[0], microseconds=expiry[1])
            )
            for acct in (a, b):
                with db.transaction() as s:
                    grants.grant(
                        s,
                        SERVICE,
                        acct,
                        credit_type="units",
                        amount=amount,
                        reason="",
                        priority=priority,
                        expire_at=expire_at,
                        request_id="",
                        metadata={},
                        clock=clock,
                    )
        elif kind == "reserve":
            free = _figures(db, b)[0]
            if free is None or free[0] == 0:
                continue
            share = amounts.to_quantum(
                amounts.mul(free[0], amounts.CONTEXT.scaleb(Decimal(op[1]), -18))
            )
            if share <= 0:
                continue
            refused = []
            for acct in (a, b):
                try:
                    with db.transaction() as s:
                        reservations.reserve(
                            s,
                            SERVICE,
                            acct,
                            credit_type="units",
                            amount=amounts.fmt(share),
                            ttl_sec=3600,
                            reason="",
                            request_id="",
                            clock=clock,
                        )
                except errors.DomainError as exc:  # an expiry due took it: on both
                    refused.append(str(exc))
            assert len(refused) in (0, 2) and len(set(refused)) <= 1, refused
        elif kind == "void":
            seqs_a, seqs_b = _grant_seqs(db, a), _grant_seqs(db, b)
            if not seqs_a:
                continue
            target = sorted(seqs_a.values())[op[1] % len(seqs_a)]
            refusals = []
            for acct, seqs in ((a, seqs_a), (b, seqs_b)):
                gid = next(g for g, q in seqs.items() if q == target)
                try:
                    with db.transaction() as s:
                        grants.void_grant(
                            s, SERVICE, acct, grant_id=gid, reason="", request_id="", clock=clock
                        )
                except errors.DomainError as exc:  # voided before, expired: on both
                    refusals.append(exc.reason)
            assert len(refusals) in (0, 2) and len(set(refusals)) <= 1, refusals
        else:
            _, size, why, meta = op
            if kind == "debit":
                free = _figures(db, b)[0]
                have = Decimal(0) if free is None else free[0]
                if size == 1:
                    value = have
                elif size == 0:
                    value = amounts.QUANTUM
                else:
                    value = amounts.to_quantum(
                        amounts.mul(have, amounts.CONTEXT.scaleb(Decimal(size), -18))
                    )
                amount = amounts.fmt(value if value > 0 else amounts.QUANTUM)
            else:
                amount = size
            key = uuid.uuid4().hex
            got_a, by_function = _debit_one_call(db, a, amount, why, key, meta, clock)
            got_b = _debit_engine(db, b, amount, why, key, meta, clock)
            _same_reply(got_a, got_b, _grant_seqs(db, a), _grant_seqs(db, b))
            if by_function:
                answered += 1
                _check_stored(db, a, key, got_a)
        assert _figures(db, a) == _figures(db, b), (n, op)
    with db.transaction(readonly=True) as s:
        check_invariants(s, a, b)
    return answered


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_the_function_debits_exactly_as_the_engine(db: Database, ops: list[Any]) -> None:
    answered = run(db, ops)
    event(f"debits the function answered: {min(answered, 3)}{'+' if answered >= 3 else ''}")


def test_the_function_answers_the_common_debits(db: Database) -> None:
    """Not every case handed back: tied priorities and expiries, partial grants, holds,
    reasons in any script, all answered by the function itself."""
    ops: list[tuple[Any, ...]] = [
        ("grant", "9999999999999999999.999999999999999999", 1, None),
        ("grant", "0.000000000000000001", 0, (3600, 1)),
        ("grant", "2.5", 0, (3600, 0)),
        ("grant", "2.5", 0, (3600, 0)),
        ("grant", "7", -1, None),
        ("reserve", 10**17),
        ("debit_amount", "3.000000000000000001", "é ✓ 😀", {"k": "v"}),
        ("debit_amount", "4", "", {}),
        ("debit", 5 * 10**17, "half", {"é": "✓", "a": ""}),
        ("debit", 0, "", {}),
    ]
    assert run(db, ops) == 4


def test_a_grant_emptied_under_a_hold_stays_active_as_in_the_engine(db: Database) -> None:
    """A debit that takes what is free of a grant part of which a hold keeps: the grant stays
    active (`engine.Grant.settle_state` counts what is held), and the function says so."""
    ops: list[tuple[Any, ...]] = [
        ("grant", "10", 0, None),
        ("grant", "5", 0, None),
        ("reserve", 3 * 10**17),  # 4.5 of the first grant held, 5.5 free
        ("debit_amount", "7", "", {}),  # its 5.5, then 1.5 of the second
        ("debit_amount", "3.5", "", {}),  # all that is free: a depletion, handed back
    ]
    made: list[str] = []
    assert run(db, ops, made) == 1
    with db.transaction(readonly=True) as s:
        states = s.execute(
            select(CreditGrant.state, CreditGrant.remaining, CreditGrant.held)
            .where(CreditGrant.billing_account_id == made[0])
            .order_by(CreditGrant.seq)
        ).all()
    assert [tuple(r) for r in states] == [
        ("active", Decimal(0), Decimal("4.5")),
        ("depleted", Decimal(0), Decimal(0)),
    ]


def test_more_grants_than_the_batch_take_the_engine_path_and_equal_it(db: Database) -> None:
    ops: list[tuple[Any, ...]] = [
        ("grant", "0.1", i % 3, (3600 + i % 4, 0)) for i in range(GRANT_BATCH + 5)
    ]
    ops += [
        ("debit_amount", "5.05", "", {}),  # beyond the first batch: handed back
        ("debit_amount", "0.3", "", {}),  # within it: the function
        ("debit", 1, "", {}),  # all of it: a depletion, handed back
    ]
    assert run(db, ops) == 1
