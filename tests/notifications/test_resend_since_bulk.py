"""A resend since a time over many messages writes their deliveries a batch per statement,
not one statement per message (SQLite and PostgreSQL).

It was one INSERT ... ON CONFLICT per message, all in the RPC's one transaction: a resend
since a month ago of 20,000 messages took minutes on PostgreSQL here, holding the
endpoint's key-share lock (an update, disable, rotation or delete of the endpoint waited
that long) and every one of those deliveries' row locks (the delivery process recording an
attempt waited too). Counted in statements, not seconds."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import event, func, insert, select

from tollbooth.db import Database
from tollbooth.db.models import NotificationDelivery, NotificationOutbox
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints, messages

MESSAGES = 1200
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_a_resend_since_over_many_messages_is_a_few_statements(database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.transaction() as session:
            session.execute(
                insert(NotificationOutbox),
                [
                    {
                        "id": f"ntf_bulk{i:05d}",
                        "type": "invoice.paid",
                        "billing_account_id": f"acct_bulk{i % 7}",
                        "payload": {},
                        "created_at": T0 + dt.timedelta(seconds=i),
                        "attempts": 0,
                        "position": i + 1,
                    }
                    for i in range(MESSAGES)
                ],
            )
            endpoint, _ = endpoints.create(
                session, endpoints.Fields(url="https://receiver.example/hook"), utcnow()
            )
        inserts: list[str] = []

        def count(conn, cursor, statement: str, *args: Any) -> None:  # type: ignore[no-untyped-def]
            if statement.lstrip().upper().startswith("INSERT INTO NOTIFICATION_DELIVERIES"):
                inserts.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            for _ in range(2):  # first made, then made pending again
                with db.transaction() as session:
                    queued = messages.resend_since(session, endpoint.id, T0, utcnow())
                assert queued == MESSAGES
                assert len(inserts) <= 3, len(inserts)
                inserts.clear()
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        with db.transaction(readonly=True) as session:
            d = NotificationDelivery
            rows = session.execute(
                select(d.state, d.order_key, func.count()).group_by(d.state, d.order_key)
            ).all()
            positions = session.scalars(select(d.position).order_by(d.position)).all()
        assert sorted(rows) == [
            ("pending", f"acct_bulk{k}", len(range(k, MESSAGES, 7))) for k in range(7)
        ]
        assert list(positions) == list(range(1, MESSAGES + 1))
    finally:
        db.dispose()
