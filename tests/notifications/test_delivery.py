"""Delivery on PostgreSQL to a real HTTP receiver that verifies with `standardwebhooks`."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import pytest
from sqlalchemy import select, text

from tests.notifications.support import Receiver, ReceiverServer, enqueue
from tollbooth.db import Database
from tollbooth.db.models import (
    NotificationAttempt,
    NotificationDelivery,
    NotificationEndpoint,
    NotificationOutbox,
)
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints, messages
from tollbooth.notifications.delivery import Deliverer, Policy

FAST = Policy(timeout_sec=2, retry_first_sec=0.05, retry_max_sec=0.2, poll_sec=0.02)


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


def register(db: Database, receiver: Receiver, types: tuple[str, ...] = ()) -> str:
    with db.transaction() as session:
        endpoint, secret = endpoints.create(
            session, endpoints.Fields(url=receiver.url, event_types=types), utcnow()
        )
        receiver.secret = secret
        return endpoint.id


def drain(deliverers: list[Deliverer], done, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Run the deliverers concurrently (one thread each, own connections) until `done()`."""
    stop = threading.Event()
    threads = [threading.Thread(target=d.run, args=(stop,)) for d in deliverers]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done():
            time.sleep(0.05)
        assert done(), "delivery did not finish"
    finally:
        stop.set()
        for t in threads:
            t.join()
        for d in deliverers:
            d.close()


def test_a_message_lands_on_the_third_attempt_after_two_failures(db, receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.fail_first = 2
    endpoint_id = register(db, receiver)
    ntf = enqueue(db, "invoice.paid", "acct_a", {"stripe_invoice_id": "in_1", "amount_paid": 900})
    drain([Deliverer(db, FAST)], lambda: len(receiver.accepted) == 1)
    assert receiver.posts[ntf] == 3 and receiver.ok_posts[ntf] == 1
    msg = receiver.accepted[0]
    assert set(msg) == {"id", "type", "timestamp", "data"}
    assert (msg["id"], msg["type"]) == (ntf, "invoice.paid")
    assert msg["data"]["accountId"] == "acct_a" and msg["data"]["stripeInvoiceId"] == "in_1"
    with db.transaction(readonly=True) as s:
        attempts = s.scalars(
            select(NotificationAttempt)
            .where(NotificationAttempt.endpoint_id == endpoint_id)
            .order_by(NotificationAttempt.number)
        ).all()
        delivery = s.scalars(select(NotificationDelivery)).one()
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 500), (3, 204)]
    assert [a.error for a in attempts] == ["HTTP 500", "HTTP 500", ""]
    assert all(a.latency_ms >= 0 for a in attempts)
    assert (delivery.state, delivery.attempts) == ("delivered", 3)


def test_per_account_order_and_exactly_once_with_three_concurrent_processes(
    db, receiver, pg_url
) -> None:  # type: ignore[no-untyped-def]
    receiver.fail_first = 1  # every message fails once: order must hold across retries
    register(db, receiver)
    sent: dict[str, list[str]] = {f"acct_{i}": [] for i in range(4)}
    for n in range(6):
        for acct in sent:
            sent[acct].append(enqueue(db, "credits.granted", acct, {"amount": str(n)}))
    total = sum(len(v) for v in sent.values())
    workers = [Deliverer(Database(pg_url), FAST) for _ in range(3)]
    try:
        drain(workers, lambda: len(receiver.accepted) == total)
    finally:
        for w in workers:
            w.db.dispose()
    for acct, ids in sent.items():
        got = [m["id"] for m in receiver.accepted if m["data"]["accountId"] == acct]
        assert got == ids, acct
    assert set(receiver.ok_posts.values()) == {1}  # no message answered 2xx twice
    assert set(receiver.posts.values()) == {2}  # one failure, one success: never sent at once


def test_old_secret_still_verifies_after_rotation(db, receiver) -> None:  # type: ignore[no-untyped-def]
    endpoint_id = register(db, receiver)
    old = receiver.secret
    with db.transaction() as s:
        _, new = endpoints.rotate(s, endpoint_id, utcnow())
    assert new != old
    second = Receiver(secret=new)
    server = ReceiverServer(second)
    try:
        with db.transaction() as s:
            endpoints.create(s, endpoints.Fields(url=second.url), utcnow())
        # the second endpoint has its own secret: give it the rotated one's pair to check both
        with db.transaction() as s:
            row = s.scalars(
                select(NotificationEndpoint).where(NotificationEndpoint.url == second.url)
            ).one()
            row.secret, row.previous_secret = new, old
            row.previous_secret_expires_at = utcnow() + dt.timedelta(hours=1)
        enqueue(db, "invoice.paid", "acct_r", {})
        drain([Deliverer(db, FAST)], lambda: receiver.accepted and second.accepted)
    finally:
        server.close()
    assert receiver.rejected_signatures == 0 and second.rejected_signatures == 0


def test_expired_previous_secret_no_longer_signs(db, receiver) -> None:  # type: ignore[no-untyped-def]
    endpoint_id = register(db, receiver)
    old = receiver.secret
    with db.transaction() as s:
        endpoints.rotate(s, endpoint_id, utcnow() - dt.timedelta(hours=25))
    receiver.secret = old  # a receiver still on the old secret
    enqueue(db, "invoice.paid", "acct_x", {})
    drain([Deliverer(db, FAST)], lambda: receiver.rejected_signatures >= 1)
    assert receiver.accepted == []


def test_a_receiver_on_the_first_secret_still_verifies_after_two_rotations(db, receiver) -> None:  # type: ignore[no-untyped-def]
    """Rotate, then rotate again an hour later: each replaced secret still signs for its own
    24 hours. (Only the last one replaced did: the second rotation cut the first secret's
    day short, and a receiver not yet moved to the second secret refused every message.)"""
    endpoint_id = register(db, receiver)
    first = receiver.secret
    start = utcnow() - dt.timedelta(hours=2)
    with db.transaction() as s:
        _, second = endpoints.rotate(s, endpoint_id, start)
    with db.transaction() as s:
        _, third = endpoints.rotate(s, endpoint_id, start + dt.timedelta(hours=1))
    assert len({first, second, third}) == 3
    receiver.secret = first  # a receiver that has not taken either new secret yet
    enqueue(db, "invoice.paid", "acct_two_rotations", {})
    drain([Deliverer(db, FAST)], lambda: receiver.accepted or receiver.rejected_signatures)
    assert len(receiver.accepted) == 1 and receiver.rejected_signatures == 0


def test_replaced_secrets_sign_until_their_own_expiry_and_at_most_five(db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        endpoint, first = endpoints.create(
            s, endpoints.Fields(url="http://127.0.0.1:9/h"), utcnow()
        )
        eid = endpoint.id
    t0 = utcnow() - dt.timedelta(hours=30)
    replaced = [first]
    with db.transaction() as s:
        _, current = endpoints.rotate(s, eid, t0)  # `first` signs until t0 + 24 h
    for hour in range(10, 17):  # seven more rotations, an hour apart
        with db.transaction() as s:
            replaced.append(current)
            _, current = endpoints.rotate(s, eid, t0 + dt.timedelta(hours=hour))
    with db.transaction(readonly=True) as s:
        row = s.get(NotificationEndpoint, eid)
        assert row is not None
        # At t0 + 17 h all eight replaced secrets are within their day (`first` until
        # t0 + 24 h), but the cap keeps the newest five beside the current one.
        at_17 = endpoints.signing_secrets(row, t0 + dt.timedelta(hours=17))
        assert at_17 == [current, *reversed(replaced[-5:])]
        # Past t0 + 24 h `first` has expired; the cap's five stay till their own day ends.
        at_25 = endpoints.signing_secrets(row, t0 + dt.timedelta(hours=25))
        assert at_25 == at_17
        # 24 h after the last rotation only the current secret signs.
        assert endpoints.signing_secrets(row, t0 + dt.timedelta(hours=40, seconds=1)) == [current]
        # The contract's field still says until when the last replaced secret signs.
        assert row.previous_secret == replaced[-1]
        assert row.previous_secret_expires_at == t0 + dt.timedelta(hours=16 + 24)


def test_an_endpoint_gets_only_the_types_it_wants(db, receiver) -> None:  # type: ignore[no-untyped-def]
    register(db, receiver, ("account.credits.balance_depleted",))
    enqueue(db, "credits.granted", "acct_t", {"amount": "5", "credit_type": "units"})
    wanted = enqueue(
        db, "credits.balance_depleted", "acct_t", {"balance": "0", "credit_type": "units"}
    )
    drain([Deliverer(db, FAST)], lambda: len(receiver.accepted) == 1)
    assert receiver.ids() == [wanted]
    assert receiver.accepted[0]["data"] == {"accountId": "acct_t", "amount": "0", "type": "units"}
    with db.transaction(readonly=True) as s:
        assert s.scalar(select(NotificationDelivery.notification_id)) == wanted


def test_given_up_message_unblocks_the_next_of_its_account(db, receiver) -> None:  # type: ignore[no-untyped-def]
    register(db, receiver)
    receiver.always_fail = True
    first = enqueue(db, "invoice.payment_failed", "acct_g", {})
    with db.transaction() as s:  # written long ago: past the give-up window
        s.get(NotificationOutbox, first).created_at = utcnow() - dt.timedelta(days=4)
    second = enqueue(db, "invoice.paid", "acct_g", {})

    def first_failed() -> bool:
        with db.transaction(readonly=True) as s:
            d = s.scalars(
                select(NotificationDelivery).where(NotificationDelivery.notification_id == first)
            ).first()
            return d is not None and d.state == "failed"

    drain([Deliverer(db, FAST)], first_failed)
    receiver.always_fail = False
    drain([Deliverer(db, FAST)], lambda: receiver.ids() == [second])
    # the later message waited until the earlier one was given up
    last_of_first = max(i for i, m in enumerate(receiver.log) if m == first)
    assert receiver.log.index(second) > last_of_first


def test_endpoint_failing_for_days_is_disabled_and_a_notification_says_so(db, receiver) -> None:  # type: ignore[no-untyped-def]
    failing = register(db, receiver)
    receiver.always_fail = True
    healthy = Receiver()
    server = ReceiverServer(healthy)
    try:
        register(db, healthy, ("notification.endpoint.disabled",))
        with db.transaction() as s:
            s.get(NotificationEndpoint, failing).failing_since = utcnow() - dt.timedelta(days=4)
        enqueue(db, "invoice.paid", "acct_d", {})
        drain([Deliverer(db, FAST)], lambda: len(healthy.accepted) == 1)
    finally:
        server.close()
    notice = healthy.accepted[0]
    assert notice["type"] == "notification.endpoint.disabled"
    assert notice["data"]["endpointId"] == failing
    assert notice["data"]["origin"] == receiver.url.removesuffix("/hooks")
    with db.transaction(readonly=True) as s:
        endpoint = s.get(NotificationEndpoint, failing)
        assert endpoint is not None and not endpoint.enabled
        assert endpoint.disabled_reason.startswith("every attempt failed since")


def test_retry_schedule_is_stored_from_the_configured_first_delay(db, receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.always_fail = True
    register(db, receiver)
    policy = Policy(timeout_sec=2, retry_first_sec=30, retry_max_sec=3600)
    ntf = enqueue(db, "invoice.paid", "acct_s", {})
    deliverer = Deliverer(db, policy)
    try:
        assert deliverer.run_once() == 1
        assert deliverer.run_once() == 0  # not due again yet
    finally:
        deliverer.close()
    with db.transaction(readonly=True) as s:
        d = s.scalars(select(NotificationDelivery)).one()
        a = s.scalars(select(NotificationAttempt)).one()
    delay = (d.next_attempt_at - a.created_at).total_seconds()
    assert 30 * 0.8 <= delay < 30 * 1.2
    assert receiver.posts[ntf] == 1


def test_an_unsendable_stored_url_is_a_failed_attempt_not_a_broken_pass(db, receiver) -> None:  # type: ignore[no-untyped-def]
    # A URL stored before the API refused such URLs (httpx raises InvalidURL, not an
    # HTTPError, for it): the attempt is recorded as failed and the other endpoint still gets
    # the message in the same pass.
    register(db, receiver)
    with db.transaction() as s:
        bad, _ = endpoints.create(s, endpoints.Fields(url="http://127.0.0.1:9/x"), utcnow())
        bad.url = "http://exa\tmple.com/hooks"
        bad_id = bad.id
    ntf = enqueue(db, "invoice.paid", "acct_u", {})
    deliverer = Deliverer(db, FAST)
    try:
        assert deliverer.run_once() == 2
    finally:
        deliverer.close()
    assert receiver.ids() == [ntf]
    with db.transaction(readonly=True) as s:
        attempt = s.scalars(
            select(NotificationAttempt).where(NotificationAttempt.endpoint_id == bad_id)
        ).one()
        delivery = s.scalars(
            select(NotificationDelivery).where(NotificationDelivery.endpoint_id == bad_id)
        ).one()
        endpoint = s.get(NotificationEndpoint, bad_id)
    assert (attempt.number, attempt.status_code) == (1, 0)
    assert "URL" in attempt.error
    assert (delivery.state, delivery.attempts) == ("pending", 1)
    assert endpoint is not None and endpoint.failing_since is not None


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_deadline_then_gets_it_once(  # type: ignore[no-untyped-def]
    db, receiver
) -> None:
    # One byte a second never trips the 2 s per-read timeout: only the total deadline ends
    # the attempt, which is recorded as failed, and the message goes again on schedule.
    receiver.trickle_first = 1
    endpoint_id = register(db, receiver)
    ntf = enqueue(db, "invoice.paid", "acct_t", {})
    policy = replace(FAST, timeout_sec=2, deadline_sec=3)
    deliverer = Deliverer(db, policy)
    passed: list[int] = []
    sender = threading.Thread(target=lambda: passed.append(deliverer.run_once()))
    sender.start()
    sender.join(timeout=30)  # generous: the trickle itself would never end
    try:
        assert not sender.is_alive(), "the POST was not cut off at its deadline"
    finally:
        receiver.stop.set()
        sender.join()
        deliverer.close()
    assert passed == [1]
    with db.transaction(readonly=True) as s:
        attempt = s.scalars(select(NotificationAttempt)).one()
        delivery = s.scalars(select(NotificationDelivery)).one()
    assert (attempt.number, attempt.status_code) == (1, 0)
    assert "deadline" in attempt.error and "3 s" in attempt.error
    assert (delivery.state, delivery.attempts, delivery.leased_until) == ("pending", 1, None)
    assert receiver.ok_posts[ntf] == 0

    drain([Deliverer(db, policy)], lambda: len(receiver.accepted) == 1)
    assert receiver.ids() == [ntf]
    assert receiver.posts[ntf] == 2 and receiver.ok_posts[ntf] == 1
    with db.transaction(readonly=True) as s:
        attempts = s.scalars(
            select(NotificationAttempt)
            .where(NotificationAttempt.endpoint_id == endpoint_id)
            .order_by(NotificationAttempt.number)
        ).all()
        delivery = s.scalars(select(NotificationDelivery)).one()
    assert [(a.number, a.status_code) for a in attempts] == [(1, 0), (2, 204)]
    assert (delivery.state, delivery.attempts) == ("delivered", 2)


@dataclass(frozen=True)
class ShortLease(Policy):
    """A lease of 1 s (instead of 2 × deadline + 10 s), to see in a few seconds what a batch
    queued behind slow sends does with the default lease."""

    @property
    def lease(self) -> dt.timedelta:
        return dt.timedelta(seconds=1)


def test_a_job_queued_past_its_lease_is_not_sent_again_by_another_process(
    db, receiver, pg_url
) -> None:  # type: ignore[no-untyped-def]
    # One sender per process and a slow receiver: the jobs a process claimed wait in its
    # queue longer than their lease. When another process takes them over, the first must
    # not send them as well: each message is POSTed once.
    receiver.delay_sec = 0.1
    register(db, receiver)
    ids = [enqueue(db, "invoice.paid", f"acct_q{i}", {}) for i in range(30)]
    policy = ShortLease(timeout_sec=0.5, senders=1, batch=50, poll_sec=0.02)
    workers = [Deliverer(Database(pg_url), policy) for _ in range(2)]
    try:
        drain(workers, lambda: len(receiver.accepted) == len(ids))
    finally:
        for w in workers:
            w.db.dispose()
    assert sorted(receiver.ids()) == sorted(ids)
    assert set(receiver.posts.values()) == {1}, receiver.posts.most_common(3)


def claimed_then(db, change) -> list:  # type: ignore[no-untyped-def]
    """Claim due deliveries, apply `change(session)` to the endpoint as an operator would
    meanwhile, then let the claimed jobs go: the attempts made."""
    deliverer = Deliverer(db, FAST)
    try:
        deliverer.fan_out()
        jobs = deliverer.claim()
        assert jobs
        with db.transaction() as s:
            change(s)
        for job in jobs:
            deliverer._deliver(job)
    finally:
        deliverer.close()
    with db.transaction(readonly=True) as s:
        return list(s.scalars(select(NotificationAttempt)).all())


def test_a_message_claimed_before_a_rotation_is_signed_with_the_new_secret_too(
    db, receiver
) -> None:  # type: ignore[no-untyped-def]
    endpoint_id = register(db, receiver)
    ntf = enqueue(db, "invoice.paid", "acct_r", {})

    def rotate(s) -> None:  # type: ignore[no-untyped-def]
        _, receiver.secret = endpoints.rotate(s, endpoint_id, utcnow())  # switches at once

    claimed_then(db, rotate)
    assert receiver.rejected_signatures == 0
    assert receiver.ids() == [ntf]


def test_a_message_claimed_before_a_url_change_goes_to_the_new_url(db, receiver) -> None:  # type: ignore[no-untyped-def]
    old = Receiver()
    server = ReceiverServer(old)
    try:
        endpoint_id = register(db, old)
        receiver.secret = old.secret
        ntf = enqueue(db, "invoice.paid", "acct_v", {})

        def move(s) -> None:  # type: ignore[no-untyped-def]
            fields = endpoints.Fields(url=receiver.url)
            endpoints.update(s, endpoint_id, fields, ["url"], utcnow())

        claimed_then(db, move)
    finally:
        server.close()
    assert old.posts == {}
    assert receiver.ids() == [ntf]


def test_a_message_claimed_before_its_endpoint_is_disabled_waits(db, receiver) -> None:  # type: ignore[no-untyped-def]
    endpoint_id = register(db, receiver)
    ntf = enqueue(db, "invoice.paid", "acct_w", {})

    def disable(s) -> None:  # type: ignore[no-untyped-def]
        endpoints.set_enabled(s, endpoint_id, False, "disabled by an operator", utcnow())

    assert claimed_then(db, disable) == []
    assert receiver.posts == {}
    with db.transaction() as s:
        endpoints.set_enabled(s, endpoint_id, True, "", utcnow())
    drain([Deliverer(db, FAST)], lambda: receiver.ids() == [ntf])


def wait_until_blocked_on_a_lock(db: Database) -> None:
    """Until some session of this database waits for a lock (PostgreSQL)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with db.transaction(readonly=True) as s:
            if s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                    " current_database() AND wait_event_type = 'Lock'"
                )
            ):
                return
        time.sleep(0.02)
    raise AssertionError("nothing waited for the lock")


def test_a_fan_out_racing_a_delete_of_an_endpoint_queues_for_the_others(db, receiver) -> None:  # type: ignore[no-untyped-def]
    # The delete commits while the fan-out waits on it: the fan-out goes on without that
    # endpoint (no foreign-key violation failing the whole pass).
    register(db, receiver)
    with db.transaction() as s:
        doomed, _ = endpoints.create(s, endpoints.Fields(url="http://127.0.0.1:9/x"), utcnow())
        doomed_id = doomed.id
    ntf = enqueue(db, "invoice.paid", "acct_f", {})
    deliverer = Deliverer(db, FAST)
    outcome: list[object] = []

    def fan_out() -> None:
        try:
            outcome.append(deliverer.fan_out())
        except Exception as exc:  # what the pass would log
            outcome.append(exc)

    try:
        with db.transaction() as s:  # the delete, not committed yet
            endpoints.delete(s, doomed_id)
            racer = threading.Thread(target=fan_out)
            racer.start()
            wait_until_blocked_on_a_lock(db)
        racer.join(timeout=30)
    finally:
        deliverer.close()
    assert outcome == [1]
    with db.transaction(readonly=True) as s:
        queued = s.scalars(select(NotificationDelivery.endpoint_id)).all()
    assert list(queued) != [] and doomed_id not in queued
    drain([Deliverer(db, FAST)], lambda: receiver.ids() == [ntf])


@dataclass
class GatedReceiver(Receiver):
    """Holds every POST until `gate` is set; counts how many of one message are in flight."""

    gate: threading.Event = field(default_factory=threading.Event)
    in_flight: Counter[str] = field(default_factory=Counter)
    most_at_once: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        msg_id = headers.get("webhook-id", "")
        with self.lock:
            self.in_flight[msg_id] += 1
            self.most_at_once = max(self.most_at_once, self.in_flight[msg_id])
        self.arrived.set()
        try:
            self.gate.wait(30)
            return super().handle(headers, body)
        finally:
            with self.lock:
                self.in_flight[msg_id] -= 1


def test_a_resend_during_the_post_is_sent_after_it_never_beside_it(db) -> None:  # type: ignore[no-untyped-def]
    receiver = GatedReceiver()
    server = ReceiverServer(receiver)
    first, second = Deliverer(db, FAST), Deliverer(db, FAST)
    try:
        endpoint_id = register(db, receiver)
        ntf = enqueue(db, "invoice.paid", "acct_p", {})
        first.fan_out()
        jobs = first.claim()
        assert len(jobs) == 1
        posting = threading.Thread(target=first._deliver, args=(jobs[0],))
        posting.start()
        assert receiver.arrived.wait(20)  # the POST is in flight
        with db.transaction() as s:
            messages.resend(s, endpoint_id, ntf, utcnow())
        other: list[int] = []
        racer = threading.Thread(target=lambda: other.append(second.run_once()))
        racer.start()
        racer.join(timeout=5)  # a second POST would wait at the gate
        receiver.gate.set()
        racer.join()
        posting.join()
        assert other == [0]  # nothing to claim while the message is being sent
        assert receiver.most_at_once == 1
        drain([first], lambda: receiver.ok_posts[ntf] == 2)  # the resend: once more, after
    finally:
        receiver.gate.set()
        second.close()
        server.close()
    assert receiver.most_at_once == 1


def test_recording_a_failure_while_the_endpoint_is_deleted_does_not_deadlock(db) -> None:  # type: ignore[no-untyped-def]
    # The delete holds the endpoint's lock and then deletes its deliveries; the recorder of a
    # failed attempt holds its delivery's lock and then wanted the endpoint's: a deadlock,
    # which PostgreSQL broke by failing one of them (the delete answered UNAVAILABLE).
    from tollbooth.notifications import repository
    from tollbooth.notifications.delivery import Outcome

    with db.transaction() as s:
        endpoint, _ = endpoints.create(s, endpoints.Fields(url="http://127.0.0.1:9/x"), utcnow())
        endpoint_id = endpoint.id
    enqueue(db, "invoice.paid", "acct_dl", {})
    deliverer = Deliverer(db, FAST)
    errors: list[BaseException] = []

    def record(job) -> None:  # type: ignore[no-untyped-def]
        try:
            deliverer.record(job, Outcome(500, 1, "HTTP 500"))
        except BaseException as exc:
            errors.append(exc)

    try:
        deliverer.fan_out()
        (job,) = deliverer.claim()
        with db.transaction() as s:
            endpoints.get(s, endpoint_id, lock=True)  # the delete's first step
            recorder = threading.Thread(target=record, args=(job,))
            recorder.start()
            wait_until_blocked_on_a_lock(db)  # the recorder waits for the endpoint
            repository.delete_endpoint(s, endpoint_id)  # the delete's second step
        recorder.join(timeout=30)
    finally:
        deliverer.close()
    assert errors == []
    with db.transaction(readonly=True) as s:
        assert s.get(NotificationEndpoint, endpoint_id) is None
