"""A real HTTP receiver for notification tests: it verifies every POST with the
`standardwebhooks` library, can fail the first attempts of each message on purpose, and
keeps what it accepted in arrival order."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tollbooth.db import Database
from tollbooth.db.models import NotificationOutbox
from tollbooth.notifications import outbox


@dataclass
class Receiver:
    secret: str = ""
    fail_first: int = 0  # answer 500 to the first N attempts of each message
    always_fail: bool = False
    answer: int = 0  # when set: every verified POST is answered with this status
    delay_sec: float = 0.0
    trickle_first: int = 0  # answer the first N attempts of each message one byte a second
    hang: threading.Event | None = None  # when given: every POST waits for it before answering
    hanging: int = 0  # POSTs waiting on `hang` now
    most_hanging: int = 0  # the most that ever waited at once
    stop: threading.Event = field(default_factory=threading.Event)  # ends the trickles
    accepted: list[dict[str, Any]] = field(default_factory=list)
    posts: Counter[str] = field(default_factory=Counter)  # every POST, by webhook-id
    ok_posts: Counter[str] = field(default_factory=Counter)  # answered 2xx, by webhook-id
    rejected_signatures: int = 0
    log: list[str] = field(default_factory=list)  # webhook-id of every verified POST, in order
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        if self.delay_sec:
            time.sleep(self.delay_sec)
        if self.hang is not None:
            with self.lock:
                self.hanging += 1
                self.most_hanging = max(self.most_hanging, self.hanging)
            self.hang.wait(timeout=120)
            with self.lock:
                self.hanging -= 1
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            with self.lock:
                self.rejected_signatures += 1
            return 401
        msg_id = headers.get("webhook-id", "")
        with self.lock:
            self.posts[msg_id] += 1
            self.log.append(msg_id)
            if self.posts[msg_id] <= self.trickle_first:
                return TRICKLE
            if self.answer:
                return self.answer
            if self.always_fail or self.posts[msg_id] <= self.fail_first:
                return 500
            self.ok_posts[msg_id] += 1
            if self.ok_posts[msg_id] == 1:  # deduplicated by webhook-id, as receivers do
                self.accepted.append(payload)
        return 204

    def ids(self) -> list[str]:
        with self.lock:
            return [m["id"] for m in self.accepted]

    def wait_for(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.accepted) >= count:
                    return list(self.accepted)
            time.sleep(0.05)
        raise AssertionError(f"received {len(self.accepted)} of {count} messages")


TRICKLE = -1  # `Receiver.handle`: answer one byte a second, without end


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        code = self.server.receiver.handle(  # type: ignore[attr-defined]
            {k.lower(): v for k, v in self.headers.items()}, body
        )
        if code == TRICKLE:
            self.trickle()
            return
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()

    def trickle(self) -> None:
        """A status line, then a header that never ends, one byte a second (each byte well
        within any per-read timeout), until the sender hangs up or the receiver stops."""
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        self.close_connection = True
        data = b"HTTP/1.1 204 No Content\r\nx-slow: "
        try:
            self.wfile.write(data)
            self.wfile.flush()
            while not receiver.stop.wait(1.0):
                self.wfile.write(b"a")
                self.wfile.flush()
        except OSError:
            pass  # the sender gave up

    def log_message(self, *args: Any) -> None:
        pass


class ReceiverServer:
    def __init__(self, receiver: Receiver) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.receiver = receiver  # type: ignore[attr-defined]
        receiver.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.receiver.stop.set()  # type: ignore[attr-defined]
        if self.server.receiver.hang is not None:  # type: ignore[attr-defined]
            self.server.receiver.hang.set()  # type: ignore[attr-defined]
        self.server.shutdown()
        self.server.server_close()


def enqueue(db: Database, type_: str, account: str | None, payload: dict[str, Any]) -> str:
    """One outbox row, committed; its id."""
    key = f"test:{uuid.uuid4().hex}"
    with db.transaction() as session:
        assert outbox.enqueue(session, type_, account, payload, key)
        row = session.query(NotificationOutbox).filter(NotificationOutbox.dedupe_key == key).one()
        return row.id


def as_json(body: bytes) -> Any:
    return json.loads(body)


def passes(deliverer: Any) -> None:
    """Delivery passes until nothing is due (tests whose failures wait an hour: this ends),
    then the deliverer closed."""
    try:
        while deliverer.run_once():
            pass
    finally:
        deliverer.close()
