"""Subscription updates: metadata, the payment method, items (a price or quantity change), and
cancellations scheduled for the period's end (`cancel_at_period_end`) or for any instant
(`cancel_at`; the clock passing it deletes the subscription: `Billing._run_until`)."""

from __future__ import annotations

import copy
from typing import Any

from tollbooth.sandbox.billing import Billing
from tollbooth.sandbox.core import strip_private
from tollbooth.sandbox.objects import plan_from_price
from tollbooth.sandbox.wire import (
    as_bool,
    as_enum,
    as_int,
    as_str,
    bad_request,
    merge_metadata,
    refuse_unsupported,
    required,
)

# 9999-12-31T23:59:59Z: a later `cancel_at` is no date the service (or Python) can hold.
MAX_TIMESTAMP = 253_402_300_799


class SubscriptionUpdates(Billing):
    """`POST /v1/subscriptions/{id}` (the API, and the hosted portal's actions)."""

    def update_subscription(self, sub_id: str, params: dict[str, Any]) -> dict[str, Any]:
        refuse_unsupported(params, self.SUBSCRIPTION_UNSUPPORTED)
        sub = self.load(sub_id, "subscription")
        if sub["status"] == "canceled":
            allowed = {"metadata", "cancellation_details", "expand"}
            if set(params) - allowed:
                raise bad_request(
                    "A canceled subscription can only update its cancellation_details and "
                    "metadata.",
                )
        customer = self.customer(sub["customer"], "customer")
        now = self.now_for(customer)
        cancel_at = self._cancel_at(sub, params, now) if "cancel_at" in params else None
        before = copy.deepcopy(sub)
        if "metadata" in params:
            sub["metadata"] = merge_metadata(sub["metadata"], params["metadata"])
        if "description" in params:
            sub["description"] = as_str(params["description"], "description") or None
        if "cancel_at_period_end" in params:
            flag = as_bool(params["cancel_at_period_end"], "cancel_at_period_end")
            self._set_cancel_at_period_end(sub, flag, now)
        if "cancel_at" in params:
            self._set_cancel_at(sub, cancel_at, now)
        details = params.get("cancellation_details")
        if isinstance(details, dict):
            for key in ("comment", "feedback"):
                if key in details:
                    sub["cancellation_details"][key] = details[key] or None
        if params.get("default_payment_method"):
            pm = self.load(
                params["default_payment_method"], "payment_method", "default_payment_method"
            )
            if pm.get("customer") != customer["id"]:
                raise bad_request(
                    "The payment method must be attached to the subscription's customer.",
                    "default_payment_method",
                )
            sub["default_payment_method"] = pm["id"]
        if "items" in params:
            self._update_items(sub, params["items"], now)
        if "proration_behavior" in params:
            as_enum(
                params["proration_behavior"],
                "proration_behavior",
                ("always_invoice", "create_prorations", "none"),
            )
        self.store.put(sub)
        self._emit_updated("customer.subscription.updated", before, sub)
        return sub

    def _cancel_at(self, sub: dict[str, Any], params: dict[str, Any], now: int) -> int | None:
        """The instant `cancel_at` asks for (None: `""`, no cancellation), checked as Stripe
        checks it: not with `cancel_at_period_end` in the same request, and in the future by
        the subscription's clock. `min_period_end` and `max_period_end` resolve at once (the
        sandbox's items share one period, so both are its end); later periods are allowed."""
        if "cancel_at_period_end" in params:
            raise bad_request(
                "You may only specify one of these parameters: cancel_at, cancel_at_period_end.",
                "cancel_at_period_end",
            )
        value = params["cancel_at"]
        if value == "":
            return None
        if value in ("min_period_end", "max_period_end"):
            ends = [int(i["current_period_end"]) for i in sub["items"]["data"]]
            return min(ends) if value == "min_period_end" else max(ends)
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            raise bad_request(
                f"Invalid cancel_at: {value[:40]!r} is not a Unix timestamp.", "cancel_at"
            )
        at = as_int(value, "cancel_at", maximum=MAX_TIMESTAMP)
        if at <= now:
            raise bad_request(
                "Invalid timestamp: must be an integer Unix timestamp in the future.", "cancel_at"
            )
        return at

    def _set_cancel_at(self, sub: dict[str, Any], at: int | None, now: int) -> None:
        """A cancellation scheduled for `at` (None clears it, and a period-end one too: that
        is a `cancel_at` as well); the request's time is its `canceled_at`."""
        sub["cancel_at"] = at
        sub["cancel_at_period_end"] = False
        sub["canceled_at"] = None if at is None else now
        sub["cancellation_details"]["reason"] = None if at is None else "cancellation_requested"

    def _set_cancel_at_period_end(self, sub: dict[str, Any], flag: bool, now: int) -> None:
        sub["cancel_at_period_end"] = flag
        if flag:
            sub["cancel_at"] = self._period_end(sub)
            sub["canceled_at"] = now
            sub["cancellation_details"]["reason"] = "cancellation_requested"
        else:
            sub["cancel_at"] = None
            sub["canceled_at"] = None
            sub["cancellation_details"]["reason"] = None

    def _update_items(self, sub: dict[str, Any], items: Any, now: int) -> None:
        if not isinstance(items, list):
            raise bad_request("Invalid array", "items")
        current = {i["id"]: i for i in sub["items"]["data"]}
        result = list(sub["items"]["data"])
        cadence = None
        for i, spec in enumerate(items):
            param = f"items[{i}]"
            if not isinstance(spec, dict):
                raise bad_request("Invalid hash", param)
            item_id = spec.get("id")
            if item_id is not None and item_id not in current:
                raise bad_request(
                    f"The subscription item {item_id} does not belong to this subscription.",
                    f"{param}[id]",
                )
            if item_id and as_bool(spec.get("deleted", "false"), f"{param}[deleted]"):
                result = [r for r in result if r["id"] != item_id]
                continue
            price = None
            if spec.get("price") or spec.get("plan"):
                pid = as_str(spec.get("price") or spec.get("plan"), f"{param}[price]")
                price = self.load(pid, "price", f"{param}[price]")
                if not price["active"]:
                    raise bad_request(
                        f"The price specified ({pid}) is inactive.", f"{param}[price]"
                    )
                if not price["recurring"]:
                    raise bad_request(
                        "The price specified is set to `type=one_time` but this field only "
                        "accepts prices with `type=recurring`.",
                        f"{param}[price]",
                    )
            quantity = (
                as_int(spec["quantity"], f"{param}[quantity]", minimum=0)
                if "quantity" in spec
                else None
            )
            if item_id:
                item = next(r for r in result if r["id"] == item_id)
                if price is not None:
                    item["price"] = strip_private(copy.deepcopy(price))
                    item["plan"] = plan_from_price(price)
                if quantity is not None:
                    item["quantity"] = quantity
            else:
                if price is None:
                    raise required(f"{param}[price]")
                start = self._period_start(sub)
                end = self._period_end(sub)
                result.append(self._sub_item(sub["id"], price, quantity or 1, start, end))
        for item in result:
            rec = item["price"]["recurring"]
            key = (rec["interval"], rec["interval_count"])
            if cadence is None:
                cadence = key
            elif cadence != key:
                raise bad_request(
                    "The sandbox requires every item of a subscription to share one billing "
                    "interval.",
                    "items",
                )
        if not result:
            raise bad_request("A subscription must have at least one active plan.", "items")
        if cadence is not None and sub["items"]["data"]:
            old = sub["items"]["data"][0]["price"]["recurring"]
            if (old["interval"], old["interval_count"]) != cadence:
                raise bad_request(
                    "The sandbox does not change a subscription's billing interval; create a "
                    "new subscription instead.",
                    "items",
                )
        sub["items"]["data"] = result
        sub["items"]["total_count"] = len(result)
