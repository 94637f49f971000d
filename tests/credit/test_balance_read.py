"""GetBalance's read: the account check and the balance row in one statement when no expiry
is due; the same answers and refusals (in the same order) as before (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import event

from tests.credit.test_expiry import T, grant
from tollbooth import amounts, errors
from tollbooth.accounts.service import ensure_account
from tollbooth.auth.caller import SERVICE, Caller
from tollbooth.auth.tokens import TokenClaims
from tollbooth.credit import queries


@pytest.fixture
def acct(db) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    principal = f"p-{uuid.uuid4().hex[:8]}"
    with db.transaction() as s:
        account, _ = ensure_account(s, principal)
        return account.id, principal


def bearer(account_id: str) -> Caller:
    claims = TokenClaims(account_id, "x", "", frozenset({"credits:read"}), T)
    return Caller("bearer", claims)


def read(db, caller: Caller, ref: str, when: float, ctype: str = "units"):  # type: ignore[no-untyped-def]
    """(balance, reserved, overage, account id) and the statements it took."""
    statements: list[str] = []

    def seen(conn, cursor, statement, *rest):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.transaction(readonly=True) as s:
            v = queries.balance(s, caller, ref, ctype, T + dt.timedelta(seconds=when))
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    figures = (amounts.fmt(v.balance), amounts.fmt(v.reserved), amounts.fmt(v.overage))
    return (*figures, v.billing_account_id), statements


def refusal(db, caller: Caller, ref: str, ctype: str = "units") -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.DomainError) as exc, db.transaction(readonly=True) as s:
        queries.balance(s, caller, ref, ctype, T)
    return exc.value.reason


def test_one_statement_for_every_way_of_naming_the_account(db, acct) -> None:  # type: ignore[no-untyped-def]
    account_id, principal = acct
    grant(db, account_id, "10.5", 0, expires=100)
    for caller, ref in [
        (bearer(account_id), ""),
        (bearer(account_id), account_id),
        (bearer(account_id), principal),
        (SERVICE, account_id),
        (SERVICE, principal),
    ]:
        got, statements = read(db, caller, ref, 50)
        assert got == ("10.5", "0", "0", account_id)
        assert len([s for s in statements if "SELECT" in s.upper()]) == 1, statements


def test_no_balance_row_is_zero(db, acct) -> None:  # type: ignore[no-untyped-def]
    account_id, _ = acct
    got, _ = read(db, bearer(account_id), "", 0, ctype="other")
    assert got == ("0", "0", "0", account_id)


def test_a_due_expiry_is_applied_at_its_instant(db, acct) -> None:  # type: ignore[no-untyped-def]
    account_id, principal = acct
    grant(db, account_id, "10", 0, expires=100)
    grant(db, account_id, "1", 0)
    assert read(db, SERVICE, principal, 99.999999)[0][:2] == ("11", "0")
    assert read(db, SERVICE, principal, 100)[0][:2] == ("1", "0")
    assert read(db, bearer(account_id), "", 100)[0][:2] == ("1", "0")


def test_refusals_are_unchanged_and_the_account_comes_first(db, acct) -> None:  # type: ignore[no-untyped-def]
    account_id, principal = acct
    other_id, _ = acct_of(db)
    assert refusal(db, bearer(account_id), other_id) == "NOT_FOUND"
    assert refusal(db, bearer("acct_missing"), "") == "NOT_FOUND"
    assert refusal(db, SERVICE, "acct_missing") == "NOT_FOUND"
    assert refusal(db, SERVICE, "nobody-here") == "NOT_FOUND"
    assert refusal(db, SERVICE, "") == "FIELD_REQUIRED"
    assert refusal(db, SERVICE, "nobody-here", ctype="") == "NOT_FOUND"
    assert refusal(db, SERVICE, "nobody-here", ctype="bad type!") == "NOT_FOUND"
    assert refusal(db, SERVICE, principal, ctype="") == "FIELD_REQUIRED"
    assert refusal(db, bearer(account_id), "", ctype="bad type!") == "INVALID_ARGUMENT"


def acct_of(db) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        account, _ = ensure_account(s, f"q-{uuid.uuid4().hex[:8]}")
        return account.id, account.principal_id
