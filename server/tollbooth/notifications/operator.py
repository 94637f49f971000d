"""The operator's view of deliveries (`tollbooth notifications ...`): one transaction each."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tollbooth.config import Settings
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.notifications import envelope, messages
from tollbooth.notifications.repository import PENDING


def _db(settings: Settings) -> Database:
    return Database(settings.database_url)


def list_messages(
    settings: Settings, endpoint_id: str, state: str | None, limit: int
) -> list[dict[str, Any]]:
    db = _db(settings)
    try:
        with db.transaction(readonly=True) as session:
            page = messages.list_messages(session, endpoint_id, state, limit, "")
            return [
                {
                    "notification_id": row.id,
                    "type": envelope.public_type(row.type),
                    "account": row.billing_account_id or "",
                    "state": d.state,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    # As ListNotificationMessages: when it is tried next (pending only), and
                    # when the endpoint last accepted it (kept by a resend).
                    "next_attempt": (
                        envelope.timestamp(d.next_attempt_at) if d.state == PENDING else None
                    ),
                    "delivered": envelope.timestamp(d.delivered_at) if d.delivered_at else None,
                    "created": envelope.timestamp(row.created_at),
                }
                for d, row in page.items
            ]
    finally:
        db.dispose()


def list_attempts(
    settings: Settings, endpoint_id: str, notification_id: str, limit: int
) -> list[dict[str, Any]]:
    db = _db(settings)
    try:
        with db.transaction(readonly=True) as session:
            page = messages.list_attempts(session, endpoint_id, notification_id, limit, "")
            return [
                {
                    "notification_id": a.notification_id,
                    "number": a.number,
                    "status_code": a.status_code,
                    "latency_ms": a.latency_ms,
                    "error": a.error,
                    "at": envelope.timestamp(a.created_at),
                }
                for a in page.items
            ]
    finally:
        db.dispose()


def resend(
    settings: Settings, endpoint_id: str, notification_id: str | None, since: dt.datetime | None
) -> int:
    """How many messages are pending again."""
    db = _db(settings)
    try:
        with db.transaction() as session:
            if notification_id:
                messages.resend(session, endpoint_id, notification_id, utcnow())
                return 1
            assert since is not None
            return messages.resend_since(session, endpoint_id, since, utcnow())
    finally:
        db.dispose()
