"""The burn-down without a database: hypothesis properties of the pure engine."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollbooth.credit import engine
from tollbooth.credit.engine import Book, Expired, Grant, Insufficient, Lapsed, Voided, add

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
PROPS = settings(max_examples=150, deadline=None)

amounts = st.decimals(
    min_value=Decimal("0.000000000000000001"),
    max_value=Decimal("1000"),
    places=18,
    allow_nan=False,
    allow_infinity=False,
)
expiries = st.one_of(st.none(), st.integers(min_value=1, max_value=1000))


@st.composite
def grant_sets(draw) -> list[Grant]:  # type: ignore[no-untyped-def]
    n = draw(st.integers(min_value=0, max_value=8))
    grants = []
    for seq in range(1, n + 1):
        exp = draw(expiries)
        grants.append(
            Grant(
                id=f"g{seq}",
                seq=seq,
                priority=draw(st.integers(min_value=0, max_value=3)),
                expire_at=None if exp is None else T0 + dt.timedelta(seconds=exp),
                remaining=draw(amounts),
            )
        )
    return grants


def copy(grants: list[Grant]) -> list[Grant]:
    return [
        Grant(g.id, g.seq, g.priority, g.expire_at, g.remaining, g.held, g.state) for g in grants
    ]


@PROPS
@given(grant_sets(), amounts)
def test_a_debit_takes_exactly_its_amount_in_consumption_order(grants, amount) -> None:  # type: ignore[no-untyped-def]
    book = Book.of(copy(grants))
    before = book.available()
    try:
        portions = book.debit(amount, T0)
    except Insufficient as exc:
        assert before < amount
        assert exc.shortfall == amount - before
        return
    assert add(*(p.amount for p in portions)) == amount
    assert book.available() == before - amount
    order = [g.id for g in engine.consumption_order(grants)]
    taken = [p.grant_id for p in portions]
    assert taken == sorted(taken, key=order.index)
    # Every grant before the last one taken from is emptied: nothing is skipped.
    last = order.index(taken[-1])
    for gid in order[:last]:
        assert book.grants[gid].remaining == 0


def test_consumption_order_is_priority_then_soonest_expiry_then_oldest() -> None:
    soon = T0 + dt.timedelta(days=1)
    late = T0 + dt.timedelta(days=9)
    grants = [
        Grant("old-no-expiry", 1, 0, None, Decimal(1)),
        Grant("late", 2, 0, late, Decimal(1)),
        Grant("soon", 3, 0, soon, Decimal(1)),
        Grant("priority-1", 4, 1, soon, Decimal(1)),
        Grant("new-no-expiry", 5, 0, None, Decimal(1)),
        Grant("urgent", 6, -1, None, Decimal(1)),
    ]
    assert [g.id for g in engine.consumption_order(grants)] == [
        "urgent",
        "soon",
        "late",
        "old-no-expiry",
        "new-no-expiry",
        "priority-1",
    ]


@PROPS
@given(grant_sets(), st.integers(min_value=0, max_value=1200))
def test_settle_expires_exactly_the_grants_due_at_their_own_instant(grants, at) -> None:  # type: ignore[no-untyped-def]
    now = T0 + dt.timedelta(seconds=at)
    book = Book.of(copy(grants))
    effects = book.settle(now)
    for g in grants:
        due = g.expire_at is not None and g.expire_at <= now
        assert book.grants[g.id].remaining == (0 if due else g.remaining)
        mine = [e for e in effects if isinstance(e, Expired) and e.grant_id == g.id]
        assert mine == ([Expired(g.id, g.remaining, g.expire_at)] if due else [])
    assert [e.at for e in effects] == sorted(e.at for e in effects)
    assert book.settle(now) == []  # settling twice changes nothing


@PROPS
@given(grant_sets(), amounts, st.integers(min_value=1, max_value=1200), st.integers(0, 1300))
def test_a_lapsed_hold_gives_back_to_live_grants_and_expires_the_rest(
    grants, amount, ttl, at
) -> None:  # type: ignore[no-untyped-def]
    book = Book.of(copy(grants))
    granted = book.available()
    try:
        book.hold("h", amount, T0 + dt.timedelta(seconds=ttl), T0)
    except Insufficient:
        return
    assert book.available() == granted - amount and book.reserved() == amount
    effects = book.settle(T0 + dt.timedelta(seconds=at))
    expired = add(*(e.amount for e in effects if isinstance(e, Expired)))
    lapsed = add(*(e.amount for e in effects if isinstance(e, Lapsed)))
    # Conservation: nothing appears or disappears except through an effect.
    assert book.available() + book.reserved() + expired == granted
    assert lapsed in (0, amount)
    assert all(g.remaining >= 0 and g.held >= 0 for g in book.grants.values())
    for g in book.grants.values():
        if g.expire_at is not None and g.expire_at <= T0 + dt.timedelta(seconds=at):
            assert g.remaining == 0


@PROPS
@given(grant_sets(), amounts, st.data())
def test_commit_consumes_at_most_the_hold_and_returns_the_rest(grants, amount, data) -> None:  # type: ignore[no-untyped-def]
    book = Book.of(copy(grants))
    granted = book.available()
    try:
        book.hold("h", amount, T0 + dt.timedelta(days=30), T0)
    except Insufficient:
        return
    actual = data.draw(st.decimals(min_value=0, max_value=amount, places=18))
    consumed, effects = book.commit("h", actual, T0)
    assert add(*(p.amount for p in consumed)) == actual
    assert effects == []  # every grant is still live at T0
    assert book.available() == granted - actual
    assert book.reserved() == 0
    assert all(g.held == 0 for g in book.grants.values())


def test_a_commit_above_the_hold_is_refused_and_changes_nothing() -> None:
    book = Book.of([Grant("g", 1, 0, None, Decimal(5))])
    book.hold("h", Decimal(2), T0 + dt.timedelta(days=1), T0)
    with pytest.raises(engine.HoldExceeded):
        book.commit("h", Decimal("2.000000000000000001"), T0)
    assert book.grants["g"].held == 2 and book.holds["h"].state == engine.HELD


@PROPS
@given(grant_sets(), amounts)
def test_void_removes_only_what_is_free_and_voids_held_parts_when_they_return(
    grants, amount
) -> None:  # type: ignore[no-untyped-def]
    if not grants:
        return
    book = Book.of(copy(grants))
    try:
        hold = book.hold("h", amount, T0 + dt.timedelta(days=30), T0)
    except Insufficient:
        return
    target = hold.portions[0].grant_id
    free = book.grants[target].remaining
    effects = book.void(target, T0)
    assert effects == ([Voided(target, free, T0)] if free > 0 else [])
    back = book.release("h", T0)
    held_part = add(*(p.amount for p in hold.portions if p.grant_id == target))
    assert Voided(target, held_part, T0) in back
    assert book.grants[target].remaining == 0 and book.grants[target].held == 0


def test_amounts_are_exact_at_eighteen_places() -> None:
    tiny = Decimal("0.000000000000000001")
    book = Book.of([Grant("g", 1, 0, None, Decimal("99999999999999999999.999999999999999999"))])
    book.debit(tiny, T0)
    assert book.available() == Decimal("99999999999999999999.999999999999999998")
    assert engine.fmt(Decimal("10.500000000000000000")) == "10.5"
    assert engine.fmt(Decimal("0E-18")) == "0"
    assert engine.fmt(Decimal("-3.000")) == "-3"
