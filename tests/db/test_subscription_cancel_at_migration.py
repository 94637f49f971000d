"""Migration 0035 on a database holding subscriptions (PostgreSQL and SQLite): each row reads
`cancel_at` NULL afterwards and is as live as before (a plan set to cancel at its period's end
still ends there), and a `cancel_at` written then is compared as the instant it is; going
back to 0034 keeps the rows."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Integer, String, column, create_engine, select, table
from sqlalchemy.orm import Session

from tollbooth.db import normalize_url
from tollbooth.db.migrate import downgrade, upgrade
from tollbooth.db.models import Subscription
from tollbooth.db.types import UTCDateTime
from tollbooth.subscriptions import repository

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
    column("stackable", Boolean),
    column("quantity", Integer),
    column("state", String),
    column("current_period_end", UTCDateTime),
    column("cancel_at_period_end", Boolean),
    column("created_at", UTCDateTime),
    column("updated_at", UTCDateTime),
)


def test_subscriptions_recorded_before_0035_read_no_cancel_at_and_stay_live(
    database_url: str,
) -> None:
    downgrade(database_url, "0034")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(ACCOUNTS.insert().values(id="ba_c", principal_id="c", created_at=now))
            common = {
                "billing_account_id": "ba_c",
                "stackable": False,
                "quantity": 1,
                "state": "active",
                "current_period_end": now + dt.timedelta(days=10),
                "created_at": now,
                "updated_at": now,
            }
            conn.execute(
                SUBSCRIPTIONS.insert(),
                [
                    {**common, "id": "sub_c1", "stripe_subscription_id": "sub_s1",
                     "cancel_at_period_end": False},
                    {**common, "id": "sub_c2", "stripe_subscription_id": "sub_s2",
                     "cancel_at_period_end": True,
                     "current_period_end": now - dt.timedelta(days=1)},
                ],
            )  # fmt: skip
        upgrade(database_url)
        with Session(engine) as session:
            rows = session.scalars(select(Subscription).order_by(Subscription.id)).all()
            assert [(r.id, r.cancel_at) for r in rows] == [("sub_c1", None), ("sub_c2", None)]
            live = repository.live_subscriptions(session, "ba_c", now)
            assert [s.id for s in live] == ["sub_c1"]
            # The new column as the statement compares it (a passed cancel_at ends the plan).
            for delta, expected in ((-60, []), (60, ["sub_c1"])):
                rows[0].cancel_at = now + dt.timedelta(seconds=delta)
                session.commit()
                live = repository.live_subscriptions(session, "ba_c", now)
                assert [s.id for s in live] == expected, delta
        downgrade(database_url, "0034")
        with engine.connect() as conn:
            kept = conn.execute(select(SUBSCRIPTIONS.c.id).order_by(SUBSCRIPTIONS.c.id)).all()
        assert [r.id for r in kept] == ["sub_c1", "sub_c2"]
    finally:
        engine.dispose()
        upgrade(database_url)
