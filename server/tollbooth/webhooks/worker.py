"""The inbox worker: applies stored events that are due (deferred, or failed and retrying).

Every server replica runs one (`tollbooth.app.serve`). Each poll claims a few due events with
`SELECT … FOR UPDATE SKIP LOCKED` and leases them (their next attempt moves LEASE_SEC ahead)
in one short transaction, then applies each outside it, so two replicas never take the same
event at once and a replica that dies mid-way leaves the event to be retried after the lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from tollbooth.db.types import utcnow
from tollbooth.webhooks import repository
from tollbooth.webhooks.service import LEASE_SEC, Inbox, Outcome

log = logging.getLogger("tollbooth.inbox")

BATCH = 10


class InboxWorker:
    def __init__(self, inbox: Inbox, interval_sec: float = 2.0) -> None:
        self.inbox = inbox
        self.interval_sec = interval_sec
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: dt.datetime | None = None) -> list[tuple[str, Outcome]]:
        """One poll: claim what is due at `now` and apply it; what each ended in."""
        now = now or utcnow()
        with self.inbox.db.transaction() as session:
            ids = repository.claim_due(
                session, now, utcnow() + dt.timedelta(seconds=LEASE_SEC), BATCH
            )
        return [(ident, self.inbox.apply(ident)) for ident in ids]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.run_once()
            except Exception:  # noqa: BLE001 - the database may be away; try again later
                log.warning("inbox worker poll failed", exc_info=True)
                done = []
            if len(done) < BATCH:
                self._stop.wait(self.interval_sec)

    def start(self) -> InboxWorker:
        self._thread = threading.Thread(target=self._loop, name="inbox-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
