"""The credit domain's writes to `notification_outbox` (balance depleted)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import NotificationOutbox
from tollbooth.ids import new_id


def add_notification(
    session: Session,
    kind: str,
    account_id: str,
    dedupe_key: str,
    payload: dict[str, Any],
    now: dt.datetime,
) -> bool:
    """Write an outbound notification once per dedupe_key; False when it already exists."""
    stmt = (
        upsert_insert(session, NotificationOutbox)
        .values(
            id=new_id("ntf"),
            type=kind,
            billing_account_id=account_id,
            dedupe_key=dedupe_key,
            payload=payload,
            created_at=now,
            delivered_at=None,
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(NotificationOutbox.id)
    )
    return session.execute(stmt).first() is not None
