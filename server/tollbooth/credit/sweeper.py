"""The expiry sweeper: records due expiries that nobody reads.

A balance is computed at its expiry instant without any write, and the next write or
listing records the expiry in the ledger (`unit.lock` settles it). A trial whose credits
simply run out would then never be written, and its `credits.balance_depleted` notification
(seed 001's "trial credits hit zero") never sent. Every server replica runs one sweeper per
environment (`tollbooth.app.serve`): each poll takes the balances whose next event (a grant's
expiry, a hold's lapse) is due and settles each in a transaction of its own, exactly as a
listing would, so the ledger entry and the notification are the same ones, written once
(the balance row is locked; a second replica finds nothing left to record).
"""

from __future__ import annotations

import datetime as dt
import logging

from tollbooth.credit import repository
from tollbooth.credit.unit import lock
from tollbooth.db import Database
from tollbooth.db.poller import Poller
from tollbooth.db.types import utcnow

log = logging.getLogger("tollbooth.credit.sweeper")

BATCH = 100


class ExpirySweeper(Poller):
    name = "expiry-sweeper"
    failure = "expiry sweep failed"

    def __init__(self, db: Database, interval_sec: float = 2.0, batch: int = BATCH) -> None:
        super().__init__(interval_sec, log)
        self.db = db
        self.batch = batch

    def _sweep(self, now: dt.datetime) -> tuple[int, int]:
        """One batch of balances due at `now`, each settled in its own transaction: how many
        were taken, and how many of them failed (logged; retried at the next poll)."""
        with self.db.transaction(readonly=True) as session:
            due = repository.due_balances(session, now, self.batch)
        failed = 0
        for account_id, credit_type in due:
            try:
                with self.db.transaction() as session:
                    lock(session, account_id, credit_type, lambda: now, create=False)
            except Exception:  # noqa: BLE001 - one balance must not hold back the others
                failed += 1
                log.warning(
                    "expiry sweep of a balance failed",
                    exc_info=True,
                    extra={"account": account_id, "credit_type": credit_type},
                )
        return len(due), failed

    def run_once(self, now: dt.datetime | None = None) -> int:
        """Record every expiry due at `now` (default: the clock); how many balances were
        taken. A batch with a failure ends the poll (the same rows would come first again)."""
        now = now or utcnow()
        done = 0
        while not self.stopping():
            taken, failed = self._sweep(now)
            done += taken
            if taken < self.batch or failed:
                break
        return done

    def poll_once(self) -> bool:
        self.run_once()
        return False
