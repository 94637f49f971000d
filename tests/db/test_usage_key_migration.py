"""Migration 0039 on a database holding usage events: the rows stay, the primary key becomes
(unique_id, billing_account_id), so one unique id can then be stored for a second account
and a second row of one account's key is still refused."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, String, column, create_engine, inspect, select, table
from sqlalchemy.exc import IntegrityError

from tollbooth.db import normalize_url
from tollbooth.db.migrate import alembic_config, downgrade, upgrade
from tollbooth.db.types import UTCDateTime

EVENTS = table(
    "usage_events",
    column("unique_id", String),
    column("billing_account_id", String),
    column("event_name", String),
    column("occurred_at", UTCDateTime),
    column("properties", JSON),
    column("received_at", UTCDateTime),
)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def row(uid: str, acct: str) -> dict[str, object]:
    return {
        "unique_id": uid,
        "billing_account_id": acct,
        "event_name": "api_call",
        "occurred_at": NOW,
        "properties": {"tokens": 1},
        "received_at": NOW,
    }


def test_usage_events_keep_their_rows_and_are_keyed_per_account(database_url: str) -> None:
    revision = ScriptDirectory.from_config(alembic_config(database_url)).get_revision("0039")
    assert revision is not None
    downgrade(database_url, str(revision.down_revision))
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(EVENTS.insert(), [row("evt_123456", "acct_a"), row("e2", "acct_b")])
        upgrade(database_url)
        pk = inspect(engine).get_pk_constraint("usage_events")
        assert pk["constrained_columns"] == ["unique_id", "billing_account_id"]
        indexes = {i["name"] for i in inspect(engine).get_indexes("usage_events")}
        assert "ix_usage_events_account_name_time" in indexes
        with engine.begin() as conn:
            conn.execute(EVENTS.insert(), [row("evt_123456", "acct_b")])
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(EVENTS.insert(), [row("evt_123456", "acct_a")])
        with engine.connect() as conn:
            stored = conn.execute(
                select(EVENTS.c.billing_account_id, EVENTS.c.unique_id, EVENTS.c.properties)
            ).all()
        assert sorted((a, u, p) for a, u, p in stored) == [
            ("acct_a", "evt_123456", {"tokens": 1}),
            ("acct_b", "e2", {"tokens": 1}),
            ("acct_b", "evt_123456", {"tokens": 1}),
        ]
    finally:
        engine.dispose()
