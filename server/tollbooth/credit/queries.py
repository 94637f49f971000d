"""Reads of credit: a balance, availability, and the grant and ledger listings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.service import resolve
from tollbooth.amounts import MAX_TOTAL, ZERO, add, parse_amount, sub
from tollbooth.auth.caller import Caller
from tollbooth.credit import engine, lookups, repository
from tollbooth.credit.engine import Book
from tollbooth.credit.rules import clean_type
from tollbooth.credit.unit import grant_model, hold_model, lock
from tollbooth.db import Database
from tollbooth.db.models import BillingAccount, CreditGrant, CreditLedgerEntry
from tollbooth.paging import Int, Keyset, Micros, Page, Text


@dataclass(frozen=True)
class BalanceView:
    billing_account_id: str
    credit_type: str
    balance: Decimal
    reserved: Decimal
    as_of: dt.datetime
    overage: Decimal = ZERO


@dataclass(frozen=True)
class Availability:
    available: bool
    balance: Decimal
    required: Decimal
    shortfall: Decimal


def check_grants_fit(
    session: Session,
    account_id: str,
    granted: Mapping[str, Decimal],
    now: dt.datetime,
    field: str,
) -> None:
    """AMOUNT_INVALID when a purchase granting `granted` (by credit type) would take one of
    the account's balances (free plus reserved) past the largest storable amount: the webhook
    of the paid purchase could never write its grant. Checked when the purchase is created (the
    balance may still grow before it is paid)."""
    kind = first_not_storable(session, account_id, granted, now)
    if kind is not None:
        raise errors.invalid(
            f"the account's {errors.shown(kind)} balance plus what this purchase grants"
            " would exceed the largest storable amount",
            reason="AMOUNT_INVALID",
            field=field,
        )


def first_not_storable(
    session: Session, account_id: str, granted: Mapping[str, Decimal], now: dt.datetime
) -> str | None:
    """The first credit type of `granted` whose grant would take the account's balance (free
    plus reserved) past the largest storable amount; None when all fit. Read only: a
    fulfilment asks it again under the account's lock."""
    for kind, value in granted.items():
        free, reserved = compute_balance(session, account_id, kind, now)
        if add(free, reserved, value) > MAX_TOTAL:
            return kind
    return None


def compute_balance(
    session: Session, account_id: str, credit_type: str, now: dt.datetime
) -> tuple[Decimal, Decimal]:
    """(available, reserved) as of `now`, writing nothing.

    The stored figures are exact until the row's next event; past it, the due expiries are
    applied to a copy of the book in memory.
    """
    row = repository.read_balance(session, account_id, credit_type)
    if row is None:
        return ZERO, ZERO
    if row.next_event_at is None or row.next_event_at > now:
        return row.balance, row.reserved
    grants = {
        g.id: grant_model(g) for g in repository.active_grants(session, account_id, credit_type)
    }
    holds = [hold_model(r) for r in repository.held_reservations(session, account_id, credit_type)]
    referenced = {p.grant_id for h in holds for p in h.portions} - set(grants)
    for g in repository.grants_by_ids(session, account_id, referenced):
        grants[g.id] = grant_model(g)
    book = Book.of(grants.values(), holds)
    effects = book.settle(now)
    available = add(row.balance, *(engine.effect_delta(e) for e in effects))
    return available, book.reserved()


def available_now(
    db: Database, account_id: str, credit_type: str, now: dt.datetime
) -> Decimal | None:
    """`compute_balance`'s available figure in one statement without a session, when the
    stored figures are exact at `now`; None when an expiry is due (then `compute_balance`)."""
    row = repository.balance_figures(db, account_id, credit_type)
    if row is None:
        return ZERO
    balance, next_event_at = row
    if next_event_at is None or next_event_at > now:
        return Decimal(balance)
    return None


def balance(
    session: Session, caller: Caller, account_ref: str, credit_type: str, now: dt.datetime
) -> BalanceView:
    """GetBalance. One statement (the account and its balance row) unless an expiry is due at
    `now` (then `compute_balance`'s reads) or the request is refused (then the checks of
    `resolve` and `clean_type`, in that order, say why)."""

    def read(ref: str, ctype: str, by_principal: bool) -> Any:
        return repository.account_balance(session, ref, ctype, by_principal=by_principal)

    ctype = _type_or_empty(credit_type)
    found = _account_balance(read, caller, account_ref, ctype) if ctype else None
    if found is None:
        account = resolve(session, caller, account_ref)
        ctype = clean_type(credit_type, "type")
        account_id = account.id
    else:
        view = _view(found, ctype, now)
        if view is not None:
            return view
        account_id = found.id
    available, reserved = compute_balance(session, account_id, ctype, now)
    row = repository.read_balance(session, account_id, ctype)  # loaded just above
    overage = row.overage if row is not None else ZERO
    return BalanceView(account_id, ctype, available, reserved, now, overage)


def plain_balance(
    db: Database, caller: Caller, account_ref: str, credit_type: str, now: dt.datetime
) -> BalanceView | None:
    """`balance`'s answer from its one statement in autocommit on a plain pooled connection
    (`Database.read_one`: no session, no BEGIN/COMMIT; PostgreSQL only) when that statement
    settles it: the account found and no expiry due at `now`. None otherwise (a refusal, an
    expiry due): then `balance` answers, in a session, as it always did."""
    ctype = _type_or_empty(credit_type)
    if not ctype:
        return None

    def read(ref: str, ctype: str, by_principal: bool) -> Any:
        return repository.plain_account_balance(db, ref, ctype, by_principal=by_principal)

    found = _account_balance(read, caller, account_ref, ctype)
    return None if found is None else _view(found, ctype, now)


def _type_or_empty(credit_type: str) -> str:
    try:
        return clean_type(credit_type, "type")
    except errors.DomainError:
        return ""  # refused after the account check, as always


def _view(found: Any, ctype: str, now: dt.datetime) -> BalanceView | None:
    """The answer from `account_balance`'s row; None when an expiry is due at `now`."""
    if found.balance is None:
        return BalanceView(found.id, ctype, ZERO, ZERO, now, ZERO)
    if found.next_event_at is None or found.next_event_at > now:
        return BalanceView(found.id, ctype, found.balance, found.reserved, now, found.overage)
    return None


def _account_balance(
    read: Callable[[str, str, bool], Any], caller: Caller, account_ref: str, ctype: str
) -> Any:
    """`resolve`'s account with its `ctype` balance figures, in one statement (`read`: the
    reference, the credit type, whether the reference is a principal id); None where
    `resolve` would refuse (or would look further: an `acct_` reference that is no id)."""
    ref = account_ref.strip()
    if caller.is_bearer:
        found = read(caller.account_id or "", ctype, False)
        if found is not None and ref and ref not in (found.id, found.principal_id):
            return None
        return found
    if not ref:
        return None
    return read(ref, ctype, not ref.startswith("acct_"))


def availability(
    session: Session,
    caller: Caller,
    account_ref: str,
    credit_type: str,
    required: str,
    now: dt.datetime,
) -> Availability:
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type, "type")
    need = parse_amount(required, "required")
    available, _ = compute_balance(session, account.id, ctype, now)
    short = sub(need, available) if need > available else ZERO
    return Availability(short == 0, available, need, short)


def settle_due(
    session: Session, account: BillingAccount, credit_type: str, now: dt.datetime
) -> None:
    """Record due expiries of the account's balances, so a listing shows them."""
    for ctype in repository.due_credit_types(session, account.id, credit_type, now):
        lock(session, account.id, ctype, lambda: now, create=False)


def get_grant(
    session: Session, caller: Caller, account_ref: str, grant_id: str, now: dt.datetime
) -> CreditGrant:
    """One grant of the account, after the due events of its balance are recorded (a lapsed
    hold's credits back, an expiry), as a listing shows it."""
    found = lookups.get_grant(session, caller, account_ref, grant_id)
    if repository.due_credit_types(session, found.billing_account_id, found.credit_type, now):
        lock(session, found.billing_account_id, found.credit_type, lambda: now, create=False)
        session.refresh(found)
    return found


def list_grants(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    credit_type: str,
    include_inactive: bool,
    page_size: int,
    page_token: str,
    now: dt.datetime,
) -> Page[CreditGrant]:
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type) if credit_type.strip() else ""
    keyset: Keyset[CreditGrant] = Keyset.of(
        f"credit-grants:{account.id}:{ctype}:{int(include_inactive)}",
        (Text(), Int(), Int(), Int()),
        lambda g: (g.credit_type, g.priority, g.expiry_key, g.seq),
        page_size,
    )
    after = keyset.after(page_token)
    settle_due(session, account, ctype, now)
    rows = repository.list_grants(
        session, account.id, ctype, include_inactive, after=after, limit=keyset.limit
    )
    return keyset.page(rows)


def list_ledger(
    session: Session,
    caller: Caller,
    account_ref: str,
    *,
    credit_type: str,
    page_size: int,
    page_token: str,
    now: dt.datetime,
) -> Page[CreditLedgerEntry]:
    account = resolve(session, caller, account_ref)
    ctype = clean_type(credit_type) if credit_type.strip() else ""
    keyset: Keyset[CreditLedgerEntry] = Keyset.of(
        f"credit-ledger:{account.id}:{ctype}",
        (Micros(), Int(), Text()),
        lambda e: (e.created_at, e.seq, e.id),
        page_size,
    )
    after = keyset.after(page_token)
    settle_due(session, account, ctype, now)
    rows = repository.list_ledger(session, account.id, ctype, after=after, limit=keyset.limit)
    return keyset.page(rows)
