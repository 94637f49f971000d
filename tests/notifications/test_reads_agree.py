"""`tollbooth notifications messages` tells what ListNotificationMessages tells: for a message
delivered, one resent after its delivery (pending again, due now, its earlier delivery kept)
and one given up, the same state, attempts, last error, next attempt and delivery time
(SQLite and PostgreSQL). The command left out the next attempt and the delivery time, so a
resent message read there as pending with nothing saying when it goes or that it went."""

from __future__ import annotations

import datetime as dt

from billing.v1 import notification_pb2 as pb
from tests.notifications.support import enqueue
from tollbooth.config import Settings
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.notifications import convert, endpoints, envelope, messages, operator
from tollbooth.notifications import repository as notifications


def _when(ts) -> str | None:  # type: ignore[no-untyped-def]
    return envelope.timestamp(ts.ToDatetime(tzinfo=dt.UTC)) if ts.seconds or ts.nanos else None


def test_the_command_line_and_the_api_tell_the_same_state(settings: Settings, db: Database) -> None:
    with db.transaction() as session:
        endpoint, _ = endpoints.create(
            session, endpoints.Fields(url="https://receiver.example/hook"), utcnow()
        )
    ids = [enqueue(db, "invoice.paid", "acct_agree", {"n": n}) for n in range(3)]
    earlier = utcnow() - dt.timedelta(minutes=10)
    with db.transaction() as session:
        rows = [r for r in notifications.assign_positions(session, 100) if r.id in ids]
        assert notifications.insert_deliveries(session, endpoint.id, rows, earlier) == 3
        for nid, state in zip(ids, ("delivered", "delivered", "failed"), strict=True):
            d = notifications.get_delivery(session, endpoint.id, nid)
            assert d is not None
            d.state, d.attempts, d.next_attempt_at = state, 2, earlier
            d.delivered_at = earlier if state == "delivered" else None
            d.last_error = "HTTP 500" if state == "failed" else ""
    with db.transaction() as session:
        messages.resend(session, endpoint.id, ids[1], utcnow())
    with db.transaction(readonly=True) as session:
        api = [
            convert.message_out(m)
            for m in messages.list_messages(session, endpoint.id, None, 10, "").items
        ]
    cli = operator.list_messages(settings, endpoint.id, None, 10)
    told = [
        (
            m.notification.notification_id,
            convert.STATE_IN[m.state],
            m.attempts,
            m.last_error,
            _when(m.next_attempt_time),
            _when(m.deliver_time),
        )
        for m in api
    ]
    assert [
        (r["notification_id"], r["state"], r["attempts"], r["last_error"], r["next_attempt"],
         r["delivered"])
        for r in cli
    ] == told  # fmt: skip
    resent = next(m for m in api if m.notification.notification_id == ids[1])
    assert resent.state == pb.NOTIFICATION_MESSAGE_STATE_PENDING
    assert resent.next_attempt_time.ToDatetime(tzinfo=dt.UTC) > earlier
    assert _when(resent.deliver_time) == envelope.timestamp(earlier)
