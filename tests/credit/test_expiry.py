"""Expiry at its own instant, with the clock injected into the service (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from tests.credit.support import check_invariants
from tollbooth import amounts, errors
from tollbooth.accounts.service import ensure_account
from tollbooth.auth.caller import SERVICE
from tollbooth.credit import grants, queries, reservations
from tollbooth.db.models import NotificationOutbox

T = dt.datetime(2031, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float):  # type: ignore[no-untyped-def]
    moment = T + dt.timedelta(seconds=seconds)
    return lambda: moment


@pytest.fixture
def acct(db) -> str:  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        account, _ = ensure_account(s, f"p-{uuid.uuid4().hex[:8]}")
        return account.id


def grant(db, acct: str, amount: str, when: float, expires: float | None = None):  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        return grants.grant(
            s,
            SERVICE,
            acct,
            credit_type="units",
            amount=amount,
            reason="",
            priority=0,
            expire_at=None if expires is None else T + dt.timedelta(seconds=expires),
            request_id="",
            metadata={},
            clock=at(when),
        )


def reserve(db, acct: str, amount: str, when: float, ttl: int):  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        return reservations.reserve(
            s,
            SERVICE,
            acct,
            credit_type="units",
            amount=amount,
            ttl_sec=ttl,
            reason="",
            request_id="",
            clock=at(when),
        )


def figures(db, acct: str, when: float) -> tuple[str, str]:
    with db.transaction(readonly=True) as s:
        view = queries.balance(s, SERVICE, acct, "units", T + dt.timedelta(seconds=when))
        return amounts.fmt(view.balance), amounts.fmt(view.reserved)


def ledger(db, acct: str, when: float) -> list[tuple[str, str, str, float]]:
    """(kind, amount, balance_after, seconds after T), oldest first."""
    with db.transaction() as s:
        page = queries.list_ledger(
            s,
            SERVICE,
            acct,
            credit_type="",
            page_size=100,
            page_token="",
            now=T + dt.timedelta(seconds=when),
        )
        return [
            (
                e.kind,
                amounts.fmt(e.amount),
                amounts.fmt(e.balance_after),
                (e.created_at - T).total_seconds(),
            )
            for e in reversed(page.items)
        ]


def test_expired_credit_leaves_the_balance_at_its_expiry_instant(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "10", 0, expires=100)
    grant(db, acct, "1", 0)
    assert figures(db, acct, 99.999999) == ("11", "0")
    assert figures(db, acct, 100) == ("1", "0")  # read time, nothing written yet
    with db.transaction() as s:
        assert len(check_invariants(s, acct)) == 1
    grant(db, acct, "2", 500)  # the next write records the expiry first
    assert ledger(db, acct, 600) == [
        ("grant", "10", "10", 0),
        ("grant", "1", "11", 0),
        ("expiration", "-10", "1", 100),
        ("grant", "2", "3", 500),
    ]
    with db.transaction() as s:
        check_invariants(s, acct)


def test_the_ledger_shows_an_expiration_without_any_other_write(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "4", 0, expires=30)
    assert ledger(db, acct, 45)[-1] == ("expiration", "-4", "0", 30)
    with db.transaction() as s:
        check_invariants(s, acct)


def test_a_hold_lapses_at_its_expiry_and_its_credits_come_back(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "10", 0)
    r = reserve(db, acct, "4", 0, ttl=60)
    assert figures(db, acct, 59) == ("6", "4")
    assert figures(db, acct, 60) == ("10", "0")
    with db.transaction() as s, pytest.raises(errors.DomainError) as exc:
        reservations.commit(
            s, SERVICE, acct, reservation_id=r.id, amount="", request_id="k", clock=at(61)
        )
    assert exc.value.reason == "RESERVATION_CLOSED"
    assert ledger(db, acct, 62)[-1] == ("release", "4", "10", 60)
    with db.transaction() as s:
        check_invariants(s, acct)


def test_held_credit_of_an_expired_grant_expires_when_the_hold_lapses(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "10", 0, expires=100)
    reserve(db, acct, "4", 0, ttl=300)
    assert figures(db, acct, 100) == ("0", "4")
    assert figures(db, acct, 300) == ("0", "0")
    assert ledger(db, acct, 301) == [
        ("grant", "10", "10", 0),
        ("reservation", "-4", "6", 0),
        ("expiration", "-6", "0", 100),
        ("release", "4", "4", 300),
        ("expiration", "-4", "0", 300),
    ]
    with db.transaction() as s:
        check_invariants(s, acct)


def test_a_hold_keeps_its_credit_past_the_grants_expiry_until_committed(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "10", 0, expires=100)
    r = reserve(db, acct, "4", 0, ttl=300)
    with db.transaction() as s:
        done = reservations.commit(
            s, SERVICE, acct, reservation_id=r.id, amount="3", request_id="k", clock=at(200)
        )
        assert done.committed_amount == Decimal(3)
    assert figures(db, acct, 201) == ("0", "0")
    kinds = [(k, a) for k, a, _, _ in ledger(db, acct, 202)]
    assert kinds[-3:] == [("release", "4"), ("debit", "-3"), ("expiration", "-1")]
    with db.transaction() as s:
        check_invariants(s, acct)


def test_an_expiry_that_empties_the_balance_is_notified_when_recorded(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "5", 0, expires=10)
    ledger(db, acct, 11)  # records the expiration
    ledger(db, acct, 12)  # nothing more to record
    with db.transaction() as s:
        rows = (
            s.execute(
                select(NotificationOutbox).where(NotificationOutbox.billing_account_id == acct)
            )
            .scalars()
            .all()
        )
        assert [(r.type, r.payload["cause"], r.payload["debit_id"]) for r in rows] == [
            ("credits.balance_depleted", "expiration", None)
        ]


def depletions(db, acct: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The cause of every depletion notification of the account, oldest first."""
    with db.transaction(readonly=True) as s:
        rows = s.scalars(
            select(NotificationOutbox)
            .where(NotificationOutbox.billing_account_id == acct)
            .order_by(NotificationOutbox.created_at)
        ).all()
        return [r.payload["cause"] for r in rows if r.type == "credits.balance_depleted"]


def test_held_credits_that_expire_as_a_release_gives_them_back_are_a_depletion(db, acct) -> None:  # type: ignore[no-untyped-def]
    # The hold took the whole balance (not a depletion); its grant expires meanwhile; the
    # release gives the credits back and they expire at once: the balance reached zero by an
    # expiry, as when the same hold lapses instead (notified by `settle`).
    grant(db, acct, "10", 0, expires=100)
    r = reserve(db, acct, "10", 0, ttl=300)
    assert depletions(db, acct) == []
    with db.transaction() as s:
        reservations.release(s, SERVICE, acct, reservation_id=r.id, request_id="", clock=at(200))
    assert figures(db, acct, 201) == ("0", "0")
    assert depletions(db, acct) == ["expiration"]
    with db.transaction() as s:
        check_invariants(s, acct)


def test_held_credits_expiring_as_a_zero_commit_gives_them_back_are_a_depletion(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "10", 0, expires=100)
    r = reserve(db, acct, "10", 0, ttl=300)
    with db.transaction() as s:
        reservations.commit(
            s, SERVICE, acct, reservation_id=r.id, amount="0", request_id="", clock=at(200)
        )
    assert figures(db, acct, 201) == ("0", "0")
    assert depletions(db, acct) == ["expiration"]


def test_held_credits_of_a_voided_grant_voided_as_a_release_gives_them_back_are_a_depletion(
    db, acct
) -> None:  # type: ignore[no-untyped-def]
    g = grant(db, acct, "10", 0)
    r = reserve(db, acct, "10", 0, ttl=300)
    with db.transaction() as s:
        grants.void_grant(s, SERVICE, acct, grant_id=g.id, reason="", request_id="", clock=at(10))
    assert depletions(db, acct) == []  # nothing was free to void: the balance stayed at 0
    with db.transaction() as s:
        reservations.release(s, SERVICE, acct, reservation_id=r.id, request_id="", clock=at(20))
    assert figures(db, acct, 21) == ("0", "0")
    assert depletions(db, acct) == ["void"]
    with db.transaction() as s:
        check_invariants(s, acct)


def test_a_lapsing_hold_whose_credits_expire_is_one_depletion(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "10", 0, expires=100)
    reserve(db, acct, "10", 0, ttl=300)
    assert figures(db, acct, 301) == ("0", "0")
    ledger(db, acct, 301)  # records the lapse
    assert depletions(db, acct) == ["expiration"]


def test_a_lapsing_hold_whose_credits_are_voided_is_a_void_depletion(db, acct) -> None:  # type: ignore[no-untyped-def]
    # As a release of that hold is (README: a release or lapse whose credits are voided as
    # they come back is a depletion, cause `void`), not an expiration: no grant expired.
    g = grant(db, acct, "10", 0)
    reserve(db, acct, "10", 0, ttl=300)
    with db.transaction() as s:
        grants.void_grant(s, SERVICE, acct, grant_id=g.id, reason="", request_id="", clock=at(10))
    assert depletions(db, acct) == []
    assert figures(db, acct, 301) == ("0", "0")
    ledger(db, acct, 301)  # records the lapse
    assert depletions(db, acct) == ["void"]
    with db.transaction() as s:
        check_invariants(s, acct)


@pytest.mark.parametrize("how", ["expiry", "void"])
def test_an_expiry_or_void_that_takes_nothing_free_is_no_depletion(db, acct, how) -> None:  # type: ignore[no-untyped-def]
    # A hold took the whole balance, partly from a grant that then expires (or is voided)
    # with nothing free: the balance stays at zero because of the hold, whose other credits
    # come back on release, so nothing was depleted (README: a hold is not a depletion).
    grant(db, acct, "10", 0)
    soon = grant(db, acct, "5", 0, expires=100)  # consumed first: it expires sooner
    r = reserve(db, acct, "15", 0, ttl=300)
    if how == "void":
        with db.transaction() as s:
            grants.void_grant(
                s, SERVICE, acct, grant_id=soon.id, reason="", request_id="", clock=at(50)
            )
    ledger(db, acct, 150)  # records whatever has come due
    assert depletions(db, acct) == []
    with db.transaction() as s:
        reservations.release(s, SERVICE, acct, reservation_id=r.id, request_id="", clock=at(200))
    assert figures(db, acct, 201) == ("10", "0")
    assert depletions(db, acct) == []
    with db.transaction() as s:
        check_invariants(s, acct)
