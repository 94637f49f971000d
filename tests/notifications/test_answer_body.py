"""What a receiver answers after its status line: the status decides, the body is never
the sender's to read whole. A receiver (or anything at its URL) that answers 2xx and then
streams an endless body must not have that body read into the delivery process's memory
until the deadline cuts it off, nor turn its 2xx into a failed attempt retried forever."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from tests.notifications.support import enqueue
from tollbooth.db import Database
from tollbooth.db.models import NotificationAttempt, NotificationDelivery
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints
from tollbooth.notifications.delivery import Deliverer, Job, Policy, send
from tollbooth.notifications.transport import sender_client

CHUNK = b"a" * 2**16
# Far below what an unbounded read takes before a 3 s deadline on loopback (hundreds of MB),
# far above the socket buffers a closed connection leaves written.
WRITTEN_BOUND = 64 * 2**20
POLICY = Policy(timeout_sec=2, deadline_sec=3, retry_first_sec=0.05, poll_sec=0.02)


@dataclass
class Flood:
    """Answers every verified POST `status`, then a body of CHUNKs until the sender hangs up."""

    status: int = 200
    secret: str = ""
    written: int = 0
    verified: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        flood: Flood = self.server.flood  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if flood.secret:
            Webhook(flood.secret).verify(body, {k.lower(): v for k, v in self.headers.items()})
            with flood.lock:
                flood.verified += 1
        self.close_connection = True
        self.send_response(flood.status)
        self.send_header("content-length", str(2**40))
        self.end_headers()
        try:
            while not flood.stop.is_set():
                self.wfile.write(CHUNK)
                with flood.lock:
                    flood.written += len(CHUNK)
        except OSError:
            pass  # the sender hung up

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flood() -> Iterator[tuple[Flood, str]]:
    f = Flood()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.flood = f  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f, f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        f.stop.set()
        server.shutdown()
        server.server_close()


def job(url: str) -> Job:
    return Job(
        delivery_id="dlv_x",
        endpoint_id="nep_x",
        attempt=1,
        notification_id="ntf_x",
        url=url,
        body="{}",
        secrets=("whsec_" + "A" * 32,),
        leased_until=utcnow() + dt.timedelta(minutes=1),
    )


@pytest.mark.parametrize("status", [200, 500])
def test_an_answer_with_an_endless_body_is_taken_by_its_status_without_reading_the_body(
    flood: tuple[Flood, str], status: int
) -> None:
    receiver, url = flood
    receiver.status = status
    client = sender_client(POLICY.timeout_sec)
    try:
        outcome = send(client, job(url), POLICY.deadline_sec)
    finally:
        client.close()
    assert outcome.status_code == status
    assert outcome.ok is (status == 200)
    assert "deadline" not in outcome.error
    assert receiver.written < WRITTEN_BOUND


def test_a_2xx_with_an_endless_body_is_delivered_once(
    pg_url: str, flood: tuple[Flood, str]
) -> None:
    receiver, url = flood
    db = Database(pg_url)
    try:
        with db.transaction() as session:
            endpoint, receiver.secret = endpoints.create(
                session, endpoints.Fields(url=url), utcnow()
            )
        enqueue(db, "invoice.paid", "acct_flood", {})
        deliverer = Deliverer(db, POLICY)
        try:
            assert deliverer.run_once() == 1
        finally:
            deliverer.close()
        with db.transaction(readonly=True) as s:
            attempt = s.scalars(select(NotificationAttempt)).one()
            delivery = s.scalars(select(NotificationDelivery)).one()
        assert (attempt.status_code, attempt.error) == (200, "")
        assert (delivery.state, delivery.attempts) == ("delivered", 1)
        assert receiver.verified == 1
        assert receiver.written < WRITTEN_BOUND
    finally:
        db.dispose()
