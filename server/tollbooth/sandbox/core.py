"""The engine's core: clocks, events, lookups, rendering with `expand`, and list pages."""

from __future__ import annotations

import copy
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tollbooth.sandbox.config import SandboxConfig
from tollbooth.sandbox.objects import (
    list_envelope,
    new_id,
)
from tollbooth.sandbox.store import Store
from tollbooth.sandbox.wire import (
    as_int,
    as_str,
    bad_request,
    check_url,
    missing,
)

__all__ = ["check_url"]  # re-exported: checkout and the portal take it from here

DEFAULT_CLOCK = "clock_default"

LIVE_STATUSES = ("active", "past_due", "trialing")

KIND_NAMES = {
    "customer": "customer",
    "product": "product",
    "price": "price",
    "checkout.session": "checkout.session",
    "subscription": "subscription",
    "invoice": "invoice",
    "payment_intent": "payment_intent",
    "setup_intent": "setup_intent",
    "payment_method": "PaymentMethod",
    "event": "event",
    "test_helpers.test_clock": "test_clock",
    "billing_portal.configuration": "billing portal configuration",
    "billing_portal.session": "billing portal session",
    "charge": "charge",
    "refund": "refund",
    "dispute": "dispute",
}

_LIST_URLS = {
    "customer": "/v1/customers",
    "product": "/v1/products",
    "price": "/v1/prices",
    "checkout.session": "/v1/checkout/sessions",
    "subscription": "/v1/subscriptions",
    "invoice": "/v1/invoices",
    "payment_intent": "/v1/payment_intents",
    "refund": "/v1/refunds",
    "setup_intent": "/v1/setup_intents",
    "event": "/v1/events",
    "test_helpers.test_clock": "/v1/test_helpers/test_clocks",
    "billing_portal.configuration": "/v1/billing_portal/configurations",
}


# Fields that hold an id the API can expand into the object (None stays None).
EXPANDABLE = {
    "customer",
    "product",
    "price",
    "default_price",
    "subscription",
    "latest_invoice",
    "invoice",
    "payment_intent",
    "setup_intent",
    "payment_method",
    "default_payment_method",
    "latest_charge",
    "charge",
    "configuration",
    "test_clock",
    "latest_attempt",
    "pending_setup_intent",
}


def _created_filter(spec: Any) -> Callable[[dict[str, Any]], bool]:
    """`created=T` or `created[gt|gte|lt|lte]=T`, as Stripe's list endpoints take it."""
    if spec is None:
        return lambda _: True
    if not isinstance(spec, dict):
        exact = as_int(spec, "created")
        return lambda obj: obj.get("created") == exact
    ops = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
    bounds = []
    for op, value in spec.items():
        if op not in ops:
            raise bad_request(
                f"Received unknown parameter: created[{op[:20]}]", f"created[{op[:20]}]"
            )
        bounds.append((ops[op], as_int(value, f"created[{op}]")))
    return lambda obj: all(fn(int(obj.get("created") or 0), v) for fn, v in bounds)


def strip_private(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_private(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [strip_private(v) for v in value]
    return value


class Core:
    """Clocks, events, lookups, `expand` and list pages shared by every resource."""

    # Subscription update parameters the sandbox does not model (no trials, discounts or
    # taxes): refused, not ignored (`wire.refuse_unsupported`; `subscription_updates.py`).
    SUBSCRIPTION_UNSUPPORTED: tuple[tuple[str, ...], ...] = (
        ("trial_end",),
        ("trial_from_plan",),
        ("discounts",),
        ("automatic_tax", "enabled"),
    )

    def __init__(self, store: Store, config: SandboxConfig, wake: Callable[[], None]) -> None:
        self.store = store
        self.config = config
        self.wake = wake
        self.rng = random.Random(config.faults.seed)
        self.request = threading.local()
        # Clocks whose advance is running in this process (`Clocks.advance_clock`).
        self.advancing: set[str] = set()

    @staticmethod
    def wall() -> int:
        return int(time.time())

    def clock(self, clock_id: str) -> dict[str, Any]:
        clock = self.store.get(clock_id)
        if clock is None and clock_id == DEFAULT_CLOCK:
            now = self.wall()
            clock = {
                "id": DEFAULT_CLOCK,
                "object": "test_helpers.test_clock",
                "created": now,
                "deletes_after": now + 100 * 365 * 86400,
                "frozen_time": now,
                "livemode": False,
                "name": "Sandbox default clock (customers created without test_clock)",
                "status": "ready",
                "status_details": {},
            }
            self.store.put(clock)
        if clock is None or clock.get("deleted"):
            raise missing("test_clock", clock_id)
        if clock_id == DEFAULT_CLOCK:
            # The default clock never falls behind the wall clock; advancing moves it ahead.
            clock["frozen_time"] = max(int(clock["frozen_time"]), self.wall())
        return clock

    def now_for(self, customer: dict[str, Any] | None) -> int:
        clock_id = (customer or {}).get("test_clock") or DEFAULT_CLOCK
        return int(self.clock(clock_id)["frozen_time"])

    def emit(
        self,
        event_type: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event = self._event(event_type, obj, previous)
        if self.rng.random() < self.config.faults.twin:
            self._event(event_type, obj, previous)  # a second, distinct event for one change
        return event

    def _event(
        self, event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        now = time.time()
        data: dict[str, Any] = {"object": strip_private(copy.deepcopy(obj))}
        if previous is not None:
            data["previous_attributes"] = strip_private(copy.deepcopy(previous))
        from tollbooth.sandbox import API_VERSION

        event: dict[str, Any] = {
            "id": new_id("evt_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(now),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1 if self.config.webhook_url else 0,
            "request": {
                "id": getattr(self.request, "id", None),
                "idempotency_key": getattr(self.request, "idempotency_key", None),
            },
            "type": event_type,
        }
        self.store.put(event)
        if self.config.webhook_url:
            self.store.enqueue(event["id"], now)
            self.wake()
        return event

    def load(self, object_id: str, kind: str, param: str = "id") -> dict[str, Any]:
        obj = self.store.get(object_id) if isinstance(object_id, str) else None
        if obj is None or obj.get("object") != kind:
            raise missing(KIND_NAMES.get(kind, kind), str(object_id), param)
        return obj

    def render(self, obj: dict[str, Any], expand: list[str] | None = None) -> dict[str, Any]:
        out = strip_private(copy.deepcopy(obj))
        if out.get("object") == "event":
            out["pending_webhooks"] = self.store.pending_for(out["id"])
        for path in expand or []:
            self._expand(out, path.split("."), path)
        return out

    def _expand(self, node: Any, parts: list[str], full: str) -> None:
        if not parts:
            return
        key, rest = parts[0], parts[1:]
        if isinstance(node, list):
            for item in node:
                self._expand(item, parts, full)
            return
        if not isinstance(node, dict):
            raise bad_request(f"This property cannot be expanded ({full}).", "expand")
        if key == "line_items" and node.get("object") == "checkout.session":
            node[key] = self._session_line_items(node["id"], limit=100)
            self._expand(node[key], rest, full)
            return
        if key not in node:
            raise bad_request(f"This property cannot be expanded ({full}).", "expand")
        value = node[key]
        if isinstance(value, str):
            target = self.store.get(value)
            if target is None:
                raise bad_request(f"This property cannot be expanded ({full}).", "expand")
            node[key] = self.render(target)
            self._expand(node[key], rest, full)
        elif value is None and key in EXPANDABLE:
            return
        elif isinstance(value, dict | list) and rest:
            self._expand(value, rest, full)
        elif isinstance(value, dict) and "id" in value:
            return  # already expanded
        else:
            raise bad_request(f"This property cannot be expanded ({full}).", "expand")

    def list(
        self,
        kind: str,
        params: dict[str, Any],
        keep: Callable[[dict[str, Any]], bool] = lambda _: True,
        url: str | None = None,
    ) -> dict[str, Any]:
        limit = as_int(params.get("limit", "10"), "limit", minimum=1, maximum=100)
        in_range = _created_filter(params.get("created"))
        rows = [(seq, obj) for seq, obj in self.store.all(kind) if keep(obj) and in_range(obj)]
        after, before = params.get("starting_after"), params.get("ending_before")
        if after:
            seq = self.store.seq_of(as_str(after, "starting_after"))
            if seq is None:
                raise missing(KIND_NAMES.get(kind, kind), after, "starting_after")
            rows = [r for r in rows if r[0] < seq]
            page, more = rows[:limit], len(rows) > limit
        elif before:
            seq = self.store.seq_of(as_str(before, "ending_before"))
            if seq is None:
                raise missing(KIND_NAMES.get(kind, kind), before, "ending_before")
            rows = [r for r in rows if r[0] > seq]
            page, more = rows[-limit:], len(rows) > limit
        else:
            page, more = rows[:limit], len(rows) > limit
        expand = [
            p.removeprefix("data.") for p in params.get("expand", []) if p.startswith("data.")
        ]
        data = [self.render(obj, expand) for _, obj in page]
        return list_envelope(data, url or _LIST_URLS.get(kind, "/v1"), more)

    def customer(self, customer_id: str, param: str = "id") -> dict[str, Any]:
        customer = self.load(customer_id, "customer", param)
        if customer.get("deleted") and param != "id":
            raise missing("customer", customer_id, param)
        return customer

    def _session_line_items(self, session_id: str, limit: int = 10) -> dict[str, Any]:
        session = self.load(session_id, "checkout.session")
        lines = session.get("_line_items", [])
        return list_envelope(
            copy.deepcopy(lines[:limit]),
            f"/v1/checkout/sessions/{session_id}/line_items",
            len(lines) > limit,
        )

    def _emit_updated(self, event_type: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        previous = {
            k: before.get(k) for k in after if not k.startswith("_") and before.get(k) != after[k]
        }
        if previous:
            self.emit(event_type, after, previous)

    def _cancel_now(self, sub: dict[str, Any], now: int, why: str) -> None:
        sub["status"] = "canceled"
        sub["canceled_at"] = sub.get("canceled_at") or now
        sub["ended_at"] = now
        sub["cancellation_details"]["reason"] = why
        self.store.put(sub)
        self.emit("customer.subscription.deleted", sub)
