"""Every query on the webhook inbox and the effect guards."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import BillingEffect, StripeEvent
from tollbooth.db.types import utcnow
from tollbooth.paging import after_clause


def insert_event(
    session: Session,
    *,
    event_id: str,
    type_: str,
    api_version: str,
    livemode: bool,
    created: dt.datetime | None,
    payload: bytes,
    next_attempt_at: dt.datetime | None = None,
) -> bool:
    """Insert first, never check-then-insert: True only for the one call that wrote it.

    The event starts `pending`; the worker picks it up at `next_attempt_at` (now by default)."""
    stmt = (
        upsert_insert(session, StripeEvent)
        .values(
            event_id=event_id,
            type=type_,
            api_version=api_version or None,
            livemode=livemode,
            provider_created_at=created,
            payload=payload,
            received_at=utcnow(),
            status="pending",
            attempts=0,
            next_attempt_at=next_attempt_at or utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(StripeEvent.event_id)
    )
    return session.execute(stmt).first() is not None


def count_events(session: Session, event_id: str | None = None) -> int:
    stmt = select(func.count()).select_from(StripeEvent)
    if event_id is not None:
        stmt = stmt.where(StripeEvent.event_id == event_id)
    return int(session.scalar(stmt) or 0)


STATUSES = ("pending", "applied", "ignored", "failed")


def count_by_status(session: Session) -> dict[str, int]:
    """Stored events by status: pending, applied, ignored, failed."""
    rows = session.execute(
        select(StripeEvent.status, func.count()).group_by(StripeEvent.status)
    ).all()
    counts = dict.fromkeys(STATUSES, 0)
    for status, n in rows:
        counts[str(status)] = counts.get(str(status), 0) + int(n)
    return counts


def lock_event(session: Session, event_id: str) -> StripeEvent | None:
    """The stored event, locked: concurrent deliveries of one event take turns here."""
    return session.scalars(
        select(StripeEvent)
        .where(StripeEvent.event_id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def event_version(row: StripeEvent) -> str:
    """Changes whenever the event does: a replay (attempts 0, a new lease), an attempt (one
    more, a new next attempt), an outcome (the status). What a console Replay form carries."""
    when = row.next_attempt_at.isoformat() if row.next_attempt_at else "-"
    return f"{row.status}:{row.attempts}:{when}"


def read_event(session: Session, event_id: str) -> StripeEvent | None:
    return session.get(StripeEvent, event_id)


def mark_done(
    session: Session, event_id: str, status: str, at: dt.datetime, reason: str | None = None
) -> None:
    """Applied or ignored: one more attempt, no further retry."""
    session.execute(
        update(StripeEvent)
        .where(StripeEvent.event_id == event_id)
        .values(
            status=status,
            processed_at=at,
            attempts=StripeEvent.attempts + 1,
            last_error=reason[:500] if reason else None,
            next_attempt_at=None,
        )
    )


def mark_failed(
    session: Session, event_id: str, error: str, next_attempt_at: dt.datetime | None
) -> int:
    """One more failed attempt; returns the attempts so far. `next_attempt_at` None: no more
    automatic retries (an operator replays it)."""
    row = session.scalars(
        select(StripeEvent).where(StripeEvent.event_id == event_id).with_for_update()
    ).first()
    if row is None or row.status in ("applied", "ignored"):
        return 0  # applied meanwhile by another delivery: the failure is history
    row.status = "failed"
    row.attempts += 1
    row.last_error = error[:500]
    row.next_attempt_at = next_attempt_at
    session.flush()
    return row.attempts


def claim_due(
    session: Session, now: dt.datetime, lease_until: dt.datetime, limit: int
) -> list[str]:
    """Events due for an attempt, leased to the caller until `lease_until`.

    SKIP LOCKED: replicas polling at once take disjoint events; the lease (a later
    next_attempt_at) keeps others off an event while it is applied outside this transaction.
    """
    ids = list(
        session.scalars(
            select(StripeEvent.event_id)
            .where(
                StripeEvent.status.in_(("pending", "failed")),
                StripeEvent.next_attempt_at.is_not(None),
                StripeEvent.next_attempt_at <= now,
            )
            .order_by(StripeEvent.next_attempt_at, StripeEvent.event_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(StripeEvent)
            .where(StripeEvent.event_id.in_(ids))
            .values(next_attempt_at=lease_until)
        )
    return ids


def list_events(
    session: Session,
    *,
    status: str | None,
    after: tuple[dt.datetime, str] | None,
    limit: int,
) -> list[StripeEvent]:
    """Stored events, newest first, optionally of one status (operators)."""
    stmt = select(StripeEvent)
    if status is not None:
        stmt = stmt.where(StripeEvent.status == status)
    if after is not None:
        stmt = stmt.where(
            after_clause((StripeEvent.received_at, StripeEvent.event_id), after, descending=True)
        )
    return list(
        session.scalars(
            stmt.order_by(StripeEvent.received_at.desc(), StripeEvent.event_id.desc()).limit(limit)
        )
    )


def failed_ids(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(StripeEvent.event_id)
            .where(StripeEvent.status == "failed")
            .order_by(StripeEvent.received_at, StripeEvent.event_id)
        )
    )


def events_to_replay(
    session: Session, *, since: dt.datetime | None, event_id: str | None
) -> list[str]:
    """Ids of stored events in the order they were received (provider time breaks ties)."""
    stmt = select(StripeEvent.event_id)
    if event_id is not None:
        stmt = stmt.where(StripeEvent.event_id == event_id)
    if since is not None:
        stmt = stmt.where(StripeEvent.received_at >= since)
    return list(
        session.scalars(
            stmt.order_by(
                StripeEvent.received_at, StripeEvent.provider_created_at, StripeEvent.event_id
            )
        )
    )


def claim_effect(session: Session, key: str, event_id: str, account_id: str | None) -> bool:
    """Insert-first natural-key guard: True only for the one transaction that applies it."""
    stmt = (
        upsert_insert(session, BillingEffect)
        .values(key=key, event_id=event_id, billing_account_id=account_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(BillingEffect.key)
    )
    return session.execute(stmt).first() is not None
