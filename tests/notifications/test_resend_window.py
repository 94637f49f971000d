"""A resend gets the whole retry window again, counted from the resend: a message older than
BILLING_NOTIFY_GIVE_UP_SEC that an operator sends again (to an endpoint that never had it, or
after its receiver was down) is retried after a failed attempt, not given up at once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import select, update

from tests.notifications.support import Receiver, enqueue
from tests.notifications.test_delivery import FAST, drain, register
from tollbooth.db import Database
from tollbooth.db.models import NotificationDelivery, NotificationOutbox
from tollbooth.db.types import utcnow
from tollbooth.notifications import messages
from tollbooth.notifications.delivery import Deliverer
from tollbooth.notifications.repository import DELIVERED, FAILED


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


def _state(db: Database, endpoint_id: str, ntf: str) -> str:
    with db.transaction(readonly=True) as s:
        return s.scalar(
            select(NotificationDelivery.state).where(
                NotificationDelivery.endpoint_id == endpoint_id,
                NotificationDelivery.notification_id == ntf,
            )
        )


def _age(db: Database, ntf: str, days: int) -> None:
    with db.transaction() as s:
        s.execute(
            update(NotificationOutbox)
            .where(NotificationOutbox.id == ntf)
            .values(created_at=utcnow() - dt.timedelta(days=days))
        )


def test_an_old_message_resent_is_retried_after_a_failure(db, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    ntf = enqueue(db, "invoice.paid", "acct_old", {"stripe_invoice_id": "in_old"})
    Deliverer(db, FAST).fan_out()  # positioned before any endpoint exists: sent nowhere
    _age(db, ntf, days=4)  # older than the 3 days of retries
    endpoint_id = register(db, receiver)
    with db.transaction() as s:
        messages.resend(s, endpoint_id, ntf, utcnow())
    receiver.fail_first = 1  # the receiver flaps once
    drain(
        [Deliverer(db, FAST)],
        lambda: receiver.ok_posts[ntf] == 1 or _state(db, endpoint_id, ntf) == FAILED,
        timeout=30,
    )
    assert receiver.posts[ntf] == 2
    assert _state(db, endpoint_id, ntf) == DELIVERED


def test_a_resend_since_gives_every_old_message_its_retries(db, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    endpoint_id = register(db, receiver)
    ntf = enqueue(db, "invoice.paid", "acct_old2", {"stripe_invoice_id": "in_old2"})
    drain([Deliverer(db, FAST)], lambda: receiver.ok_posts[ntf] == 1, timeout=30)
    _age(db, ntf, days=5)
    with db.transaction() as s:
        queued = messages.resend_since(s, endpoint_id, utcnow() - dt.timedelta(days=6), utcnow())
    assert queued == 1
    receiver.fail_first = receiver.posts[ntf] + 1  # the resend's first attempt fails
    drain(
        [Deliverer(db, FAST)],
        lambda: receiver.ok_posts[ntf] == 2 or _state(db, endpoint_id, ntf) == FAILED,
        timeout=30,
    )
    assert receiver.posts[ntf] == 3
    assert _state(db, endpoint_id, ntf) == DELIVERED


def test_a_resend_backs_off_from_its_first_delay_not_from_earlier_attempts(  # type: ignore[no-untyped-def]
    db, receiver: Receiver
) -> None:
    # Retries capped at an hour: a message with a long history of failures waits that long
    # between attempts. Once resent, it starts again from the first delay.
    policy = replace(FAST, retry_max_sec=3600)
    endpoint_id = register(db, receiver)
    receiver.always_fail = True
    ntf = enqueue(db, "invoice.paid", "acct_backoff", {"stripe_invoice_id": "in_b"})
    drain([Deliverer(db, policy)], lambda: receiver.posts[ntf] >= 1, timeout=30)
    with db.transaction() as s:  # its history: 30 failed attempts, then given up
        s.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.notification_id == ntf)
            .values(attempts=30, state=FAILED, leased_until=None)
        )
        messages.resend(s, endpoint_id, ntf, utcnow())
    receiver.always_fail = False
    receiver.fail_first = receiver.posts[ntf] + 1  # the resend's first attempt fails
    drain(
        [Deliverer(db, policy)],
        lambda: receiver.ok_posts[ntf] == 1 or _state(db, endpoint_id, ntf) == FAILED,
        timeout=30,
    )
    assert _state(db, endpoint_id, ntf) == DELIVERED
