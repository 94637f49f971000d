"""An endpoint updated to leave a type out is no longer sent that type, not even the messages of
it still pending there (retrying after a failure, or claimed before the update): delivery
follows the endpoint's event_types as a resend does (400 NOTIFICATION_TYPE_NOT_WANTED). Such a
pending delivery is given up at the update, with the reason, so that it no longer holds back
the later messages of its account (one account's messages go in order)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import select

from tests.notifications.support import enqueue, passes
from tests.notifications.test_delivery import FAST, register
from tollbooth.db import Database
from tollbooth.db.models import NotificationDelivery
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints
from tollbooth.notifications.delivery import Deliverer

pytestmark = pytest.mark.postgres

# Each failure waits an hour: a pass loop ends once nothing is due.
SLOW = replace(FAST, retry_first_sec=3600, retry_max_sec=3600)
BOTH = ("account.credits.granted", "account.credits.balance_depleted")


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


def narrow(db: Database, endpoint_id: str, types: tuple[str, ...]) -> None:
    with db.transaction() as session:
        endpoints.update(
            session, endpoint_id, endpoints.Fields(event_types=types), ["event_types"], utcnow()
        )


def delivery(db: Database, endpoint_id: str, notification_id: str) -> NotificationDelivery:
    with db.transaction(readonly=True) as s:
        row = s.scalars(
            select(NotificationDelivery).where(
                NotificationDelivery.endpoint_id == endpoint_id,
                NotificationDelivery.notification_id == notification_id,
            )
        ).one()
        s.expunge(row)
        return row


def test_a_failing_message_of_a_type_left_out_is_not_retried_nor_holds_back_the_next(  # type: ignore[no-untyped-def]
    db, receiver
) -> None:
    endpoint_id = register(db, receiver, BOTH)
    receiver.always_fail = True
    granted = enqueue(db, "credits.granted", "acct_narrowed", {"billing_account_id": "x"})
    passes(Deliverer(db, SLOW))  # one failed attempt; the next in an hour
    assert receiver.posts[granted] == 1

    narrow(db, endpoint_id, ("account.credits.balance_depleted",))
    settled = delivery(db, endpoint_id, granted)
    assert settled.state == "failed"
    assert "account.credits.granted" in settled.last_error

    receiver.always_fail = False
    depleted = enqueue(
        db, "credits.balance_depleted", "acct_narrowed", {"credit_type": "units", "balance": "0"}
    )
    passes(Deliverer(db, replace(SLOW, retry_first_sec=0.05, retry_max_sec=0.05)))
    assert receiver.log == [granted, depleted]  # the depleted one at once, granted never again
    assert delivery(db, endpoint_id, depleted).state == "delivered"


def test_a_message_claimed_before_the_update_is_not_sent(db, receiver) -> None:  # type: ignore[no-untyped-def]
    endpoint_id = register(db, receiver, BOTH)
    granted = enqueue(db, "credits.granted", "acct_claimed", {"billing_account_id": "x"})
    deliverer = Deliverer(db, SLOW)
    try:
        deliverer.fan_out()
        job = next(j for j in deliverer.claim() if j.notification_id == granted)
        narrow(db, endpoint_id, ("account.credits.balance_depleted",))  # while it is leased
        deliverer._deliver(job)
    finally:
        deliverer.close()
    assert receiver.posts[granted] == 0
    settled = delivery(db, endpoint_id, granted)
    assert (settled.state, settled.leased_until) == ("failed", None)
    assert "account.credits.granted" in settled.last_error


def test_widening_the_types_settles_nothing(db, receiver) -> None:  # type: ignore[no-untyped-def]
    endpoint_id = register(db, receiver, ("account.credits.granted",))
    receiver.always_fail = True
    granted = enqueue(db, "credits.granted", "acct_widened", {"billing_account_id": "x"})
    passes(Deliverer(db, SLOW))
    narrow(db, endpoint_id, ())  # no types: every type
    assert delivery(db, endpoint_id, granted).state == "pending"


def test_a_message_whose_type_is_left_out_during_its_failing_post_is_not_retried(  # type: ignore[no-untyped-def]
    db, receiver
) -> None:
    import threading

    endpoint_id = register(db, receiver, BOTH)
    receiver.always_fail = True
    receiver.hang = threading.Event()
    granted = enqueue(db, "credits.granted", "acct_in_flight", {"billing_account_id": "x"})
    deliverer = Deliverer(db, SLOW)
    try:
        deliverer.fan_out()
        job = next(j for j in deliverer.claim() if j.notification_id == granted)
        sending = threading.Thread(target=deliverer._deliver, args=(job,))
        sending.start()
        while receiver.hanging == 0:  # the POST is at the receiver
            sending.join(0.02)
        narrow(db, endpoint_id, ("account.credits.balance_depleted",))
        receiver.hang.set()  # then it answers 500
        sending.join(30)
    finally:
        deliverer.close()
    settled = delivery(db, endpoint_id, granted)
    assert (settled.state, settled.attempts) == ("failed", 1)
    assert "account.credits.granted" in settled.last_error
