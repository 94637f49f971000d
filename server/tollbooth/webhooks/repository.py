"""Every query on the webhook inbox."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import StripeEvent
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
