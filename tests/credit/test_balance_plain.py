"""GetBalance on PostgreSQL without a session: when the account is found and no expiry is due,
its one statement runs in autocommit on a plain pooled connection (`Database.read_one`: no
BEGIN, no COMMIT); anything else falls back to the session path. Both paths give the same
answers and refusals for the same inputs.

Statements and round trips are counted on the wire (libpq's trace, `tests/credit/wire.py`);
sessions by the ORM's `after_begin` event."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import update

from tests.conftest import SERVICE_MD, bearer_md
from tests.credit import support
from tests.credit.test_expiry import T, grant, reserve
from tests.credit.wire import Recorder, serve_recorded
from tollbooth import errors
from tollbooth.accounts.service import ensure_account
from tollbooth.amounts import fmt
from tollbooth.auth.caller import SERVICE, Caller
from tollbooth.auth.tokens import TokenClaims
from tollbooth.credit import queries
from tollbooth.db import Database
from tollbooth.db.models import BillingAccount, CreditBalance

pytestmark = pytest.mark.postgres


@pytest.fixture
def served(pg_url: str) -> Iterator[tuple[grpc.Channel, Database, Recorder]]:
    yield from serve_recorded(pg_url)


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    yield db
    db.dispose()


def test_a_warm_get_balance_is_one_plain_statement(served) -> None:  # type: ignore[no-untyped-def]
    channel, _, rec = served
    principal, account_id, token = support.account(channel)
    support.grant(channel, account_id, "10.5")
    support.balance(channel, account_id)  # the pool holds a connection from now on
    for md, ref in [
        (SERVICE_MD, account_id),
        (SERVICE_MD, principal),
        (bearer_md(token), ""),
        (bearer_md(token), account_id),
        (bearer_md(token), principal),
    ]:
        got, statements, trips = rec.call(
            lambda ref=ref, md=md: support.balance(channel, ref, metadata=md)
        )
        assert (got.billing_account_id, got.balance, got.reserved) == (account_id, "10.5", "0")
        assert len(statements) == 1, statements  # no BEGIN, no COMMIT, nothing else
        assert "credit_balances" in statements[0] and "billing_accounts" in statements[0]
        assert trips == 1, statements
        assert rec.sessions == 0  # a plain connection: no ORM session


def test_a_due_expiry_or_a_refusal_takes_the_session_path(served) -> None:  # type: ignore[no-untyped-def]
    channel, db, rec = served
    _, account_id, token = support.account(channel)
    support.grant(channel, account_id, "3")
    later = Timestamp()
    later.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    expiring = support.grant(channel, account_id, "4", expire_time=later)
    assert support.balance(channel, account_id).balance == "7"
    support.make_due(db, account_id, expiring.grant_id)  # the expiry is due, not yet recorded
    got, statements, _ = rec.call(lambda: support.balance(channel, account_id))
    assert got.balance == "3"  # the expired grant no longer counts
    assert len(statements) > 1 and rec.sessions == 1, statements

    _, other_id, _ = support.account(channel)
    err, _, _ = rec.call(
        lambda: support.fails(
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
            support.balance,
            channel,
            other_id,
            metadata=bearer_md(token),
        )
    )
    assert err is not None and rec.sessions == 1  # refused by `resolve`, in a session


# -- the two paths, side by side ---------------------------------------------------------------


def _answer(fn: Any) -> Any:
    """A view's figures, or the refusal's reason."""
    try:
        v = fn()
    except errors.DomainError as exc:
        return exc.reason
    if v is None:
        return None
    return (v.billing_account_id, v.credit_type, fmt(v.balance), fmt(v.reserved))


def _both(db: Database, caller: Caller, ref: str, ctype: str, when: float) -> tuple[Any, Any]:
    """(the plain path's answer or None when it declines, the session path's answer)."""
    now = T + dt.timedelta(seconds=when)
    plain = _answer(lambda: queries.plain_balance(db, caller, ref, ctype, now))
    with db.transaction(readonly=True) as s:
        full = _answer(lambda: queries.balance(s, caller, ref, ctype, now))
    return plain, full


def _bearer(account_id: str) -> Caller:
    return Caller("bearer", TokenClaims(account_id, "x", "", frozenset({"credits:read"}), T))


def _new_account(db: Database) -> tuple[str, str]:
    with db.transaction() as s:
        account, _ = ensure_account(s, f"p-{uuid.uuid4().hex[:8]}")
        return account.id, account.principal_id


def test_both_paths_answer_alike(pg_db: Database) -> None:
    db = pg_db
    account_id, principal = _new_account(db)
    other_id, other_principal = _new_account(db)
    archived_id, archived_principal = _new_account(db)
    due_id, _ = _new_account(db)
    grant(db, account_id, "10.5", 0, expires=100)
    grant(db, account_id, "1", 0)
    reserve(db, account_id, "2", 0, ttl=1000)
    grant(db, archived_id, "6", 0)
    grant(db, due_id, "10", 0, expires=100)
    grant(db, due_id, "1", 0)
    with db.transaction() as s:
        s.execute(
            update(BillingAccount)
            .where(BillingAccount.id == archived_id)
            .values(archived_at=T - dt.timedelta(days=1))
        )
    held = (account_id, "units", "9.5", "2")  # 10.5 + 1, less the 2 held
    # (caller, reference, credit type, seconds past T) -> the plain path's answer, the
    # session path's; None: the plain path declines (then the session path answers).
    cases: list[tuple[Caller, str, str, float, Any, Any]] = [
        (SERVICE, account_id, "units", 50, held, held),
        (SERVICE, principal, "units", 50, held, held),
        (_bearer(account_id), "", "units", 50, held, held),
        (_bearer(account_id), account_id, "units", 50, held, held),
        (_bearer(account_id), principal, "units", 50, held, held),
        # no balance row of that type yet: zero
        (SERVICE, account_id, "other", 50, *[(account_id, "other", "0", "0")] * 2),
        # an expiry due: the session path applies it, from its instant on
        (SERVICE, due_id, "units", 99.999999, *[(due_id, "units", "11", "0")] * 2),
        (SERVICE, due_id, "units", 100, None, (due_id, "units", "1", "0")),
        (_bearer(due_id), "", "units", 100, None, (due_id, "units", "1", "0")),
        # another account's bearer, unknown accounts
        (_bearer(other_id), account_id, "units", 50, None, "NOT_FOUND"),
        (_bearer(other_id), principal, "units", 50, None, "NOT_FOUND"),
        (_bearer("acct_missing"), "", "units", 50, None, "NOT_FOUND"),
        (SERVICE, "acct_missing", "units", 50, None, "NOT_FOUND"),
        (SERVICE, "nobody-here", "units", 50, None, "NOT_FOUND"),
        (SERVICE, "", "units", 50, None, "FIELD_REQUIRED"),
        # a bad credit type, refused after the account check
        (SERVICE, principal, "", 50, None, "FIELD_REQUIRED"),
        (_bearer(account_id), "", "bad type!", 50, None, "INVALID_ARGUMENT"),
        (SERVICE, "nobody-here", "bad type!", 50, None, "NOT_FOUND"),
        # an archived account keeps its history: its balance still reads
        (SERVICE, archived_id, "units", 50, *[(archived_id, "units", "6", "0")] * 2),
        (SERVICE, archived_principal, "units", 50, *[(archived_id, "units", "6", "0")] * 2),
        (_bearer(archived_id), "", "units", 50, *[(archived_id, "units", "6", "0")] * 2),
    ]
    for caller, ref, ctype, when, plain, full in cases:
        case = (caller.kind, caller.account_id, ref, ctype, when)
        assert _both(db, caller, ref, ctype, when) == (plain, full), case
    assert other_principal  # named only through its bearer above


def test_both_paths_give_the_same_overage_and_instant(pg_db: Database) -> None:
    db = pg_db
    account_id, _ = _new_account(db)
    grant(db, account_id, "5", 0)
    with db.transaction() as s:  # an overage left by an earlier burn
        s.execute(
            update(CreditBalance)
            .where(CreditBalance.billing_account_id == account_id)
            .values(overage=Decimal("2.25"))
        )
    now = T + dt.timedelta(seconds=7)
    plain = queries.plain_balance(db, SERVICE, account_id, "units", now)
    with db.transaction(readonly=True) as s:
        full = queries.balance(s, SERVICE, account_id, "units", now)
    assert plain == full
    assert plain is not None and (plain.overage, plain.as_of) == (Decimal("2.25"), now)
