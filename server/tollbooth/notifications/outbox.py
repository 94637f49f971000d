"""The outbox: every outbound notification is written here, in the caller's transaction.

Other rooms call `enqueue` and never touch the table themselves.
"""

from __future__ import annotations

import datetime as dt
import json
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
        **row(type_, account_id, payload, dedupe_key, now)
    )
    if dedupe_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["dedupe_key"])
    return session.execute(stmt.returning(NotificationOutbox.id)).first() is not None


def row(
    type_: str,
    account_id: str | None,
    payload: dict[str, Any],
    dedupe_key: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The outbox row `enqueue` writes (its column values)."""
    return {
        "id": new_id("ntf"),
        "type": type_,
        "billing_account_id": account_id,
        "dedupe_key": dedupe_key,
        "payload": payload,
        "created_at": now or utcnow(),
        "delivered_at": None,
        "attempts": 0,
    }


# `enqueue` on PostgreSQL as one psycopg statement (a pipeline's write; the params are
# `pg_params(row(...))`): once per dedupe key, like `enqueue`.
PG_ENQUEUE = (
    "INSERT INTO notification_outbox (id, type, billing_account_id, dedupe_key, payload,"
    " created_at, delivered_at, attempts)"
    " VALUES (%(id)s, %(type)s, %(billing_account_id)s, %(dedupe_key)s,"
    " CAST(%(payload)s AS json), %(created_at)s, NULL, 0)"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)


def pg_params(values: dict[str, Any]) -> dict[str, Any]:
    """`row`'s values as PG_ENQUEUE's parameters."""
    return {**values, "payload": json.dumps(values["payload"])}
