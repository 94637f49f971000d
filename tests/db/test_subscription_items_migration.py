"""Migration 0015: a subscription recorded before it holds its first item afterwards."""

from __future__ import annotations

import datetime as dt

from alembic.script import ScriptDirectory
from sqlalchemy import Boolean, Integer, String, column, create_engine, select, table

from tollbooth.db import normalize_url
from tollbooth.db.migrate import alembic_config, downgrade, upgrade
from tollbooth.db.types import UTCDateTime

ACCOUNTS = table(
    "billing_accounts",
    column("id", String),
    column("principal_id", String),
    column("created_at", UTCDateTime),
)
SUBSCRIPTIONS = table(
    "subscriptions",
    column("id", String),
    column("billing_account_id", String),
    column("stripe_subscription_id", String),
    column("stripe_price_id", String),
    column("price_id", String),
    column("lookup_key", String),
    column("subscription_group", String),
    column("stackable", Boolean),
    column("quantity", Integer),
    column("state", String),
    column("cancel_at_period_end", Boolean),
    column("created_at", UTCDateTime),
    column("updated_at", UTCDateTime),
)
ITEMS = table(
    "subscription_items",
    column("subscription_id", String),
    column("position", Integer),
    column("stripe_price_id", String),
    column("price_id", String),
    column("subscription_group", String),
    column("quantity", Integer),
)


def test_a_subscription_recorded_before_0015_holds_its_first_item(database_url: str) -> None:
    before = ScriptDirectory.from_config(alembic_config(database_url)).get_revision("0015")
    assert before is not None
    downgrade(database_url, str(before.down_revision))
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(ACCOUNTS.insert().values(id="ba_m", principal_id="m", created_at=now))
            common = {
                "billing_account_id": "ba_m",
                "price_id": None,
                "lookup_key": None,
                "subscription_group": None,
                "stackable": False,
                "state": "active",
                "cancel_at_period_end": False,
                "created_at": now,
                "updated_at": now,
            }
            conn.execute(
                SUBSCRIPTIONS.insert(),
                [
                    {
                        **common,
                        "id": "sub_m1",
                        "stripe_subscription_id": "sub_s1",
                        "stripe_price_id": "price_s1",
                        "price_id": "prc_1",
                        "subscription_group": "plan",
                        "quantity": 2,
                    },
                    # A placeholder never synced: no price, so no item.
                    {
                        **common,
                        "id": "sub_m2",
                        "stripe_subscription_id": "sub_s2",
                        "stripe_price_id": None,
                        "quantity": 1,
                    },
                ],
            )
        upgrade(database_url)
        with engine.connect() as conn:
            rows = conn.execute(select(ITEMS)).all()
        assert [tuple(r) for r in rows] == [("sub_m1", 0, "price_s1", "prc_1", "plan", 2)]
    finally:
        engine.dispose()
        upgrade(database_url)
