"""One grant, debit or reservation by id: reads only, owned by the account named.

The owner is resolved exactly as for VoidGrant and CommitReservation (a bearer caller is its
own account; a service caller names it), and every query takes that account: another
account's id answers NOT_FOUND, like an id that does not exist.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.service import resolve
from tollbooth.auth.caller import Caller
from tollbooth.credit import repository
from tollbooth.db.models import CreditGrant, CreditLedgerEntry, CreditReservation


def _id(value: str, field: str) -> str:
    ident = value.strip()
    if not ident:
        raise errors.required(field)
    return ident


def get_grant(session: Session, caller: Caller, account_ref: str, grant_id: str) -> CreditGrant:
    account = resolve(session, caller, account_ref)
    found = repository.grant(session, account.id, _id(grant_id, "grant_id"))
    if found is None:
        raise errors.not_found("grant", grant_id)
    return found


def get_debit(
    session: Session, caller: Caller, account_ref: str, debit_id: str
) -> CreditLedgerEntry:
    account = resolve(session, caller, account_ref)
    found = repository.debit_entry(session, account.id, _id(debit_id, "debit_id"))
    if found is None:
        raise errors.not_found("debit", debit_id)
    return found


def get_reservation(
    session: Session, caller: Caller, account_ref: str, reservation_id: str
) -> CreditReservation:
    account = resolve(session, caller, account_ref)
    found = repository.reservation(session, account.id, _id(reservation_id, "reservation_id"))
    if found is None:
        raise errors.not_found("reservation", reservation_id)
    return found
