"""IssueToken rules: validate, map the principal, sign."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.manage import clean_email
from tollbooth.accounts.repository import KnownAccount
from tollbooth.accounts.service import (
    account_known_by_id,
    ensure_account,
    require_active,
    validate_alias,
)
from tollbooth.auth.tokens import DEFAULT_SCOPES, SCOPES, TokenCodec
from tollbooth.db.models import BillingAccount

Known = BillingAccount | KnownAccount


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
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise errors.invalid(
            f"unknown scope {errors.shown(unknown[0])}{more}; known: {list(SCOPES)}",
            field="scopes",
        )
    return [s for s in SCOPES if s in set(requested)]


def resolve_ttl(
    requested: int, default: int, maximum: int, field: str = "session_ttl_seconds"
) -> int:
    """`field` is the spelling the caller sent (the deprecated `session_ttl_sec` too)."""
    if requested < 0:
        raise errors.invalid(f"{field} must not be negative", field=field)
    if requested == 0:
        return default
    return min(requested, maximum)


@dataclass(frozen=True)
class TokenRequest:
    """An IssueToken request as the rules read it, with the server's lifetime settings."""

    principal_id: str
    user_id: str
    scopes: list[str]
    ttl_sec: int
    ttl_default: int
    ttl_max: int
    email: str = ""
    name: str = ""
    ttl_field: str = "session_ttl_seconds"  # the spelling ttl_sec came in


def _checked(req: TokenRequest) -> tuple[list[str], int]:
    """The request's checks after the principal's: the scopes granted and the lifetime."""
    granted = resolve_scopes(list(req.scopes))
    ttl = resolve_ttl(req.ttl_sec, req.ttl_default, req.ttl_max, req.ttl_field)
    if len(req.user_id) > 200:
        raise errors.invalid("user_id is longer than 200 characters", field="user_id")
    # The edge refuses these first (the contract's max_length: FIELD_INVALID); kept for
    # callers of the rules that do not come through it.
    if len(req.email) > 320:
        raise errors.invalid("email is longer than 320 characters", field="email")
    if len(req.name) > 200:
        raise errors.invalid("name is longer than 200 characters", field="name")
    clean_email(req.email)  # EMAIL_INVALID: it becomes the Stripe customer's e-mail
    return granted, ttl


def _issue(
    codec: TokenCodec,
    req: TokenRequest,
    checked: tuple[list[str], int],
    account_id: str,
    principal_id: str,
    created: bool,
) -> IssuedToken:
    granted, ttl = checked
    token, expires = codec.issue(
        billing_account_id=account_id,
        principal_id=principal_id,
        user_id=req.user_id,
        scopes=granted,
        ttl_sec=ttl,
    )
    return IssuedToken(token, expires, account_id, principal_id, granted, created)


# How `issue_known` finds the account of a principal id: `accounts.repository.by_principal`
# in a session, or `known_by_principal`'s one plain statement.
Lookup = Callable[[str], Known | None]


def issue_known(codec: TokenCodec, req: TokenRequest, lookup: Lookup) -> IssuedToken | None:
    """`issue_token` for a principal whose account exists and needs no write: one read
    (`lookup`), no transaction to commit. None when the call must write (a new principal, or
    contact details to fill): then `issue_token` answers, in a write transaction.

    Answers and refuses exactly as `issue_token`, in the same order: an `acct_` reference names
    an account without an alias (its principal id is its id) or is refused as an alias.
    """
    ref = req.principal_id.strip()
    found = lookup(ref) if ref.startswith("acct_") else None
    if found is not None and found.id == found.principal_id:
        principal_id = ref  # an account without an alias, named by its id
    else:
        principal_id = validate_principal(req.principal_id)
    checked = _checked(req)
    account = found if found is not None else lookup(principal_id)
    if (
        account is None
        or (req.email.strip() and not account.email)
        or (req.name and not account.name)
    ):
        return None
    require_active(account)
    return _issue(codec, req, checked, account.id, principal_id, False)


def issue_token(session: Session, codec: TokenCodec, req: TokenRequest) -> IssuedToken:
    if account_known_by_id(session, req.principal_id) is not None:
        principal_id = req.principal_id.strip()  # an account without an alias, named by its id
    else:
        principal_id = validate_principal(req.principal_id)
    checked = _checked(req)
    account, created = ensure_account(
        session, principal_id, clean_email(req.email), req.name or None
    )
    return _issue(codec, req, checked, account.id, principal_id, created)
