"""The delivery process: outbox rows to the company's endpoints, signed, retried, in order.

One pass (`Deliverer.run_once`), each step its own short transaction, none held across a POST:

1. **Positions**: committed outbox rows get a position, one assigner at a time (see
   `repository.assign_positions`), so positions follow commit order; each row gets a pending
   delivery per enabled endpoint that wants its type.
2. **Claim**: due deliveries whose account has no earlier pending delivery to that endpoint
   are locked with `FOR UPDATE SKIP LOCKED` and leased (`leased_until` past the send's
   deadline) before the claim commits. Several processes never send one message at once: a
   leased row is not claimed (even when a resend made it due), a row being claimed is
   skipped; a row whose account an earlier delivery holds back again (a resend committed
   while the claim ran) is left for later. We use plain row locks
   rather than a job queue (`procrastinate`): deliveries are rows we list, page and replay
   anyway, and per-account order is one `NOT EXISTS` in the claim, which a queue would not
   give us.
3. **Send**: renew the lease (a job may have waited for a sender; one whose lease another
   process has taken over since is skipped) and read the endpoint as it is now (URL and
   secrets; disabled meanwhile: not sent), then POST the envelope (`envelope.body`) with
   Standard Webhooks headers (the `standardwebhooks` package signs), several at once. Each
   socket read or write waits at most `timeout_sec` (BILLING_NOTIFY_TIMEOUT_SEC), and the
   whole POST (connect, send, the answer read) ends by `deadline_sec`
   (BILLING_NOTIFY_DEADLINE_SEC): a receiver trickling its answer a byte at a time, each
   within the per-read timeout, would otherwise hold a sender past its lease. A POST cut off
   there is a failed attempt (`deadline: ...`), retried on the schedule below. The host is
   looked up within `timeout_sec` too (a hanging resolver: a failed attempt), and with
   BILLING_NOTIFY_DENY_PRIVATE no connection is made to a non-global address
   (`transport`, `addresses`).
4. **Record**: every attempt is stored (status code, latency, error) and the lease given
   back. A resend during the POST: pending and due, sent once more. 2xx: delivered. Else
   the next attempt comes after `retry_delay` (first ~1 s, doubling, with jitter) until the
   message is older than the give-up window; an endpoint failing that long is disabled and
   a `notification.endpoint.disabled` notification says so; one answering 410 Gone is
   disabled so at once. A disabled endpoint, and one whose last failing message was given
   up, has no `failing_since`: enabled again, or failing weeks later, its window starts
   anew. That notice goes to every other endpoint and into every delivery read, so it names
   the endpoint by id and by its URL's origin only (`origin_of`): a receiver URL often
   carries its credential (user and password, a token in the path or the query).

`serve-notifications` (`Deliverer.run`) does not wait for a whole batch: whenever a sender
is idle it claims more, and one endpoint has at most half the senders in flight, so a
receiver that hangs until the deadline delays only its own messages; a sender that comes
free goes to the endpoint with the fewest in flight, so several hanging receivers holding
every sender delay the others once, not message after message.

A process killed mid-batch loses nothing (its leases expire and the rows are sent again) and
re-sends at most what it had in flight unrecorded; receivers deduplicate by `webhook-id`.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from tollbooth import metrics
from tollbooth.config import Settings
from tollbooth.db import Database, no_transaction_held
from tollbooth.db.models import NotificationEndpoint
from tollbooth.db.types import utcnow
from tollbooth.notifications import envelope, outbox, repository, transport
from tollbooth.notifications.endpoints import left_out, signing_secrets, wants, wants_type
from tollbooth.notifications.repository import DELIVERED, FAILED

log = logging.getLogger("tollbooth.notifications")

MAX_ERROR = 500
# What is read of a receiver's answer body (its status is the answer): past it, the
# connection is closed instead of reading a body that may never end.
MAX_ANSWER_BODY = 64 * 1024
USER_AGENT = "tollbooth-notifications/1"


@dataclass(frozen=True)
class Policy:
    timeout_sec: float = 5.0  # each read or write of a POST
    deadline_sec: float = 10.0  # the whole POST
    retry_first_sec: float = 1.0
    retry_max_sec: float = 3600.0
    give_up_sec: int = 3 * 86400
    disable_after_sec: int = 3 * 86400
    batch: int = 50
    senders: int = 8
    poll_sec: float = 0.5
    deny_private: bool = False  # no connection to a non-global address (`addresses`)

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(
            timeout_sec=s.notify_timeout_sec,
            deadline_sec=s.notify_deadline_sec,
            retry_first_sec=s.notify_retry_first_ms / 1000,
            retry_max_sec=s.notify_retry_max_sec,
            give_up_sec=s.notify_give_up_sec,
            disable_after_sec=s.notify_disable_after_sec,
            batch=s.notify_batch,
            senders=s.notify_senders,
            poll_sec=s.notify_poll_ms / 1000,
            deny_private=s.notify_deny_private,
        )

    @property
    def per_endpoint(self) -> int:
        """Deliveries of one endpoint in flight at once, at most (`Deliverer.run`): half the
        senders, so a hanging receiver leaves the other half to the other endpoints."""
        return max(1, self.senders // 2)

    @property
    def lease(self) -> dt.timedelta:
        """Longer than any send can take, so a claimed row is not due while it is sent."""
        return dt.timedelta(seconds=2 * self.deadline_sec + 10)


def retry_delay(attempts: int, policy: Policy, rng: Callable[[], float] = random.random) -> float:
    """Seconds before attempt `attempts + 1`: first, doubling, capped, times a jitter in
    [0.8, 1.2) so that a burst of failures does not retry in lock-step."""
    base = min(policy.retry_max_sec, policy.retry_first_sec * 2 ** max(0, attempts - 1))
    return base * (0.8 + 0.4 * rng())


@dataclass(frozen=True)
class Job:
    delivery_id: str
    endpoint_id: str
    attempt: int
    notification_id: str
    url: str
    body: str
    secrets: tuple[str, ...]
    leased_until: dt.datetime
    type: str = ""  # the public type ("": not checked against the endpoint's event_types)


@dataclass(frozen=True)
class Outcome:
    status_code: int
    latency_ms: int
    error: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver says the endpoint is no more (Standard Webhooks: disable
        it), so it is disabled at once rather than retried for days."""
        return self.status_code == 410


def headers(
    notification_id: str, body: str, secrets: tuple[str, ...], at: dt.datetime
) -> dict[str, str]:
    """Standard Webhooks headers; one `v1,` signature per secret, space-separated."""
    signatures = " ".join(
        Webhook(s).sign(msg_id=notification_id, timestamp=at, data=body) for s in secrets
    )
    return {
        "webhook-id": notification_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def send(client: httpx.Client, job: Job, deadline_sec: float | None = None) -> Outcome:
    """One POST; with `deadline_sec`, ended (a failed attempt) when it takes longer, provided
    `client` comes from `transport.sender_client`."""
    no_transaction_held("a notification endpoint")
    started = time.monotonic()
    with transport.deadline(deadline_sec) as ends_by:
        try:
            with client.stream(
                "POST",
                job.url,
                content=job.body.encode(),
                headers=headers(job.notification_id, job.body, job.secrets, utcnow()),
            ) as resp:
                status = resp.status_code
                _drain(resp)
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            # InvalidURL and the IDNA codecs' UnicodeError are not HTTPErrors: a URL stored
            # before `endpoints.clean_url` refused it is a failed attempt, not a broken pass.
            ms = int((time.monotonic() - started) * 1000)
            error = f"{type(exc).__name__}: {exc}"
            if ends_by is not None and time.monotonic() >= ends_by:
                error = f"deadline: no complete answer within {deadline_sec:g} s ({error})"
            return Outcome(0, ms, error[:MAX_ERROR])
    ms = int((time.monotonic() - started) * 1000)
    error = "" if 200 <= status < 300 else f"HTTP {status}"
    return Outcome(status, ms, error)


def _drain(resp: httpx.Response) -> None:
    """Read at most MAX_ANSWER_BODY bytes of an answer's body, then let it go: the status is
    the answer. A short body read whole keeps the connection for the next POST; a longer or
    endless one (never read into memory) closes it when the stream does."""
    read = 0
    try:
        for chunk in resp.iter_raw():
            read += len(chunk)
            if read > MAX_ANSWER_BODY:
                return
    except httpx.HTTPError:
        return  # the status line came: a body cut short does not change the answer


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of an endpoint URL: no user, password, path, query or fragment
    (where a receiver's credential lives). "" for what does not parse."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return ""
    if not parts.scheme or not host:
        return ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


class Deliverer:
    """One delivery process (or one of several: see the module docstring)."""

    def __init__(self, db: Database, policy: Policy, client: httpx.Client | None = None) -> None:
        self.db = db
        self.policy = policy
        self.client = client or transport.sender_client(policy.timeout_sec, policy.deny_private)
        self.pool = ThreadPoolExecutor(max_workers=policy.senders, thread_name_prefix="notify")

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()

    def fan_out(self) -> int:
        """Step 1: positions and pending deliveries. Returns how many rows got a position."""
        with self.db.transaction() as session:
            rows = repository.assign_positions(session, 500)
            if not rows:
                return 0
            now = utcnow()
            for endpoint in repository.enabled_endpoints(session):
                wanted = [r for r in rows if wants(endpoint, r)]
                repository.insert_deliveries(session, endpoint.id, wanted, now)
            return len(rows)

    def claim(self, limit: int | None = None, busy: dict[str, int] | None = None) -> list[Job]:
        """Step 2: lease a batch of due deliveries (at most `limit`; with `busy`, the
        deliveries this process sends now by endpoint, at most `per_endpoint` of one
        endpoint's in flight)."""
        now = utcnow()
        until = now + self.policy.lease
        with self.db.transaction() as session:
            claimed = repository.claim_due(
                session,
                now,
                until,
                self.policy.batch if limit is None else limit,
                busy=busy,
                per_endpoint=self.policy.per_endpoint if busy is not None else 0,
            )
            return [
                Job(
                    delivery_id=d.id,
                    endpoint_id=endpoint.id,
                    attempt=d.attempts + 1,
                    notification_id=row.id,
                    url=endpoint.url,
                    body=envelope.body(row),
                    secrets=tuple(signing_secrets(endpoint, now)),
                    leased_until=until,
                    type=envelope.public_type(row.type),
                )
                for d, row, endpoint in claimed
            ]

    def record(self, job: Job, outcome: Outcome) -> None:
        """Step 4: the attempt, and what follows from it."""
        now = utcnow()
        with self.db.transaction() as session:
            delivery = repository.lock_delivery(session, job.delivery_id)
            if delivery is None:
                return  # the endpoint was deleted meanwhile
            delivery.attempts += 1
            delivery.updated_at = now
            repository.add_attempt(
                session,
                delivery,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                created_at=now,
            )
            # Still this process's lease (else another process took the delivery over after
            # the lease ran out: it decides what follows). A resend during the POST made it
            # due before the lease's end: it is sent once more, now that this POST is over.
            ours = delivery.leased_until == job.leased_until
            resent = ours and delivery.next_attempt_at < job.leased_until
            if ours:
                delivery.leased_until = None
            if outcome.ok:
                delivery.delivered_at = now
                delivery.last_error = ""
                if ours and not resent:
                    delivery.state = DELIVERED
            else:
                self._schedule(session, delivery, outcome, now, ours and not resent, job.type)
            given_up = delivery.state == FAILED
        # The endpoint in a transaction of its own, once the delivery's lock is given back:
        # a delete locks the endpoint, then the deliveries (a deadlock the other way round).
        with self.db.transaction() as session:
            if outcome.ok:
                repository.clear_failing(session, job.endpoint_id)
                return
            endpoint = repository.get_endpoint(session, job.endpoint_id, lock=True, key_share=True)
            if endpoint is None or not endpoint.enabled:
                return
            since = endpoint.failing_since
            if outcome.gone:
                self._disable(session, endpoint, now, "the receiver answered HTTP 410 Gone")
            elif (
                since is not None and (now - since).total_seconds() >= self.policy.disable_after_sec
            ):
                reason = f"every attempt failed since {envelope.timestamp(since)}"
                self._disable(session, endpoint, now, reason)
            elif given_up and not repository.has_pending(session, endpoint.id):
                # Nothing of it is retried any more: a message written weeks later must not
                # find it "failing for days" and disable it at its first failure.
                endpoint.failing_since = None
            elif since is None:
                endpoint.failing_since = now

    def _schedule(
        self, session, delivery, outcome: Outcome, now: dt.datetime, retry: bool, type_: str = ""
    ) -> None:  # type: ignore[no-untyped-def]
        """A failed attempt: the next one after `retry_delay`, or given up (when `retry`: else
        the next attempt is another process's, or a resend's, due now); given up too when an
        update left its type (`type_`) out of the endpoint's during the POST."""
        delivery.last_error = outcome.error
        if not retry:
            return
        # No flush before these reads: a second UPDATE of the delivery in this transaction
        # would re-check its foreign key, a key-share lock on the endpoint (which a delete
        # holds). The endpoint is read without a lock.
        with session.no_autoflush:
            row = repository.get_notification(session, delivery.notification_id)
            endpoint = repository.get_endpoint(session, delivery.endpoint_id) if type_ else None
        if endpoint is not None and not wants_type(endpoint, type_):
            delivery.state = FAILED
            delivery.last_error = f"{outcome.error}; {left_out(type_)}"[:500]
            return
        # Retried for give_up_sec from the message's creation, or from its delivery's
        # (re)creation when later: a resend of an old message (an endpoint that never had it,
        # or a receiver that was down) is retried, not given up at its first failure.
        started = max(row.created_at, delivery.created_at) if row is not None else now
        age = (now - started).total_seconds()
        if age >= self.policy.give_up_sec:
            delivery.state = FAILED
        else:
            attempts = delivery.attempts
            if row is not None and delivery.created_at > row.created_at:
                # Resent: it backs off from the first delay again, counting the attempts
                # since the resend (this one is not flushed yet), not its whole history.
                with session.no_autoflush:
                    since = repository.attempts_since(session, delivery.id, delivery.created_at)
                attempts = min(attempts, since + 1)
            delay = retry_delay(attempts, self.policy)
            delivery.next_attempt_at = now + dt.timedelta(seconds=delay)

    def _disable(
        self, session, endpoint: NotificationEndpoint, now: dt.datetime, reason: str
    ) -> None:  # type: ignore[no-untyped-def]
        """Disabled, and a `notification.endpoint.disabled` notice says so. `failing_since` is
        cleared (nothing is attempted while disabled; `disabled_reason` says since when), so
        an endpoint enabled again starts its window afresh."""
        since = envelope.timestamp(endpoint.failing_since or now)
        endpoint.enabled = False
        endpoint.disabled_reason = reason
        endpoint.failing_since = None
        endpoint.updated_at = now
        outbox.enqueue(
            session,
            envelope.ENDPOINT_DISABLED,
            None,
            {"endpoint_id": endpoint.id, "origin": origin_of(endpoint.url), "failing_since": since},
            f"{envelope.ENDPOINT_DISABLED}:{endpoint.id}:{since}",
            now,
        )
        log.warning(
            f"notification endpoint {endpoint.id} disabled: {reason}",
            extra={"event": "endpoint_disabled", "endpoint_id": endpoint.id},
        )

    def run_once(self) -> int:
        """One pass; returns how many messages were attempted."""
        with self.db.transaction(readonly=True) as session:  # idle passes take no write lock
            if not repository.has_work(session, utcnow()):
                return 0
        self.fan_out()
        jobs = self.claim()
        if not jobs:
            return 0
        # Each sender records its result as soon as its POST ends: a crash re-sends at most
        # what the senders had in flight.
        futures = [self.pool.submit(self._deliver, job) for job in jobs]
        for future in as_completed(futures):
            future.result()
        return len(jobs)

    def renew(self, job: Job) -> Job | None:
        """Just before the POST: the lease again from now, if this process still holds it, and
        the endpoint as it is now. A job that waited for a sender longer than its lease may
        have been claimed (and sent) by another process meanwhile: not sent from here. An
        endpoint changed since the claim: its current URL and signing secrets (a rotation
        signs with both at once); disabled or deleted: not sent, the delivery waits."""
        now = utcnow()
        leased = now + self.policy.lease
        # One UPDATE of the delivery per transaction (a second would re-check its foreign
        # key: a lock on the endpoint, which a delete holds while it waits for the delivery).
        with self.db.transaction() as session:
            endpoint = repository.get_endpoint(session, job.endpoint_id)
            if endpoint is None or not endpoint.enabled:
                repository.release_lease(session, job.delivery_id, job.leased_until, now)
                return None
            if job.type and not wants_type(endpoint, job.type):
                # Its type left out by an update since the claim: given up, as the update
                # gives up what is pending then (a resend of it is refused alike).
                repository.give_up_claimed(
                    session, job.delivery_id, job.leased_until, left_out(job.type), now
                )
                return None
            if not repository.renew_lease(session, job.delivery_id, job.leased_until, leased):
                return None
            return replace(
                job,
                url=endpoint.url,
                secrets=tuple(signing_secrets(endpoint, now)),
                leased_until=leased,
            )

    def _deliver(self, claimed: Job) -> None:
        job = self.renew(claimed)
        if job is None:
            return
        outcome = send(self.client, job, self.policy.deadline_sec)
        metrics.observe_notification_attempt(outcome.status_code, outcome.latency_ms)
        self.record(job, outcome)

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set: claims as many deliveries as there are idle senders, whenever
        a sender is idle, so one slow or hanging receiver holds up only its own deliveries
        (a pass of `run_once` waits for its whole batch); and at most `per_endpoint` of one
        endpoint's deliveries are in flight, so it cannot take every sender either. With no
        work, or no idle sender, it waits `poll_sec` or until a sender finishes."""
        idle = threading.Condition()
        free = self.policy.senders
        busy: dict[str, int] = {}

        def deliver(job: Job) -> None:
            nonlocal free
            try:
                self._deliver(job)
            except Exception:  # a lost database connection: its lease runs out, resent
                log.exception("notification delivery failed", extra={"event": "pass_failed"})
            finally:
                with idle:
                    free += 1
                    busy[job.endpoint_id] -= 1
                    if not busy[job.endpoint_id]:
                        del busy[job.endpoint_id]
                    idle.notify_all()

        while not stop.is_set():
            with idle:
                room, in_flight = free, dict(busy)
            jobs: list[Job] = []
            if room:
                try:
                    jobs = self._claim_ready(room, in_flight)
                except Exception:  # a lost database connection: log, wait, go on
                    log.exception(
                        "notification delivery pass failed", extra={"event": "pass_failed"}
                    )
            for job in jobs:
                with idle:
                    free -= 1
                    busy[job.endpoint_id] = busy.get(job.endpoint_id, 0) + 1
                self.pool.submit(deliver, job)
            if not jobs:
                with idle:
                    if free == room:  # nothing finished since the claim: wait for something
                        idle.wait(self.policy.poll_sec)

    def _claim_ready(self, limit: int, busy: dict[str, int]) -> list[Job]:
        with self.db.transaction(readonly=True) as session:  # idle polls take no write lock
            if not repository.has_work(session, utcnow()):
                return []
        self.fan_out()
        return self.claim(min(limit, self.policy.batch), busy)


def serve(settings: Settings) -> None:
    """`serve-notifications`: deliver until SIGTERM or SIGINT."""
    import signal

    stop = threading.Event()

    def stop_now(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stop_now)
    signal.signal(signal.SIGINT, stop_now)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # attempts are recorded, not logged
    metrics.serve(settings.metrics_port)
    db = Database(settings.database_url)
    deliverer = Deliverer(db, Policy.from_settings(settings))
    log.info("delivering notifications", extra={"event": "delivering"})
    try:
        deliverer.run(stop)
    finally:
        deliverer.close()
        db.dispose()
