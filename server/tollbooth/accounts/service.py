"""Account rules: creation is idempotent; `{account}` names an id or a principal alias."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts import repository
from tollbooth.auth.caller import Caller
from tollbooth.db.models import BillingAccount


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
    if not created:
        # Fill contact details once; never re-point the mapping.
        if email and not account.email:
            account.email = email
        if name and not account.name:
            account.name = name
    return account, created


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


def owner(caller: Caller) -> str | None:
    """Whose owned objects (checkout sessions, subscriptions, purchases) `caller` may read.

    The one ownership decision: a bearer reaches its own account's objects only (another
    account's answer exactly like ones that do not exist); a service caller reaches every
    account's (None: no filter). Repository queries of owned objects take this as `owner`.
    """
    if caller.is_bearer:
        return caller.account_id or ""
    return None
