"""credit.burns.burn_many with the clock injected (SQLite and PostgreSQL): the general path
(expiry due, more grants than one load) takes exactly what the fast path would."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from tests.credit.support import check_invariants
from tests.credit.test_expiry import T, at, figures, grant
from tollbooth import amounts
from tollbooth.accounts.service import ensure_account
from tollbooth.credit import burns as credit_burns
from tollbooth.credit import unit
from tollbooth.credit.burns import Burn
from tollbooth.db.models import CreditBalance, CreditLedgerEntry, NotificationOutbox


def new_account(db) -> str:  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        account, _ = ensure_account(s, f"p-{uuid.uuid4().hex[:8]}")
        return account.id


@pytest.fixture
def acct(db) -> str:  # type: ignore[no-untyped-def]
    return new_account(db)


def burn(db, acct: str, amount: str, when: float, ctype: str = "units", uid: str = "e"):  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        return credit_burns.burn(
            s,
            acct,
            ctype,
            Decimal(amount),
            reason="usage:m",
            metadata={"event_ids": f'["{uid}"]'},
            clock=at(when),
        )


def overage(db, acct: str, ctype: str = "units") -> Decimal:  # type: ignore[no-untyped-def]
    with db.transaction(readonly=True) as s:
        row = s.get(CreditBalance, (acct, ctype))
        return row.overage if row is not None else Decimal(-1)


def test_burn_records_a_due_expiry_first_then_takes_the_rest(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "5", when=0, expires=10)
    grant(db, acct, "2", when=0)
    got = burn(db, acct, "3", when=20)  # the 5 expired at 10: only 2 are there
    assert (got.taken, got.overage) == (Decimal(2), Decimal(1))
    assert figures(db, acct, 30) == ("0", "0")
    assert overage(db, acct) == Decimal(1)
    with db.transaction(readonly=True) as s:
        kinds = [
            (e.kind, amounts.fmt(e.amount), amounts.fmt(e.overage))
            for e in s.scalars(
                select(CreditLedgerEntry)
                .where(CreditLedgerEntry.billing_account_id == acct)
                .order_by(CreditLedgerEntry.seq)
            )
        ]
        notes = list(
            s.scalars(
                select(NotificationOutbox).where(NotificationOutbox.billing_account_id == acct)
            )
        )
        assert kinds == [
            ("grant", "5", "0"),
            ("grant", "2", "0"),
            ("expiration", "-5", "0"),
            ("debit", "-2", "0"),
            ("overage", "0", "1"),
        ]
        assert [n.payload["cause"] for n in notes] == ["debit"]
        check_invariants(s, acct)


def test_burn_over_more_grants_than_one_load_takes_them_in_order(db, acct) -> None:  # type: ignore[no-untyped-def]
    for _ in range(unit.GRANT_BATCH + 5):
        grant(db, acct, "1", when=0)
    got = burn(db, acct, "53.5", when=1)
    assert (got.taken, got.overage) == (Decimal("53.5"), Decimal(0))
    assert figures(db, acct, 2) == ("1.5", "0")
    with db.transaction(readonly=True) as s:
        (entry,) = s.scalars(
            select(CreditLedgerEntry).where(
                CreditLedgerEntry.billing_account_id == acct, CreditLedgerEntry.kind == "debit"
            )
        )
        assert len(entry.allocations) == 54
        check_invariants(s, acct)


def test_burns_of_several_balances_apply_in_order_in_one_call(db) -> None:  # type: ignore[no-untyped-def]
    a, b = new_account(db), new_account(db)
    grant(db, a, "4", when=0)
    burns = [
        Burn(b, "units", Decimal("1"), "usage:m", {"event_ids": '["1"]'}),
        Burn(a, "units", Decimal("3"), "usage:m", {"event_ids": '["2"]'}),
        Burn(a, "units", Decimal("3"), "usage:m", {"event_ids": '["3"]'}),
        Burn(a, "other", Decimal("0.5"), "usage:m", {"event_ids": '["4"]'}),
    ]
    with db.transaction() as s:
        got = credit_burns.burn_many(s, burns, at(1))
    assert [(r.taken, r.overage) for r in got] == [
        (Decimal(0), Decimal(1)),
        (Decimal(3), Decimal(0)),
        (Decimal(1), Decimal(2)),
        (Decimal(0), Decimal("0.5")),
    ]
    assert [r.entry_id is not None for r in got] == [False, True, True, False]
    assert (overage(db, a), overage(db, b), overage(db, a, "other")) == (2, 1, Decimal("0.5"))
    with db.transaction(readonly=True) as s:
        check_invariants(s, a, b)


def test_overage_is_exact_at_any_size(db, acct) -> None:  # type: ignore[no-untyped-def]
    huge = "1" + "0" * 330 + ".000000000000000001"
    grant(db, acct, "1", when=0)
    burn(db, acct, huge, when=1)
    burn(db, acct, huge, when=2)
    assert overage(db, acct) == amounts.sub(amounts.mul(Decimal(huge), 2), Decimal(1))
    assert figures(db, acct, 3) == ("0", "0")


def test_a_zero_burn_changes_nothing_but_the_balance_row_exists(db, acct) -> None:  # type: ignore[no-untyped-def]
    got = burn(db, acct, "0", when=0)
    assert (got.taken, got.overage, got.entry_id) == (0, 0, None)
    assert overage(db, acct) == 0


def test_a_burn_that_empties_the_balance_notifies_once(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "1", when=0)
    burn(db, acct, "1", when=1)
    burn(db, acct, "1", when=2)
    with db.transaction(readonly=True) as s:
        notes = list(
            s.scalars(
                select(NotificationOutbox).where(NotificationOutbox.billing_account_id == acct)
            )
        )
    assert len(notes) == 1 and notes[0].payload["balance"] == "0"
    assert T < dt.datetime.fromisoformat(notes[0].payload["occurred_at"])
