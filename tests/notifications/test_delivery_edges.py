"""Delivery's edges on PostgreSQL, to real HTTP receivers: a receiver that says 410 Gone, a
resolver that hangs, `failing_since` once nothing is retried, the opt-in private-address
guard at delivery time."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import select

from tests.notifications.support import Receiver, ReceiverServer, enqueue, passes
from tests.notifications.test_delivery import FAST, drain, register
from tollbooth.db import Database
from tollbooth.db.models import NotificationAttempt, NotificationEndpoint, NotificationOutbox
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints
from tollbooth.notifications.delivery import Deliverer, Policy

pytestmark = pytest.mark.postgres

# Each failure waits an hour: a pass loop ends once nothing is due.
SLOW = replace(FAST, retry_first_sec=3600, retry_max_sec=3600)


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


def endpoint_row(db: Database, endpoint_id: str) -> NotificationEndpoint:
    with db.transaction(readonly=True) as s:
        endpoint = s.get(NotificationEndpoint, endpoint_id)
        assert endpoint is not None
        s.expunge(endpoint)
        return endpoint


def attempts_of(db: Database, endpoint_id: str) -> list[NotificationAttempt]:
    with db.transaction(readonly=True) as s:
        rows = s.scalars(
            select(NotificationAttempt).where(NotificationAttempt.endpoint_id == endpoint_id)
        ).all()
        for row in rows:
            s.expunge(row)
        return list(rows)


def test_a_receiver_answering_410_gone_disables_its_endpoint_at_once(db, receiver) -> None:  # type: ignore[no-untyped-def]
    gone = register(db, receiver)
    receiver.answer = 410
    healthy = Receiver()
    server = ReceiverServer(healthy)
    try:
        register(db, healthy, ("notification.endpoint.disabled",))
        ntf = enqueue(db, "invoice.paid", "acct_gone", {})
        drain([Deliverer(db, FAST)], lambda: len(healthy.accepted) == 1)
        passes(Deliverer(db, FAST))  # nothing more is due: the endpoint is disabled
    finally:
        server.close()
    assert receiver.posts[ntf] == 1  # no retry after the 410
    notice = healthy.accepted[0]
    assert notice["type"] == "notification.endpoint.disabled"
    assert notice["data"]["endpointId"] == gone
    assert notice["data"]["origin"] == receiver.url.removesuffix("/hooks")
    endpoint = endpoint_row(db, gone)
    assert not endpoint.enabled
    assert "410" in endpoint.disabled_reason
    assert endpoint.failing_since is None


def test_another_4xx_is_retried_as_before(db, receiver) -> None:  # type: ignore[no-untyped-def]
    eid = register(db, receiver)
    receiver.answer = 404
    enqueue(db, "invoice.paid", "acct_404", {})
    passes(Deliverer(db, SLOW))
    endpoint = endpoint_row(db, eid)
    assert endpoint.enabled and endpoint.failing_since is not None
    assert [a.status_code for a in attempts_of(db, eid)] == [404]


def test_a_hanging_resolver_is_cut_off_by_the_delivery_timeout(db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "hangs.example":  # a resolver that never answers for this name
            release.wait(120)
            raise socket.gaierror(socket.EAI_AGAIN, "released by the test")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with db.transaction() as s:
        endpoint, _ = endpoints.create(
            s, endpoints.Fields(url="http://hangs.example/hooks"), utcnow()
        )
        eid = endpoint.id
    enqueue(db, "invoice.paid", "acct_dns", {})
    # The deadline is long: only the per-operation timeout (1 s) can end the lookup.
    deliverer = Deliverer(db, Policy(timeout_sec=1, deadline_sec=100, retry_first_sec=3600))
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (deliverer.run_once(), finished.set()))
    worker.start()
    try:
        ended = finished.wait(60)
    finally:
        release.set()
        worker.join()
        deliverer.close()
    assert ended, "the worker waited for the resolver past the delivery timeout"
    [attempt] = attempts_of(db, eid)
    assert attempt.status_code == 0
    assert "hangs.example" in attempt.error and "resol" in attempt.error


def test_an_endpoint_disabled_after_days_of_failure_no_longer_claims_to_be_failing(  # type: ignore[no-untyped-def]
    db, receiver
) -> None:
    eid = register(db, receiver)
    receiver.always_fail = True
    since = utcnow() - dt.timedelta(days=4)
    with db.transaction() as s:
        s.get(NotificationEndpoint, eid).failing_since = since
    enqueue(db, "invoice.paid", "acct_fs", {})
    passes(Deliverer(db, SLOW))
    endpoint = endpoint_row(db, eid)
    assert not endpoint.enabled
    assert endpoint.failing_since is None
    # the reason still says since when
    assert endpoint.disabled_reason.startswith("every attempt failed since")


def test_a_given_up_message_leaves_no_failing_since_when_nothing_else_is_pending(  # type: ignore[no-untyped-def]
    db, receiver
) -> None:
    eid = register(db, receiver)
    receiver.always_fail = True
    old = enqueue(db, "invoice.paid", "acct_gu", {})
    with db.transaction() as s:  # written long ago: past the give-up window
        s.get(NotificationOutbox, old).created_at = utcnow() - dt.timedelta(days=4)
    passes(Deliverer(db, SLOW))
    endpoint = endpoint_row(db, eid)
    assert endpoint.enabled
    # Nothing is retried any more: a message weeks later must not find the endpoint
    # "failing for days" and disable it at its first failure.
    assert endpoint.failing_since is None


def test_a_given_up_message_keeps_failing_since_while_others_are_retried(db, receiver) -> None:  # type: ignore[no-untyped-def]
    eid = register(db, receiver)
    receiver.always_fail = True
    old = enqueue(db, "invoice.paid", "acct_gu1", {})
    enqueue(db, "invoice.paid", "acct_gu2", {})
    with db.transaction() as s:
        s.get(NotificationOutbox, old).created_at = utcnow() - dt.timedelta(days=4)
    passes(Deliverer(db, SLOW))
    assert endpoint_row(db, eid).failing_since is not None


def test_with_the_guard_on_a_private_address_is_a_failed_attempt_not_a_post(db, receiver) -> None:  # type: ignore[no-untyped-def]
    eid = register(db, receiver)  # 127.0.0.1, stored before the guard was turned on
    enqueue(db, "invoice.paid", "acct_deny", {})
    passes(Deliverer(db, Policy(timeout_sec=2, retry_first_sec=3600, deny_private=True)))
    assert receiver.posts == {}
    [attempt] = attempts_of(db, eid)
    assert attempt.status_code == 0
    assert "denied" in attempt.error and "127.0.0.1" in attempt.error


def test_with_the_guard_on_a_name_resolving_to_loopback_is_not_posted_to(db, receiver) -> None:  # type: ignore[no-untyped-def]
    eid = register(db, receiver)
    with db.transaction() as s:
        row = s.get(NotificationEndpoint, eid)
        row.url = row.url.replace("127.0.0.1", "localhost")
    enqueue(db, "invoice.paid", "acct_deny2", {})
    passes(Deliverer(db, Policy(timeout_sec=2, retry_first_sec=3600, deny_private=True)))
    assert receiver.posts == {}
    [attempt] = attempts_of(db, eid)
    assert "denied" in attempt.error


def test_with_the_guard_off_a_loopback_receiver_still_gets_its_messages(db, receiver) -> None:  # type: ignore[no-untyped-def]
    register(db, receiver)
    ntf = enqueue(db, "invoice.paid", "acct_allow", {})
    drain([Deliverer(db, FAST)], lambda: receiver.ids() == [ntf])
