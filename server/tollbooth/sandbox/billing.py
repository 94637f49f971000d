"""Subscriptions, invoices and renewals at period end."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tollbooth.sandbox.catalog import Catalog
from tollbooth.sandbox.core import DEFAULT_CLOCK, LIVE_STATUSES, strip_private
from tollbooth.sandbox.objects import add_interval, list_envelope, new_id, plan_from_price
from tollbooth.sandbox.wire import (
    StripeError,
    as_int,
    missing,
)


class Billing(Catalog):
    """Subscriptions, their invoices, and what happens at a period end."""

    def _sub_item(
        self, sub_id: str, price: dict[str, Any], quantity: int, start: int, end: int
    ) -> dict[str, Any]:
        return {
            "id": new_id("si_", 14),
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": start,
            "current_period_end": end,
            "current_period_start": start,
            "discounts": [],
            "metadata": {},
            "plan": plan_from_price(price),
            "price": strip_private(copy.deepcopy(price)),
            "quantity": quantity,
            "subscription": sub_id,
            "tax_rates": [],
        }

    def _draft_invoice(
        self,
        sub: dict[str, Any],
        customer: dict[str, Any],
        now: int,
        period_start: int,
        period_end: int,
        reason: str,
        invoice_period: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        # The invoice's own period is the one that just ended (empty for a first invoice);
        # its lines carry the period being paid for.
        invoice_period = invoice_period or (now, now)
        inv_id = new_id("in_")
        invoice: dict[str, Any] = {
            "id": inv_id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "Tollbooth Sandbox",
            "account_tax_ids": None,
            "amount_due": 0,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": True,
            "automatic_tax": {
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "automatically_finalizes_at": None,
            "billing_reason": reason,
            "collection_method": "charge_automatically",
            "confirmation_secret": None,
            "created": now,
            "currency": sub["currency"],
            "custom_fields": None,
            "customer": customer["id"],
            "customer_address": None,
            "customer_email": customer.get("email"),
            "customer_name": customer.get("name"),
            "customer_phone": None,
            "customer_shipping": None,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [],
            "due_date": None,
            "effective_at": None,
            "ending_balance": None,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "lines": list_envelope([], f"/v1/invoices/{inv_id}/lines"),
            "livemode": False,
            "metadata": {},
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "parent": {
                "quote_details": None,
                "subscription_details": {
                    "metadata": copy.deepcopy(sub["metadata"]),
                    "subscription": sub["id"],
                    "subscription_proration_date": None,
                },
                "type": "subscription_details",
            },
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "payments": list_envelope([], f"/v1/invoice_payments?invoice={inv_id}"),
            "period_end": invoice_period[1],
            "period_start": invoice_period[0],
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": 0,
            "subtotal_excluding_tax": 0,
            "test_clock": customer.get("test_clock"),
            "threshold_reason": None,
            "total": 0,
            "total_discount_amounts": [],
            "total_excluding_tax": 0,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": None,
        }
        for item in sub["items"]["data"]:
            self._invoice_line(
                invoice, item["price"], item["quantity"], period_start, period_end, sub, item
            )
        self.store.put(invoice)
        self.emit("invoice.created", invoice)
        return invoice

    def _invoice_line(
        self,
        invoice: dict[str, Any],
        price: dict[str, Any],
        quantity: int,
        start: int,
        end: int,
        sub: dict[str, Any] | None,
        item: dict[str, Any] | None,
    ) -> None:
        amount = price["unit_amount"] * quantity
        product = self.store.get(price["product"]) or {"name": price["product"]}
        line = {
            "id": new_id("il_"),
            "object": "line_item",
            "amount": amount,
            "currency": price["currency"],
            "description": f"{quantity} × {product['name']}",
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": invoice["id"],
            "livemode": False,
            "metadata": {},
            "parent": {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": sub["id"],
                    "subscription_item": item["id"],
                }
                if sub and item
                else None,
                "type": "subscription_item_details" if sub and item else "invoice_item_details",
            },
            "period": {"end": end, "start": start},
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": {"price": price["id"], "product": price["product"]},
                "type": "price_details",
                "unit_amount_decimal": price["unit_amount_decimal"],
            },
            "quantity": quantity,
            "quantity_decimal": str(quantity),
            "subtotal": amount,
            "taxes": [],
        }
        invoice["lines"]["data"].append(line)
        invoice["lines"]["total_count"] = len(invoice["lines"]["data"])
        total = sum(ln["amount"] for ln in invoice["lines"]["data"])
        for field in ("subtotal", "subtotal_excluding_tax", "total", "total_excluding_tax"):
            invoice[field] = total
        invoice["amount_due"] = total
        invoice["amount_remaining"] = total

    def _finalize_invoice(self, invoice: dict[str, Any], now: int) -> None:
        customer = self.store.get(invoice["customer"]) or {}
        if customer and not customer.get("deleted"):
            seq = int(customer.get("next_invoice_sequence", 1))
            invoice["number"] = f"{customer['invoice_prefix']}-{seq:04d}"
            customer["next_invoice_sequence"] = seq + 1
            self.store.put(customer)
        invoice["status"] = "open"
        invoice["effective_at"] = now
        invoice["status_transitions"]["finalized_at"] = now
        invoice["ending_balance"] = 0
        invoice["hosted_invoice_url"] = f"{self.config.base_url}/sandbox/invoices/{invoice['id']}"
        self.store.put(invoice)
        self.emit("invoice.finalized", invoice)

    def _pay_invoice(
        self,
        invoice: dict[str, Any],
        customer: dict[str, Any],
        pm: dict[str, Any] | None,
        now: int,
        off_session: bool,
    ) -> bool:
        pi = self._new_payment_intent(
            invoice["amount_due"],
            invoice["currency"],
            customer,
            now,
            description="Subscription creation"
            if invoice["billing_reason"] == "subscription_create"
            else "Subscription update",
        )
        self.store.put(pi)
        self.emit("payment_intent.created", pi)
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        if pm is None:
            decline: str | None = "generic_decline"
            pi["last_payment_error"] = {
                "code": "payment_method_missing",
                "message": "The customer has no default payment method.",
                "type": "invalid_request_error",
            }
            self.store.put(pi)
            self.emit("payment_intent.payment_failed", pi)
        else:
            decline = self._confirm_payment(pi, pm, now, off_session)
        payment = {
            "id": new_id("inpay_"),
            "object": "invoice_payment",
            "amount_paid": 0 if decline else invoice["amount_due"],
            "amount_requested": invoice["amount_due"],
            "created": now,
            "currency": invoice["currency"],
            "invoice": invoice["id"],
            "is_default": True,
            "livemode": False,
            "payment": {"payment_intent": pi["id"], "type": "payment_intent"},
            "status": "open" if decline else "paid",
            "status_transitions": {"canceled_at": None, "paid_at": None if decline else now},
        }
        for existing in invoice["payments"]["data"]:
            existing["is_default"] = False
        invoice["payments"]["data"].insert(0, payment)
        invoice["payments"]["total_count"] = len(invoice["payments"]["data"])
        if decline:
            invoice["next_payment_attempt"] = None
            self.store.put(invoice)
            self.emit("invoice.payment_failed", invoice)
            return False
        invoice["status"] = "paid"
        invoice["amount_paid"] = invoice["amount_due"]
        invoice["amount_remaining"] = 0
        invoice["status_transitions"]["paid_at"] = now
        invoice["next_payment_attempt"] = None
        invoice["default_payment_method"] = None
        self.store.put(invoice)
        self.emit("invoice.paid", invoice)
        self.emit("invoice.payment_succeeded", invoice)
        return True

    def list_invoices(self, params: dict[str, Any]) -> dict[str, Any]:
        customer, status, sub = (
            params.get("customer"),
            params.get("status"),
            params.get("subscription"),
        )

        def keep(inv: dict[str, Any]) -> bool:
            if customer is not None and inv["customer"] != customer:
                return False
            if status is not None and inv["status"] != status:
                return False
            if sub is not None:
                details = (inv.get("parent") or {}).get("subscription_details") or {}
                return bool(details.get("subscription") == sub)
            return True

        return self.list("invoice", params, keep)

    def invoice_lines(self, invoice_id: str, params: dict[str, Any]) -> dict[str, Any]:
        invoice = self.load(invoice_id, "invoice")
        limit = as_int(params.get("limit", "10"), "limit", minimum=1, maximum=100)
        lines = invoice["lines"]["data"]
        after = params.get("starting_after")
        if after:
            ids = [ln["id"] for ln in lines]
            if after not in ids:
                raise missing("line item", after, "starting_after")
            lines = lines[ids.index(after) + 1 :]
        return list_envelope(lines[:limit], f"/v1/invoices/{invoice_id}/lines", len(lines) > limit)

    def list_subscriptions(self, params: dict[str, Any]) -> dict[str, Any]:
        customer, price = params.get("customer"), params.get("price")
        status = params.get("status")
        clock = params.get("test_clock")

        def keep(s: dict[str, Any]) -> bool:
            if customer is not None and s["customer"] != customer:
                return False
            if status is None and s["status"] == "canceled":
                return False  # Stripe leaves canceled subscriptions out unless asked
            if status not in (None, "all") and s["status"] != status:
                return False
            if clock is not None and (s.get("test_clock") or DEFAULT_CLOCK) != clock:
                return False
            return price is None or any(i["price"]["id"] == price for i in s["items"]["data"])

        return self.list("subscription", params, keep)

    def _period_end(self, sub: dict[str, Any]) -> int:
        return min(int(i["current_period_end"]) for i in sub["items"]["data"])

    def _period_start(self, sub: dict[str, Any]) -> int:
        return min(int(i["current_period_start"]) for i in sub["items"]["data"])

    def cancel_subscription(self, sub_id: str, params: dict[str, Any]) -> dict[str, Any]:
        sub = self.load(sub_id, "subscription")
        if sub["status"] == "canceled":
            raise StripeError(
                400,
                f"A canceled subscription can only update its cancellation_details and metadata."
                f" This subscription ({sub_id}) is already canceled.",
            )
        details = params.get("cancellation_details")
        if isinstance(details, dict):
            for key in ("comment", "feedback"):
                if key in details:
                    sub["cancellation_details"][key] = details[key] or None
        customer = self.store.get(sub["customer"])
        self._cancel_now(sub, self.now_for(customer), why="cancellation_requested")
        return sub

    def tick_default_clock(self) -> None:
        """Renew default-clock subscriptions whose period ended in wall-clock time."""
        self._run_until(DEFAULT_CLOCK, int(self.clock(DEFAULT_CLOCK)["frozen_time"]))

    def _run_until(
        self, clock_id: str, target: int, between: Callable[[], None] | None = None
    ) -> None:
        """Act on every period end of the clock up to `target`, one at a time, earliest
        first; `between` runs after each (`Store.breathe`, for an advance)."""
        while True:
            due: list[tuple[int, str]] = []
            for _, sub in self.store.all("subscription"):
                if (sub.get("test_clock") or DEFAULT_CLOCK) != clock_id:
                    continue
                if sub["status"] not in LIVE_STATUSES:
                    continue
                end = self._due_at(sub)
                if end <= target:
                    due.append((end, sub["id"]))
            if not due:
                return
            end, sub_id = min(due)
            clock = self.clock(clock_id)
            clock["frozen_time"] = max(int(clock["frozen_time"]), end)
            self.store.put(clock)
            self._period_ended(self.load(sub_id, "subscription"), end)
            if between is not None:
                between()

    def _due_at(self, sub: dict[str, Any]) -> int:
        """When the clock must next act on a live subscription: its period's end, or its
        `cancel_at` when that comes first (a cancellation scheduled for any instant)."""
        end = self._period_end(sub)
        return min(end, int(sub["cancel_at"])) if sub.get("cancel_at") else end

    def _period_ended(self, sub: dict[str, Any], end: int) -> None:
        """`end` is `_due_at`: the period's end (renewed), or a `cancel_at` reached (deleted)."""
        if sub["cancel_at_period_end"] or (sub.get("cancel_at") and sub["cancel_at"] <= end):
            sub["status"] = "canceled"
            sub["ended_at"] = end
            sub["canceled_at"] = sub.get("canceled_at") or end
            self.store.put(sub)
            self.emit("customer.subscription.deleted", sub)
            return
        customer = self.customer(sub["customer"], "customer")
        before = copy.deepcopy(sub)
        anchor = int(sub["billing_cycle_anchor"])
        new_end = end
        for item in sub["items"]["data"]:
            rec = item["price"]["recurring"]
            item["current_period_start"] = end
            item["current_period_end"] = add_interval(
                end, rec["interval"], rec["interval_count"], anchor
            )
            new_end = item["current_period_end"]
        invoice = self._draft_invoice(
            sub,
            customer,
            end,
            end,
            new_end,
            "subscription_cycle",
            (int(before["items"]["data"][0]["current_period_start"]), end),
        )
        sub["latest_invoice"] = invoice["id"]
        self.store.put(sub)
        self._emit_updated("customer.subscription.updated", before, sub)
        self._finalize_invoice(invoice, end)
        pm_id = (
            sub.get("default_payment_method")
            or customer["invoice_settings"]["default_payment_method"]
        )
        pm = self.store.get(pm_id) if pm_id else None
        paid = self._pay_invoice(invoice, customer, pm, end, off_session=True)
        before = copy.deepcopy(sub)
        if paid and sub["status"] != "active":
            sub["status"] = "active"
        elif not paid:
            sub["status"] = "past_due"
        if sub["status"] != before["status"]:
            self.store.put(sub)
            self._emit_updated("customer.subscription.updated", before, sub)

    def retry_open_invoices(self, customer: dict[str, Any], pm: dict[str, Any]) -> None:
        """After a new payment method: pay what is open, as Stripe's retry would."""
        for _, invoice in sorted(self.store.all("invoice")):
            if invoice["customer"] != customer["id"] or invoice["status"] != "open":
                continue
            now = self.now_for(customer)
            if not self._pay_invoice(invoice, customer, pm, now, off_session=True):
                continue
            sub_id = ((invoice.get("parent") or {}).get("subscription_details") or {}).get(
                "subscription"
            )
            sub = self.store.get(sub_id) if sub_id else None
            if sub and sub["status"] in ("past_due", "incomplete"):
                before = copy.deepcopy(sub)
                sub["status"] = "active"
                self.store.put(sub)
                self._emit_updated("customer.subscription.updated", before, sub)
