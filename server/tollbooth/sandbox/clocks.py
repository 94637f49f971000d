"""Test clocks: create, advance (renewing what falls due), delete."""

from __future__ import annotations

from typing import Any

from tollbooth.sandbox.billing_portal import BillingPortal
from tollbooth.sandbox.core import DEFAULT_CLOCK, LIVE_STATUSES
from tollbooth.sandbox.objects import (
    add_interval,
    new_id,
)
from tollbooth.sandbox.subscription_updates import MAX_TIMESTAMP
from tollbooth.sandbox.wire import (
    as_int,
    as_str,
    bad_request,
    required,
)

MOST_PERIODS_PER_ADVANCE = 1000


class Clocks(BillingPortal):
    """Stripe's test clocks, plus the sandbox's own `clock_default`."""

    def advance_clock(self, clock_id: str, frozen_time: int) -> dict[str, Any]:
        """Advance in steps, one period end at a time, committing each and letting other
        requests run between them (`Store.breathe`): the clock reads `advancing` meanwhile,
        and a second advance (or deletion) of it is refused until it is `ready` again. The
        answer still comes when the whole advance is done, `ready`, as before."""
        clock = self.clock(clock_id)
        if clock_id in self.advancing:
            raise bad_request(
                f"The test clock {clock_id} is advancing: wait until its status is ready.",
                "frozen_time",
            )
        if frozen_time > MAX_TIMESTAMP:
            raise bad_request(
                f"frozen_time must be at most {MAX_TIMESTAMP} (9999-12-31).", "frozen_time"
            )
        if frozen_time <= int(clock["frozen_time"]):
            raise bad_request(
                "The test clock's frozen time must be later than its current frozen time "
                f"({clock['frozen_time']}).",
                "frozen_time",
            )
        self._refuse_too_many_periods(clock_id, frozen_time)
        clock["status"] = "advancing"
        clock["status_details"] = {"advancing": {"target_frozen_time": frozen_time}}
        self.store.put(clock)
        self.emit("test_helpers.test_clock.advancing", clock)
        self.advancing.add(clock_id)
        try:
            self.store.breathe()
            self._run_until(clock_id, frozen_time, between=self.store.breathe)
        finally:
            self.advancing.discard(clock_id)
        clock = self.clock(clock_id)
        clock["frozen_time"] = frozen_time
        self.store.put(clock)
        self.expire_due_sessions()
        clock["status"] = "ready"
        clock["status_details"] = {}
        self.store.put(clock)
        self.emit("test_helpers.test_clock.ready", clock)
        return clock

    def settle_interrupted_advances(self) -> None:
        """At start: a clock still `advancing` was left so by a process stopped in the middle
        of an advance; it stays at the last period end it finished, `ready`."""
        for _, clock in self.store.all("test_helpers.test_clock"):
            if clock.get("status") == "advancing" and not clock.get("deleted"):
                clock["status"] = "ready"
                clock["status_details"] = {}
                self.store.put(clock)
                self.emit("test_helpers.test_clock.ready", clock)

    def _refuse_too_many_periods(self, clock_id: str, target: int) -> None:
        """A 400 before anything is done when the advance would end more than
        MOST_PERIODS_PER_ADVANCE periods of the clock's live subscriptions (counted by date
        arithmetic alone): one request must not renew for ever (a clock sent to the year 9999
        held every other request of the sandbox)."""
        periods = 0
        for _, sub in self.store.all("subscription"):
            if (sub.get("test_clock") or DEFAULT_CLOCK) != clock_id:
                continue
            if sub["status"] not in LIVE_STATUSES:
                continue
            until = min(target, int(sub["cancel_at"])) if sub.get("cancel_at") else target
            anchor = int(sub["billing_cycle_anchor"])
            items = [
                (int(i["current_period_end"]), i["price"]["recurring"])
                for i in sub["items"]["data"]
            ]
            while (end := min(e for e, _ in items)) <= until:
                periods += 1
                if periods > MOST_PERIODS_PER_ADVANCE:
                    raise bad_request(
                        f"This advance would end more than {MOST_PERIODS_PER_ADVANCE} "
                        "subscription periods at once: advance the clock in smaller steps.",
                        "frozen_time",
                    )
                if sub["cancel_at_period_end"]:
                    break
                items = [
                    (add_interval(end, r["interval"], r["interval_count"], anchor), r)
                    for _, r in items
                ]

    def create_clock(self, params: dict[str, Any]) -> dict[str, Any]:
        if "frozen_time" not in params:
            raise required("frozen_time")
        frozen = as_int(params["frozen_time"], "frozen_time", minimum=0, maximum=MAX_TIMESTAMP)
        now = self.wall()
        clock = {
            "id": new_id("clock_"),
            "object": "test_helpers.test_clock",
            "created": now,
            "deletes_after": now + 30 * 86400,
            "frozen_time": frozen,
            "livemode": False,
            "name": as_str(params.get("name", ""), "name", max_len=300) or None,
            "status": "ready",
            "status_details": {},
        }
        self.store.put(clock)
        self.emit("test_helpers.test_clock.created", clock)
        return clock

    def delete_clock(self, clock_id: str) -> dict[str, Any]:
        if clock_id == DEFAULT_CLOCK:
            raise bad_request("The sandbox's default clock cannot be deleted.", "id")
        clock = self.clock(clock_id)
        if clock_id in self.advancing:
            raise bad_request(
                f"The test clock {clock_id} is advancing: wait until its status is ready.", "id"
            )
        for _, sub in self.store.all("subscription"):
            if sub.get("test_clock") == clock_id and sub["status"] != "canceled":
                self._cancel_now(sub, int(clock["frozen_time"]), "cancellation_requested")
        tombstone = {"id": clock_id, "object": "test_helpers.test_clock", "deleted": True}
        self.store.put(tombstone)
        self.emit("test_helpers.test_clock.deleted", clock)
        return tombstone

    def list_clocks(self, params: dict[str, Any]) -> dict[str, Any]:
        self.clock(DEFAULT_CLOCK)
        page = self.list("test_helpers.test_clock", params, lambda c: not c.get("deleted"))
        for clock in page["data"]:
            if clock["id"] == DEFAULT_CLOCK:
                clock["frozen_time"] = self.clock(DEFAULT_CLOCK)["frozen_time"]
        return page
