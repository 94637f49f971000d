"""Account rules: creation is idempotent; `{account}` names an id or a principal alias."""

from __future__ import annotations

import datetime as dt
import re
from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts import repository
from tollbooth.auth.caller import Caller
from tollbooth.db.models import BillingAccount

PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,199}$")


def validate_alias(value: str, field_name: str = "principal_id") -> str:
    """A principal id (alias): 1-200 of letters, digits and `._:@-`, the first a letter or a
    digit, never `acct_...`."""
    value = value.strip()
    if not value:
        raise errors.required(field_name)
    if not PRINCIPAL_RE.match(value):
        raise errors.invalid(
            f"{field_name} must be 1-200 characters of letters, digits and ._:@-, beginning"
            " with a letter or a digit",
            field=field_name,
        )
    if value.startswith("acct_"):
        # Account ids use this prefix; a principal with it would make {account} ambiguous.
        raise errors.invalid(f"{field_name} must not start with 'acct_'", field=field_name)
    return value


def alias_of(account: BillingAccount) -> str:
    """The account's alias; "" for an account known by its id only."""
    return "" if account.principal_id == account.id else account.principal_id


def account_known_by_id(session: Session, ref: str) -> BillingAccount | None:
    """An account created without an alias (CreateCustomer), named by its id: IssueToken
    takes that id as the principal. None for anything else."""
    account = repository.by_id(session, ref.strip()) if ref.strip().startswith("acct_") else None
    return account if account is not None and account.principal_id == account.id else None


class Archivable(Protocol):
    """An account as `require_active` reads it (a `BillingAccount`, or a plain row of it)."""

    @property
    def id(self) -> str: ...

    @property
    def archived_at(self) -> dt.datetime | None: ...


A = TypeVar("A", bound=Archivable)


def require_active(account: A) -> A:
    """Refuse new tokens, checkouts and grants for an archived account (history stays)."""
    if account.archived_at is not None:
        raise errors.failed_precondition(
            "ACCOUNT_ARCHIVED", f"account {account.id} is archived", account_id=account.id
        )
    return account


def ensure_account(
    session: Session, principal_id: str, email: str | None = None, name: str | None = None
) -> tuple[BillingAccount, bool]:
    """Create the principal's account on first call; afterwards return the same one.

    The mapping never changes once written, so a plain read answers every later call; only a
    miss goes to the conflict-proof insert.
    """
    account = repository.by_principal(session, principal_id)
    created = False
    if account is None:
        created = repository.insert_if_absent(session, principal_id, email, name)
        account = repository.by_principal(session, principal_id)
    assert account is not None  # inserted or already there; the mapping is never deleted
    require_active(account)
    if not created:
        # Fill contact details once; never re-point the mapping.
        account = _fill(session, account, email, name)
    return account, created


def fill_email(session: Session, account: BillingAccount, email: str) -> BillingAccount:
    """Give the account `email` when it has none (the provider customer follows on its next
    sync); an account's own e-mail is never replaced this way."""
    return _fill(session, account, email, None)


def _fill(
    session: Session, account: BillingAccount, email: str | None, name: str | None
) -> BillingAccount:
    """Fill the e-mail and name the account lacks. Decided again under the account's row lock,
    read afresh: an UpdateAccount setting them meanwhile (its own values) is never
    overwritten, and each fill counts in the version."""
    if not ((email and not account.email) or (name and not account.name)):
        return account
    # FOR NO KEY UPDATE: a checkout's slot row inserted by another tab of this account (its
    # foreign key takes KEY SHARE) must not wait for this fill while the fill's own claim of
    # that slot waits for it (a deadlock with FOR UPDATE).
    locked = repository.by_id_for_update(session, account.id, keys_shared=True)
    assert locked is not None  # accounts are archived, never deleted
    if email and not locked.email:
        locked.email = email
        locked.version += 1
    if name and not locked.name:
        locked.name = name
        locked.version += 1
    return locked


def resolve(session: Session, caller: Caller, ref: str) -> BillingAccount:
    """The account an RPC acts on.

    A bearer caller acts on its own account only: naming any other account answers exactly as
    an account that does not exist. A service caller names the account by id or principal id;
    ids carry the `acct_` prefix, so the two never collide.
    """
    ref = ref.strip()
    if caller.is_bearer:
        own = repository.by_id(session, caller.account_id or "")
        if own is None:
            raise errors.not_found("account", ref or "(token account)")
        if ref and ref not in (own.id, own.principal_id):
            raise errors.not_found("account", ref)
        return own
    if not ref:
        raise errors.required("account")
    account = repository.by_id(session, ref) if ref.startswith("acct_") else None
    if account is None:
        account = repository.by_principal(session, ref)
    if account is None:
        raise errors.not_found("account", ref)
    return account


def resolve_by_customer(
    session: Session, caller: Caller, ref: str, customer: str
) -> BillingAccount:
    """`resolve`, where the request may also name the account's provider customer (seed 003's
    portal body). A service caller may name the account by its customer alone; a customer other
    than the account's own answers exactly like one that does not exist."""
    customer = customer.strip()
    if not customer:
        return resolve(session, caller, ref)
    if caller.is_service and not ref.strip():
        found = repository.by_customer(session, customer)
        if found is None:
            raise errors.not_found("customer", customer)
        return found
    account = resolve(session, caller, ref)
    if account.stripe_customer_id != customer:
        raise errors.not_found("customer", customer)
    return account


def owner(caller: Caller) -> str | None:
    """Whose owned objects (checkout sessions, subscriptions, purchases) `caller` may read.

    The one ownership decision: a bearer reaches its own account's objects only (another
    account's answer exactly like ones that do not exist); a service caller reaches every
    account's (None: no filter). Repository queries of owned objects take this as `owner`.
    """
    if caller.is_bearer:
        return caller.account_id or ""
    return None
