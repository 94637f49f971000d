"""A claim on PostgreSQL that a resend since a time overtakes does not send a later message
of the account before the earlier one the resend made pending again.

Under read committed the claim's NOT EXISTS (an earlier pending delivery of the account)
reads the table as it was when the statement began; when a resend commits after that and
before the claim locks a row, PostgreSQL re-checks the locked row itself, not the subquery.
The claim then took message 2 while the resend had made message 1 pending again: 2 went
out (and was marked delivered) before 1's resent copy. The statement is held after its
snapshot here (a one-time pg_sleep in its WHERE) to make that moment certain."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from tests.notifications.support import Receiver, ReceiverServer, enqueue
from tollbooth.db import Database
from tollbooth.db.models import NotificationDelivery
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints, messages
from tollbooth.notifications import repository as notifications
from tollbooth.notifications.delivery import Deliverer, Job, Policy

FAST = Policy(timeout_sec=2, retry_first_sec=0.05, retry_max_sec=0.2, poll_sec=0.02)
HOLD = "(SELECT pg_sleep(1.5)) IS NOT NULL AND "


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


def held_claims(engine: Any) -> None:
    """Every claim on `engine` waits 1.5 s after its snapshot, before it locks any row."""

    def hold(conn, cursor, statement: str, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FOR UPDATE SKIP LOCKED" in statement and "notification_deliveries_1" in statement:
            at = statement.index("WHERE ") + len("WHERE ")
            statement = statement[:at] + HOLD + statement[at:]
        return statement, parameters

    event.listen(engine, "before_cursor_execute", hold, retval=True)


def test_a_claim_overtaken_by_a_resend_leaves_the_later_message_for_after_the_earlier(
    db: Database, pg_url: str
) -> None:
    receiver = Receiver()
    server = ReceiverServer(receiver)
    with db.transaction() as session:
        endpoint, receiver.secret = endpoints.create(
            session, endpoints.Fields(url=receiver.url), utcnow()
        )
    start = utcnow() - dt.timedelta(seconds=5)
    first = enqueue(db, "invoice.paid", "acct_race", {"n": 1})
    second = enqueue(db, "invoice.paid", "acct_race", {"n": 2})
    with db.transaction() as session:
        rows = notifications.assign_positions(session, 100)
        notifications.insert_deliveries(session, endpoint.id, rows, start)
        one = notifications.get_delivery(session, endpoint.id, first)
        assert one is not None
        one.state, one.attempts = "delivered", 1  # sent; the second is due
    claimer = Deliverer(Database(pg_url), FAST)
    held_claims(claimer.db.engine)
    claimed: list[Job] = []
    try:
        resend_at = utcnow()  # the resend began before the claim (its `now` is earlier)
        claiming = threading.Thread(target=lambda: claimed.extend(claimer.claim()))
        claiming.start()
        time.sleep(0.5)  # the claim has its snapshot and sleeps
        with db.transaction() as session:
            assert messages.resend_since(session, endpoint.id, start, resend_at) == 2
        claiming.join()
        # The second message is held back by the first, pending again: not claimed.
        assert [j.notification_id for j in claimed if j.notification_id == second] == []
        for job in claimed:
            claimer._deliver(job)
    finally:
        claimer.close()
        claimer.db.dispose()
    sender = Deliverer(db, FAST)
    try:
        while sender.run_once():
            pass
    finally:
        sender.close()
        server.close()
    with db.transaction(readonly=True) as session:
        states = session.scalars(select(NotificationDelivery.state)).all()
    assert list(states) == ["delivered", "delivered"]
    assert receiver.log == [first, second]  # the resent copies, in order
