"""Issue 14, finding 7: amounts past 28 significant digits stay exact through every RPC.

Through the real gRPC server on SQLite and PostgreSQL. Python's default decimal context keeps
28 significant digits; a stored amount has up to 38 (NUMERIC(38, 18)), so every calculation
must run in `tollbooth.amounts.CONTEXT` or these drift.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from types import SimpleNamespace

import grpc
import pytest
from sqlalchemy import select

from billing.v1 import credit_pb2 as c
from tests.credit.support import (
    account,
    balance,
    call,
    check_invariants,
    debit,
    fails,
    grant,
    reserve,
)
from tollbooth import amounts, errors
from tollbooth.db.models import CreditGrant
from tollbooth.subscriptions import effects

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
# 29 significant digits: the default context rounds it to ...4567.
LONG = "12345678901.123456789012345674"
LARGEST = "99999999999999999999.999999999999999999"


def ledger(channel, acct: str) -> list[tuple[int, str, str]]:  # type: ignore[no-untyped-def]
    page = call(channel, "ListLedgerEntries", c.ListLedgerEntriesRequest(account=acct))
    return [(e.kind, e.amount, e.balance_after) for e in reversed(page.entries)]


def test_a_29_digit_debit_is_written_to_the_ledger_exactly(channel, db) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = account(channel)
    grant(channel, acct, "20000000000")
    d = debit(channel, acct, LONG)
    assert d.amount == LONG
    left = "7654321098.876543210987654326"  # 20000000000 - LONG, by hand
    assert d.balance_after == left
    assert ledger(channel, acct)[-1] == (c.LEDGER_ENTRY_KIND_DEBIT, "-" + LONG, left)
    assert balance(channel, acct).balance == left
    with db.transaction(readonly=True) as s:
        assert check_invariants(s, acct) == {(acct, "units"): Decimal(left)}


def test_reserving_exactly_the_balance_then_committing_leaves_nothing_reserved(
    channel,
    db,  # type: ignore[no-untyped-def]
) -> None:
    _, acct, _ = account(channel)
    grant(channel, acct, LONG)
    r = reserve(channel, acct, LONG)
    b = balance(channel, acct)
    assert (b.balance, b.reserved) == ("0", LONG)
    call(
        channel,
        "CommitReservation",
        c.CommitReservationRequest(account=acct, reservation_id=r.reservation_id, amount=""),
    )
    b = balance(channel, acct)
    assert (b.balance, b.reserved) == ("0", "0")
    with db.transaction(readonly=True) as s:
        check_invariants(s, acct)


def test_a_partial_commit_of_a_long_hold_gives_back_the_exact_rest(channel, db) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = account(channel)
    grant(channel, acct, "99999999999999999999")
    r = reserve(channel, acct, LONG)
    call(
        channel,
        "CommitReservation",
        c.CommitReservationRequest(
            account=acct, reservation_id=r.reservation_id, amount="0.000000000000000001"
        ),
    )
    b = balance(channel, acct)
    assert (b.balance, b.reserved) == ("99999999999999999998.999999999999999999", "0")
    with db.transaction(readonly=True) as s:
        check_invariants(s, acct)


def test_debiting_the_largest_storable_amount_is_a_clean_answer(channel, db) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = account(channel)
    fails(PRECONDITION, "INSUFFICIENT_CREDITS", debit, channel, acct, LARGEST)
    grant(channel, acct, LARGEST)
    # One more unit would pass the storage cap: refused before any arithmetic.
    fails(INVALID, "AMOUNT_INVALID", grant, channel, acct, "0.000000000000000001")
    fails(INVALID, "AMOUNT_INVALID", grant, channel, acct, "1" + "0" * 20)
    d = debit(channel, acct, LARGEST)
    assert (d.amount, d.balance_after) == (LARGEST, "0")
    assert [e[1] for e in ledger(channel, acct)] == [LARGEST, "-" + LARGEST]
    with db.transaction(readonly=True) as s:
        assert check_invariants(s, acct) == {(acct, "units"): Decimal(0)}


def test_reserving_the_largest_storable_amount_and_releasing_it(channel, db) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = account(channel)
    grant(channel, acct, LARGEST)
    r = reserve(channel, acct, LARGEST)
    assert balance(channel, acct).reserved == LARGEST
    call(
        channel,
        "ReleaseReservation",
        c.ReleaseReservationRequest(account=acct, reservation_id=r.reservation_id),
    )
    b = balance(channel, acct)
    assert (b.balance, b.reserved) == (LARGEST, "0")
    with db.transaction(readonly=True) as s:
        check_invariants(s, acct)


def test_availability_of_long_amounts_is_exact(channel) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = account(channel)
    grant(channel, acct, LONG)
    got = call(
        channel,
        "CheckAvailability",
        c.CheckAvailabilityRequest(account=acct, type="units", required=LARGEST),
    )
    assert (got.available, got.balance, got.shortfall) == (
        False,
        LONG,
        "99999999987654321098.876543210987654325",
    )


def test_one_context_for_every_amount_and_it_traps_rounding() -> None:
    ctx = amounts.CONTEXT
    assert ctx.prec >= 2 * (amounts.MAX_AMOUNT_INT_DIGITS + amounts.MAX_AMOUNT_FRAC_DIGITS)
    assert amounts.neg(Decimal(LONG)) == Decimal("-" + LONG)
    assert amounts.fmt(amounts.add(Decimal(LARGEST), Decimal(LARGEST))) == (
        "199999999999999999999.999999999999999998"
    )
    assert amounts.mul(Decimal(LONG), 3) == Decimal("37037036703.370370367037037022")


def test_the_largest_storable_amount_is_exactly_38_nines() -> None:
    assert amounts.fmt(amounts.MAX_TOTAL) == LARGEST
    assert amounts.check_storable(Decimal(LARGEST), "x") == Decimal(LARGEST)


# -- price-metadata grants x quantity (subscriptions.effects.grant_for_price) ---------------


def _price_grant(db, acct: str, amount: str, quantity: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Apply a price's on_purchase credit grant of `amount` for `quantity` units; the amounts
    of the account's grants afterwards."""
    price = SimpleNamespace(
        id=f"price_{uuid.uuid4().hex[:8]}",
        credit_grants=[{"credit_type": "units", "amount": amount, "on_purchase": True}],
    )
    try:
        with db.transaction() as s:
            ctx = effects.Context(s, None, f"evt_{uuid.uuid4().hex[:8]}")  # type: ignore[arg-type]
            effects.grant_for_price(
                ctx,
                acct,
                price,  # type: ignore[arg-type]
                quantity,
                when="on_purchase",
                request_prefix=f"test:{uuid.uuid4().hex}",
                reason="purchase",
            )
    finally:
        with db.transaction(readonly=True) as s:
            got = [
                amounts.fmt(g.amount)
                for g in s.scalars(
                    select(CreditGrant).where(CreditGrant.billing_account_id == acct)
                )
            ]
    return got


def test_price_grants_times_quantity_are_exact(channel, db) -> None:  # type: ignore[no-untyped-def]
    _, acct, _ = account(channel)
    # 30 significant digits: the default context would grant 123456789012.000000123456789.
    assert _price_grant(db, acct, "1.000000000000000001", 123456789012) == [
        "123456789012.000000123456789012"
    ]
    assert balance(channel, acct).balance == "123456789012.000000123456789012"


def test_price_grants_times_quantity_past_the_cap_are_refused_and_grant_nothing(
    channel,
    db,  # type: ignore[no-untyped-def]
) -> None:
    _, acct, _ = account(channel)
    with pytest.raises(errors.DomainError) as exc:
        _price_grant(db, acct, "50000000000000000000", 2)
    assert exc.value.reason == "AMOUNT_INVALID"
    with pytest.raises(errors.DomainError) as exc:
        _price_grant(db, acct, "0.5", 10**60)
    assert exc.value.reason == "AMOUNT_INVALID"
    assert balance(channel, acct).balance == "0"
    assert amounts.times("49999999999999999999.999999999999999999", 2) == Decimal(
        "99999999999999999999.999999999999999998"
    )
