"""AccountService rules: create, get, list, update (AIP-134 masks) and archive.

Business rules only: the servicer opens the transaction; the provider customer follows in
`customer_sync` after the commit, never inside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts import repository
from tollbooth.accounts.service import alias_of, validate_alias
from tollbooth.db.models import BillingAccount
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id
from tollbooth.metadata import clean_provider_metadata
from tollbooth.paging import Keyset, Micros, Page, Text

MUTABLE = ("name", "email", "metadata")
# The key the provider customer's copy of the metadata adds: the account id (`customer_sync`).
ACCOUNT_KEY = "billing_account_id"
# Output-only paths are accepted and ignored (AIP-203); `alias` only when unchanged.
OUTPUT_ONLY = (
    "id",
    "stripe_customer_id",
    "archived",
    "create_time",
    "update_time",
    "archive_time",
)


def _is_email(email: str) -> bool:
    local, at, domain = email.rpartition("@")
    # No blanks, controls (CR, LF, BEL) or invisible format characters anywhere in it; one
    # `@`; dot-separated parts that are not empty (`a@example..com`, `.a@b.c`): Stripe refuses
    # those as its customer's e-mail, on every sync of the account.
    return not (
        not at
        or not local
        or "@" in local
        or "." not in domain
        or not email.isprintable()
        or " " in email
        or any(not part for part in (*local.split("."), *domain.split(".")))
    )


def clean_email(email: str, field_name: str = "email") -> str | None:
    email = email.strip()
    if not email:
        return None
    if not _is_email(email):
        hint = ""
        if " " in email and _is_email(email.replace(" ", "+")):
            # `?customerEmail=user+tag@example.com`: a query reads a raw `+` as a space.
            hint = (
                ": it holds a space where a '+' would make one; in a URL's query a raw '+'"
                " reads as a space, so send '+' as %2B"
            )
        raise errors.invalid(
            f"{field_name} is not an e-mail address{hint}", reason="EMAIL_INVALID", field=field_name
        )
    return email


def clean_account_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """An account's metadata, which its provider customer carries plus ACCOUNT_KEY: so it must
    be what Stripe takes after that key is added (at most 50 keys, none with a square bracket)
    and must not name that key itself. Checked before anything is written: metadata the
    provider refuses would otherwise be committed and then fail every sync of the account (its
    checkouts and payment intents included) with PROVIDER_REQUEST_INVALID."""
    return clean_provider_metadata(metadata, reserved=ACCOUNT_KEY)


def clean_name(name: str, field_name: str = "name") -> str | None:
    name = name.strip()
    if len(name) > 200:
        raise errors.invalid(f"{field_name} is longer than 200 characters", field=field_name)
    return name or None


def alias_taken(existing: BillingAccount) -> errors.DomainError:
    return errors.DomainError(
        errors.Kind.ALREADY_EXISTS,
        "ACCOUNT_ALIAS_TAKEN",
        f"an account with alias {errors.shown(existing.principal_id)} already exists",
        account_id=existing.id,
        alias=existing.principal_id,
    )


def create_account(
    session: Session,
    *,
    name: str,
    email: str,
    alias: str,
    metadata: Mapping[str, str],
    description: str = "",
    phone: str = "",
) -> BillingAccount:
    """A new account; its alias (when given) must be free. Insert first: a concurrent create
    of the same alias loses on the unique constraint and answers with the winner's id."""
    clean_alias = validate_alias(alias, "alias") if alias.strip() else ""
    account_id = new_id("acct")
    created = repository.insert_if_absent(
        session,
        clean_alias or account_id,
        clean_email(email),
        clean_name(name),
        account_id=account_id,
        metadata=clean_account_metadata(metadata),
        description=description.strip() or None,
        phone=phone.strip() or None,
    )
    if not created:
        existing = repository.by_principal(session, clean_alias)
        assert existing is not None  # the conflict was on this alias; mappings are never deleted
        raise alias_taken(existing)
    account = repository.by_id(session, account_id)
    assert account is not None
    return account


def get_account(session: Session, ref: str) -> BillingAccount:
    """By id (`acct_...`) or alias, archived ones included."""
    ref = ref.strip()
    if not ref:
        raise errors.required("account")
    account = repository.by_id(session, ref) if ref.startswith("acct_") else None
    if account is None and not ref.startswith("acct_"):
        account = repository.by_principal(session, ref)
    if account is None:
        raise errors.not_found("account", ref)
    return account


def list_accounts(
    session: Session,
    *,
    page_size: int,
    page_token: str,
    email: str = "",
    alias_prefix: str = "",
    include_archived: bool = False,
    with_customer: bool = False,
    default_size: int = 20,
) -> Page[BillingAccount]:
    email, alias_prefix = email.strip(), alias_prefix.strip()
    filters = "\x1f".join([email, alias_prefix, str(include_archived), str(with_customer)])
    query = "accounts:" + hashlib.sha256(filters.encode()).hexdigest()[:24]
    keyset: Keyset[BillingAccount] = Keyset.of(
        query,
        (Micros(), Text()),
        lambda a: (a.created_at, a.id),
        page_size,
        default=default_size,
    )
    rows = repository.list_accounts(
        session,
        email=email,
        alias_prefix=alias_prefix,
        include_archived=include_archived,
        with_customer=with_customer,
        after=keyset.after(page_token),
        limit=keyset.limit,
    )
    return keyset.page(rows)


def update_account(
    session: Session,
    ref: str,
    paths: Sequence[str],
    *,
    name: str,
    email: str,
    alias: str,
    metadata: Mapping[str, str],
) -> BillingAccount:
    """Apply the fields `paths` names (AIP-134: `*` is every mutable field)."""
    account = get_account(session, ref)
    locked = repository.by_id_for_update(session, account.id)
    assert locked is not None
    account = locked
    named = [p.strip() for p in paths if p.strip()]
    if "*" in named and len(named) > 1:
        raise errors.invalid(
            "update_mask '*' names every field: send it alone", field="update_mask"
        )
    wanted = set(MUTABLE) if "*" in named else set()
    for path in named:
        if path == "*":
            continue
        if path in MUTABLE:
            wanted.add(path)
        elif path == "alias":
            if alias.strip() and alias.strip() != alias_of(account):
                raise errors.invalid("alias cannot change once set", field="alias")
        elif path not in OUTPUT_ONLY:
            raise errors.unknown_mask_path(path)
    changed = False
    if "name" in wanted:
        value = clean_name(name)
        changed |= value != account.name
        account.name = value
    if "email" in wanted:
        value = clean_email(email)
        changed |= value != account.email
        account.email = value
    if "metadata" in wanted:
        meta = clean_account_metadata(metadata)
        changed |= meta != dict(account.attributes or {})
        account.attributes = meta
    if changed:
        account.version += 1
        account.updated_at = utcnow()
    session.flush()
    return account


def archive_account(session: Session, ref: str) -> BillingAccount:
    """Archive once; archiving again answers the archived account unchanged."""
    account = get_account(session, ref)
    locked = repository.by_id_for_update(session, account.id)
    assert locked is not None
    if locked.archived_at is None:
        now = utcnow()
        locked.archived_at = now
        locked.updated_at = now
        session.flush()
    return locked
