"""Customers."""

from __future__ import annotations

import copy
from typing import Any

from tollbooth.sandbox.core import DEFAULT_CLOCK
from tollbooth.sandbox.disputes import Disputes
from tollbooth.sandbox.objects import (
    new_id,
)
from tollbooth.sandbox.wire import (
    as_str,
    bad_request,
    merge_metadata,
    missing,
)

# Stripe's longest customer fields (its API reference: "Max length").
FIELD_LIMITS = {"email": 512, "name": 256, "description": 5000, "phone": 20}


class Customers(Disputes):
    """Customers (deleting one cancels its subscriptions)."""

    def create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        clock_id = params.get("test_clock")
        if clock_id is not None:
            self.clock(as_str(clock_id, "test_clock"))
            if clock_id == DEFAULT_CLOCK:
                clock_id = None  # the default clock is implied
        customer: dict[str, Any] = {
            "id": new_id("cus_", 14),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": 0,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": None,
            "invoice_prefix": new_id("", 8).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
            "name": None,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": clock_id,
        }
        customer["created"] = self.now_for(customer)
        self._apply_customer_fields(customer, params)
        self.store.put(customer)
        self.emit("customer.created", customer)
        pm_id = params.get("payment_method")
        if pm_id:
            pm = self._payment_method_from(as_str(pm_id, "payment_method"), "payment_method")
            self._attach(pm, customer)
        return customer

    def _apply_customer_fields(self, customer: dict[str, Any], params: dict[str, Any]) -> None:
        for field, longest in FIELD_LIMITS.items():
            if field in params:
                value = as_str(params[field], field, max_len=longest)
                customer[field] = value or None
        if "preferred_locales" in params:
            customer["preferred_locales"] = list(params["preferred_locales"] or [])
        if "metadata" in params:
            customer["metadata"] = merge_metadata(customer["metadata"], params["metadata"])
        settings = params.get("invoice_settings")
        if isinstance(settings, dict) and "default_payment_method" in settings:
            pm_id = settings["default_payment_method"]
            if pm_id:
                pm = self.load(pm_id, "payment_method", "invoice_settings[default_payment_method]")
                if pm.get("customer") != customer["id"]:
                    raise bad_request(
                        "The customer does not have a payment method with the ID "
                        f"{pm_id}. The payment method must be attached to the customer.",
                        "invoice_settings[default_payment_method]",
                        code="resource_missing",
                    )
                customer["invoice_settings"]["default_payment_method"] = pm_id
            else:
                customer["invoice_settings"]["default_payment_method"] = None

    def update_customer(self, customer_id: str, params: dict[str, Any]) -> dict[str, Any]:
        customer = self.customer(customer_id)
        if customer.get("deleted"):  # Stripe: retrieve shows the tombstone, update is missing
            raise missing("customer", customer_id)
        before = copy.deepcopy(customer)
        self._apply_customer_fields(customer, params)
        self.store.put(customer)
        self._emit_updated("customer.updated", before, customer)
        return customer

    def delete_customer(self, customer_id: str) -> dict[str, Any]:
        customer = self.customer(customer_id)
        if customer.get("deleted"):
            raise missing("customer", customer_id)
        for _, sub in self.store.all("subscription"):
            if sub["customer"] == customer_id and sub["status"] not in ("canceled",):
                self._cancel_now(sub, self.now_for(customer), why="cancellation_requested")
        self.emit("customer.deleted", customer)
        tombstone = {"id": customer_id, "object": "customer", "deleted": True}
        self.store.put(tombstone)
        return tombstone

    def list_customers(self, params: dict[str, Any]) -> dict[str, Any]:
        email = params.get("email")
        clock = params.get("test_clock")

        def keep(c: dict[str, Any]) -> bool:
            if c.get("deleted"):
                return False
            if email is not None and c.get("email") != email:
                return False
            return clock is None or (c.get("test_clock") or DEFAULT_CLOCK) == clock

        return self.list("customer", params, keep)
