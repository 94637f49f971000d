"""The inbox worker: applies stored events that are due (deferred, or failed and retrying).

Every server replica runs one (`tollbooth.app.serve`). Each poll claims a few due events with
`SELECT … FOR UPDATE SKIP LOCKED` and leases them (their next attempt moves LEASE_SEC ahead)
in one short transaction, then applies each outside it, so two replicas never take the same
event at once and a replica that dies mid-way leaves the event to be retried after the lease.
"""

from __future__ import annotations

import datetime as dt
import logging

from tollbooth.db.poller import Poller
from tollbooth.db.types import utcnow
from tollbooth.webhooks import repository
from tollbooth.webhooks.service import LEASE_SEC, Inbox, Outcome

log = logging.getLogger("tollbooth.inbox")

BATCH = 10


class InboxWorker(Poller):
    name = "inbox-worker"
    failure = "inbox worker poll failed"

    def __init__(self, inbox: Inbox, interval_sec: float = 2.0) -> None:
        super().__init__(interval_sec, log)
        self.inbox = inbox

    def run_once(self, now: dt.datetime | None = None) -> list[tuple[str, Outcome]]:
        """One poll: claim what is due at `now` and apply it; what each ended in."""
        now = now or utcnow()
        with self.inbox.db.transaction() as session:
            ids = repository.claim_due(
                session, now, utcnow() + dt.timedelta(seconds=LEASE_SEC), BATCH
            )
        return [(ident, self.inbox.apply(ident)) for ident in ids]

    def poll_once(self) -> bool:
        return len(self.run_once()) >= BATCH
