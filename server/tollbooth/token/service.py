"""IssueToken rules: validate, map the principal, sign."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.repository import by_principal
from tollbooth.accounts.service import (
    account_known_by_id,
    ensure_account,
    require_active,
    validate_alias,
)
from tollbooth.auth.tokens import DEFAULT_SCOPES, SCOPES, TokenCodec


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_at: dt.datetime
    billing_account_id: str
    principal_id: str
    scopes: list[str]
    account_created: bool


def validate_principal(principal_id: str) -> str:
    return validate_alias(principal_id, "principal_id")


def resolve_scopes(requested: list[str]) -> list[str]:
    if not requested:
        return list(DEFAULT_SCOPES)
    unknown = sorted(set(requested) - set(SCOPES))
    if unknown:
        raise errors.invalid(f"unknown scopes {unknown}; known: {list(SCOPES)}", field="scopes")
    return [s for s in SCOPES if s in set(requested)]


def resolve_ttl(requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise errors.invalid(
            "session_ttl_seconds must not be negative", field="session_ttl_seconds"
        )
    if requested == 0:
        return default
    return min(requested, maximum)


def _checked(
    principal_id: str,
    user_id: str,
    scopes: list[str],
    ttl_sec: int,
    ttl_default: int,
    ttl_max: int,
    email: str,
    name: str,
) -> tuple[list[str], int]:
    """The request's checks after the principal's: the scopes granted and the lifetime."""
    granted = resolve_scopes(list(scopes))
    ttl = resolve_ttl(ttl_sec, ttl_default, ttl_max)
    if len(user_id) > 200:
        raise errors.invalid("user_id is longer than 200 characters", field="user_id")
    if len(email) > 320 or len(name) > 200:
        raise errors.invalid("email or name is too long")
    return granted, ttl


def issue_known(
    session: Session,
    codec: TokenCodec,
    *,
    principal_id: str,
    user_id: str,
    scopes: list[str],
    ttl_sec: int,
    ttl_default: int,
    ttl_max: int,
    email: str = "",
    name: str = "",
) -> IssuedToken | None:
    """`issue_token` for a principal whose account exists and needs no write: one read, no
    transaction to commit. None when the call must write (a new principal, or contact details
    to fill): then `issue_token` answers, in a write transaction.

    Answers and refuses exactly as `issue_token`, in the same order: an `acct_` reference names
    an account without an alias (its principal id is its id) or is refused as an alias.
    """
    ref = principal_id.strip()
    found = by_principal(session, ref) if ref.startswith("acct_") else None
    if found is not None and found.id == found.principal_id:
        principal_id = ref  # an account without an alias, named by its id
    else:
        principal_id = validate_principal(principal_id)
    granted, ttl = _checked(
        principal_id, user_id, scopes, ttl_sec, ttl_default, ttl_max, email, name
    )
    account = found if found is not None else by_principal(session, principal_id)
    if account is None or (email and not account.email) or (name and not account.name):
        return None
    require_active(account)
    token, expires = codec.issue(
        billing_account_id=account.id,
        principal_id=principal_id,
        user_id=user_id,
        scopes=granted,
        ttl_sec=ttl,
    )
    return IssuedToken(token, expires, account.id, principal_id, granted, False)


def issue_token(
    session: Session,
    codec: TokenCodec,
    *,
    principal_id: str,
    user_id: str,
    scopes: list[str],
    ttl_sec: int,
    ttl_default: int,
    ttl_max: int,
    email: str = "",
    name: str = "",
) -> IssuedToken:
    if account_known_by_id(session, principal_id) is not None:
        principal_id = principal_id.strip()  # an account without an alias, named by its id
    else:
        principal_id = validate_principal(principal_id)
    granted, ttl = _checked(
        principal_id, user_id, scopes, ttl_sec, ttl_default, ttl_max, email, name
    )
    account, created = ensure_account(session, principal_id, email or None, name or None)
    token, expires = codec.issue(
        billing_account_id=account.id,
        principal_id=principal_id,
        user_id=user_id,
        scopes=granted,
        ttl_sec=ttl,
    )
    return IssuedToken(token, expires, account.id, principal_id, granted, created)
