"""The outbox: every outbound notification is written here, in the caller's transaction.

Other rooms call `enqueue` and never touch the table themselves.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import NotificationOutbox
from tollbooth.db.types import utcnow
from tollbooth.ids import new_id


def enqueue(
    session: Session,
    type_: str,
    account_id: str | None,
    payload: dict[str, Any],
    dedupe_key: str | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Queue one notification; once per `dedupe_key` when one is given.

    Returns False when a notification with that dedupe key exists already (nothing written).
    """
    stmt = upsert_insert(session, NotificationOutbox).values(
        id=new_id("ntf"),
        type=type_,
        billing_account_id=account_id,
        dedupe_key=dedupe_key,
        payload=payload,
        created_at=now or utcnow(),
        delivered_at=None,
        attempts=0,
    )
    if dedupe_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["dedupe_key"])
    return session.execute(stmt.returning(NotificationOutbox.id)).first() is not None
