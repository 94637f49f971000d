"""Every query on the webhook inbox and the effect guards."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import BillingEffect, StripeEvent
from tollbooth.db.types import utcnow


def insert_event(
    session: Session,
    *,
    event_id: str,
    type_: str,
    api_version: str,
    livemode: bool,
    created: dt.datetime | None,
    payload: bytes,
) -> bool:
    """Insert first, never check-then-insert: True only for the one call that wrote it."""
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


def lock_event(session: Session, event_id: str) -> StripeEvent | None:
    """The stored event, locked: concurrent deliveries of one event take turns here."""
    return session.scalars(
        select(StripeEvent)
        .where(StripeEvent.event_id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def mark_processed(session: Session, event_id: str, at: dt.datetime) -> None:
    session.execute(
        update(StripeEvent).where(StripeEvent.event_id == event_id).values(processed_at=at)
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
