"""`{account}` resolution and bearer confinement, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from tollbooth.accounts.service import ensure_account, resolve
from tollbooth.auth.caller import SERVICE, Caller
from tollbooth.auth.tokens import TokenClaims
from tollbooth.errors import DomainError


def bearer(account_id: str, principal: str) -> Caller:
    return Caller(
        "bearer", TokenClaims(account_id, principal, "u", frozenset(), dt.datetime.now(dt.UTC))
    )


@pytest.fixture
def accounts(db):  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        mine, _ = ensure_account(s, "p-mine")
        theirs, _ = ensure_account(s, "p-theirs")
        return mine.id, theirs.id


def failure(db, caller: Caller, ref: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as exc, db.transaction() as s:
        resolve(s, caller, ref)
    return exc.value.kind.value, exc.value.reason


def test_service_resolves_by_id_and_by_principal(db, accounts):  # type: ignore[no-untyped-def]
    mine, _ = accounts
    with db.transaction() as s:
        assert resolve(s, SERVICE, mine).id == mine
        assert resolve(s, SERVICE, "p-mine").id == mine


def test_bearer_resolves_own_account_by_empty_id_or_alias(db, accounts):  # type: ignore[no-untyped-def]
    mine, _ = accounts
    me = bearer(mine, "p-mine")
    with db.transaction() as s:
        assert resolve(s, me, "").id == mine
        assert resolve(s, me, mine).id == mine
        assert resolve(s, me, "p-mine").id == mine


@pytest.mark.parametrize("form", ["id", "alias"])
def test_bearer_naming_another_account_answers_like_a_missing_one(db, accounts, form):  # type: ignore[no-untyped-def]
    mine, theirs = accounts
    me = bearer(mine, "p-mine")
    other = theirs if form == "id" else "p-theirs"
    missing = "acct_000000000000000000000000" if form == "id" else "p-nobody"
    kind_other, reason_other = failure(db, me, other)
    kind_missing, reason_missing = failure(db, me, missing)
    assert (
        (kind_other, reason_other) == (kind_missing, reason_missing) == ("NOT_FOUND", "NOT_FOUND")
    )


def test_service_without_account_is_field_required(db, accounts):  # type: ignore[no-untyped-def]
    assert failure(db, SERVICE, "") == ("INVALID_ARGUMENT", "FIELD_REQUIRED")
