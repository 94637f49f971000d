"""The console's one door to the Stripe event inbox and the notification outbox.

Everything the console reads or does about stored events and notifications goes through this
module, so that when the inbox gains statuses of its own (and a replay RPC) and the outbox
gains deliveries, only this file changes. Today an event is `processed` (its effects were
applied) or `pending` (stored but not applied: it failed when replayed, or was stored by a
version without its handler); replay is `tollbooth.webhooks.replay.replay_events`, handed in
by the assembly as a callable.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tollbooth.db.models import NotificationOutbox, StripeEvent

STATUSES = ("pending", "processed")
PAGE = 200


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    status: str
    received_at: dt.datetime
    processed_at: dt.datetime | None
    object_id: str


@dataclass(frozen=True)
class Outcome:
    """What a replay did: changes made, or why it failed."""

    changed: list[str]
    failed: list[str]


# Replays one stored event by id (the assembly binds the database and the handlers).
Replayer = Callable[[str], Outcome]


def _object_id(payload: bytes) -> str:
    try:
        obj = json.loads(payload).get("data", {}).get("object", {})
        return str(obj.get("id", "")) if isinstance(obj, dict) else ""
    except (ValueError, AttributeError):
        return ""


def events(session: Session, status: str) -> list[Event]:
    """Stored events of one status ("" for all), newest first."""
    stmt = select(StripeEvent)
    if status == "pending":
        stmt = stmt.where(StripeEvent.processed_at.is_(None))
    elif status == "processed":
        stmt = stmt.where(StripeEvent.processed_at.is_not(None))
    rows = session.scalars(
        stmt.order_by(StripeEvent.received_at.desc(), StripeEvent.event_id.desc()).limit(PAGE)
    )
    return [
        Event(
            event_id=row.event_id,
            type=row.type,
            status="processed" if row.processed_at else "pending",
            received_at=row.received_at,
            processed_at=row.processed_at,
            object_id=_object_id(row.payload),
        )
        for row in rows
    ]


def event_status(session: Session, event_id: str) -> str | None:
    row = session.get(StripeEvent, event_id)
    if row is None:
        return None
    return "processed" if row.processed_at else "pending"


def replayable(status: str | None) -> bool:
    return status == "pending"


@dataclass(frozen=True)
class Notification:
    id: str
    type: str
    account_id: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    attempts: int
    payload: dict[str, Any]


def notifications(session: Session, account_id: str | None = None) -> list[Notification]:
    """The outbox, newest first (read-only for now: delivery is built elsewhere)."""
    stmt = select(NotificationOutbox)
    if account_id is not None:
        stmt = stmt.where(NotificationOutbox.billing_account_id == account_id)
    rows = session.scalars(
        stmt.order_by(NotificationOutbox.created_at.desc(), NotificationOutbox.id.desc()).limit(
            PAGE
        )
    )
    return [
        Notification(
            id=row.id,
            type=row.type,
            account_id=row.billing_account_id,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            attempts=row.attempts,
            payload=dict(row.payload or {}),
        )
        for row in rows
    ]
