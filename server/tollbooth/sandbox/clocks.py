"""Test clocks: create, advance (renewing what falls due), delete."""

from __future__ import annotations

from typing import Any

from tollbooth.sandbox.billing_portal import BillingPortal
from tollbooth.sandbox.core import DEFAULT_CLOCK
from tollbooth.sandbox.objects import (
    new_id,
)
from tollbooth.sandbox.wire import (
    as_int,
    as_str,
    bad_request,
    required,
)


class Clocks(BillingPortal):
    """Stripe's test clocks, plus the sandbox's own `clock_default`."""

    def advance_clock(self, clock_id: str, frozen_time: int) -> dict[str, Any]:
        clock = self.clock(clock_id)
        if frozen_time <= int(clock["frozen_time"]):
            raise bad_request(
                "The test clock's frozen time must be later than its current frozen time "
                f"({clock['frozen_time']}).",
                "frozen_time",
            )
        clock["status"] = "advancing"
        clock["status_details"] = {"advancing": {"target_frozen_time": frozen_time}}
        self.store.put(clock)
        self.emit("test_helpers.test_clock.advancing", clock)
        self._run_until(clock_id, frozen_time)
        clock = self.clock(clock_id)
        clock["frozen_time"] = frozen_time
        self.store.put(clock)
        self.expire_due_sessions()
        clock["status"] = "ready"
        clock["status_details"] = {}
        self.store.put(clock)
        self.emit("test_helpers.test_clock.ready", clock)
        return clock

    def create_clock(self, params: dict[str, Any]) -> dict[str, Any]:
        if "frozen_time" not in params:
            raise required("frozen_time")
        frozen = as_int(params["frozen_time"], "frozen_time", minimum=0)
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
