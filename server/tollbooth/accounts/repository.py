"""Every query on billing accounts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from tollbooth.db import UNICODE_LOWER, Database, upsert_insert
from tollbooth.db.models import BillingAccount, BillingEffect
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id
from tollbooth.paging import after_clause


def insert_if_absent(
    session: Session,
    principal_id: str,
    email: str | None,
    name: str | None,
    *,
    account_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    description: str | None = None,
    phone: str | None = None,
) -> bool:
    """Insert the mapping unless the principal has one. True when this call created it."""
    now = utcnow()
    stmt = (
        upsert_insert(session, BillingAccount)
        .values(
            id=account_id or new_id("acct"),
            principal_id=principal_id,
            email=email or None,
            name=name or None,
            attributes=dict(metadata or {}),
            description=description or None,
            phone=phone or None,
            version=1,
            customer_version=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["principal_id"])
        .returning(BillingAccount.id)
    )
    return session.execute(stmt).first() is not None


def by_principal(session: Session, principal_id: str) -> BillingAccount | None:
    return session.scalars(
        select(BillingAccount).where(BillingAccount.principal_id == principal_id)
    ).first()


class KnownAccount(NamedTuple):
    """What IssueToken reads of a known principal's account (`known_by_principal`)."""

    id: str
    principal_id: str
    email: str | None
    name: str | None
    archived_at: dt.datetime | None


_KNOWN_BY_PRINCIPAL = (
    "SELECT id, principal_id, email, name, archived_at FROM billing_accounts"
    " WHERE principal_id = %(principal)s LIMIT 1"
)


def known_by_principal(db: Database, principal_id: str) -> KnownAccount | None:
    """`by_principal`'s account, in one statement in autocommit through the driver's cursor
    (`Database.read_one`: no session, no BEGIN/COMMIT); PostgreSQL only."""
    row = db.read_one(_KNOWN_BY_PRINCIPAL, {"principal": principal_id})
    if row is None:
        return None
    known = KnownAccount(*row)
    archived = known.archived_at
    if archived is not None:  # as `UTCDateTime` gives it: aware, in UTC
        known = known._replace(archived_at=archived.astimezone(dt.UTC))
    return known


def by_id(session: Session, account_id: str) -> BillingAccount | None:
    return session.get(BillingAccount, account_id)


def by_id_for_update(
    session: Session, account_id: str, *, keys_shared: bool = False
) -> BillingAccount | None:
    """The account, its row locked until commit and read again after the lock was granted
    (`populate_existing`): an account this session loaded before waiting would otherwise keep
    the values it had then, and a concurrent update, archive or metadata merge be lost.

    `keys_shared`: FOR NO KEY UPDATE, which still excludes every other update of the row but
    not the KEY SHARE that inserting a row referring to the account takes (a checkout's slot,
    a ledger line): for a change of contact details made beside such inserts of other
    transactions, which would otherwise deadlock with them. Without it, FOR UPDATE (an
    archive must also wait for those inserts, and they for it)."""
    return session.scalars(
        select(BillingAccount)
        .where(BillingAccount.id == account_id)
        .with_for_update(key_share=keys_shared)
        .execution_options(populate_existing=True)
    ).first()


def by_customer(session: Session, customer_id: str) -> BillingAccount | None:
    return session.scalars(
        select(BillingAccount).where(BillingAccount.stripe_customer_id == customer_id)
    ).first()


def _lowered_email(session: Session) -> tuple[ColumnElement[str], bool]:
    """The account's e-mail lowercased as this database can, and whether that is Python's
    `str.lower` (SQLite, whose own lower() folds ASCII only: `É` stayed `É` there while the
    compared side was lowered in Python, so such an address never matched, not even as
    stored). On PostgreSQL it is `lower(email)`, the index's expression, and the other side
    must be lowered by the database too (`func.lower(...)`), so both fold alike."""
    if session.get_bind().dialect.name == "sqlite":
        return getattr(func, UNICODE_LOWER)(BillingAccount.email), True
    return func.lower(BillingAccount.email), False


def email_is(session: Session, email: str) -> ColumnElement[bool]:
    """The account's e-mail is `email` in any case."""
    column, python = _lowered_email(session)
    return column == (email.lower() if python else func.lower(email))


def ids_by_email(session: Session, email: str, *, customers_only: bool = False) -> list[str]:
    """Accounts whose e-mail is `email` in any case (stored as given; compared lowercased,
    on the `lower(email)` index). `customers_only`: not those whose provider customer was
    deleted, or whose DeleteCustomer is still finishing at the provider (`customer_gone`)."""
    stmt = select(BillingAccount.id).where(email_is(session, email))
    if customers_only:
        marked = select(BillingEffect.key).where(
            BillingEffect.key == "customer.delete:" + BillingAccount.id
        )
        stmt = stmt.where(BillingAccount.customer_deleted_at.is_(None), ~marked.exists())
    return list(session.scalars(stmt.order_by(BillingAccount.created_at, BillingAccount.id)))


def customer_gone(session: Session, account: BillingAccount) -> bool:
    """Whether the account's provider customer was deleted: recorded so, or DeleteCustomer
    committed its mark and its provider call has not finished (failed, or still on its way):
    either way the customer is answered as deleted, never with its stale fields."""
    if account.customer_deleted_at is not None:
        return True
    return session.get(BillingEffect, delete_mark(account.id)) is not None


def list_accounts(
    session: Session,
    *,
    email: str,
    alias_prefix: str,
    include_archived: bool,
    with_customer: bool,
    after: Sequence[object] | None,
    limit: int,
) -> list[BillingAccount]:
    """Oldest first by (created_at, id); `email` matches in any case."""
    stmt = select(BillingAccount)
    if email:
        stmt = stmt.where(email_is(session, email))
    if alias_prefix:
        stmt = stmt.where(
            BillingAccount.principal_id.startswith(alias_prefix, autoescape=True),
            # In the case given: SQLite's LIKE folds ASCII case (PostgreSQL's does not), and an
            # alias is an exact id. LIKE stays for PostgreSQL's index.
            func.substr(BillingAccount.principal_id, 1, len(alias_prefix)) == alias_prefix,
            BillingAccount.principal_id != BillingAccount.id,
        )
    if not include_archived:
        stmt = stmt.where(BillingAccount.archived_at.is_(None))
    if with_customer:
        stmt = stmt.where(BillingAccount.stripe_customer_id.is_not(None))
    if after is not None:
        stmt = stmt.where(after_clause((BillingAccount.created_at, BillingAccount.id), after))
    stmt = stmt.order_by(BillingAccount.created_at, BillingAccount.id).limit(limit)
    return list(session.scalars(stmt))


def record_customer_version(session: Session, account_id: str, version: int) -> None:
    """The provider acknowledged the account as of `version` (never moves back)."""
    session.execute(
        update(BillingAccount)
        .where(BillingAccount.id == account_id, BillingAccount.customer_version < version)
        .values(customer_version=version)
    )


def record_customer_deleted(session: Session, account_id: str, at: dt.datetime) -> bool:
    """True for the one call that records it (a concurrent sweep or retry finds it done)."""
    done = session.execute(
        update(BillingAccount)
        .where(BillingAccount.id == account_id, BillingAccount.customer_deleted_at.is_(None))
        .values(customer_deleted_at=at)
    )
    return bool(getattr(done, "rowcount", 0))


def delete_mark(account_id: str) -> str:
    """The `billing_effects` key saying DeleteCustomer archived the account and wants its
    provider customer deleted (ArchiveAccount alone keeps it: its subscriptions go on)."""
    return f"customer.delete:{account_id}"


def mark_customer_delete(session: Session, account_id: str) -> bool:
    """True for the one DeleteCustomer that writes the mark (an earlier one, committed or
    racing on another replica behind the account's row lock, wrote it first: False)."""
    stmt = upsert_insert(session, BillingEffect).values(
        key=delete_mark(account_id),
        event_id="DeleteCustomer",
        billing_account_id=account_id,
        created_at=utcnow(),
    )
    stmt = stmt.on_conflict_do_nothing(index_elements=["key"]).returning(BillingEffect.key)
    return session.execute(stmt).first() is not None


def customers_behind(session: Session) -> list[str]:
    """Ids of the accounts whose provider customer has not acknowledged their latest change
    (`customer_version < version`: the sync after an update failed or never ran), the
    customer neither deleted nor missing."""
    rows = session.scalars(
        select(BillingAccount.id)
        .where(
            BillingAccount.stripe_customer_id.is_not(None),
            BillingAccount.customer_deleted_at.is_(None),
            BillingAccount.customer_version < BillingAccount.version,
        )
        .order_by(BillingAccount.id)
    )
    return [str(a) for a in rows]


def customers_left_to_delete(session: Session) -> list[tuple[str, str]]:
    """(account id, provider customer id) of every account DeleteCustomer archived whose
    provider customer is not recorded deleted (its provider call failed or never ran)."""
    rows = session.execute(
        select(BillingAccount.id, BillingAccount.stripe_customer_id)
        .join(BillingEffect, BillingEffect.key == "customer.delete:" + BillingAccount.id)
        .where(
            BillingAccount.archived_at.is_not(None),
            BillingAccount.customer_deleted_at.is_(None),
            BillingAccount.stripe_customer_id.is_not(None),
        )
        .order_by(BillingAccount.id)
    )
    return [(str(a), str(c)) for a, c in rows]


def search(session: Session, text: str, limit: int) -> list[BillingAccount]:
    """Accounts whose id or principal id (alias) is `text`, or whose email contains it
    (case-insensitive), newest first; every account when `text` is empty (the console)."""
    stmt = select(BillingAccount)
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        column, python = _lowered_email(session)
        stmt = stmt.where(
            or_(
                BillingAccount.id == text,
                BillingAccount.principal_id == text,
                column.like(pattern.lower() if python else func.lower(pattern), escape="\\"),
            )
        )
    order = (BillingAccount.created_at.desc(), BillingAccount.id.desc())
    return list(session.scalars(stmt.order_by(*order).limit(limit)))
