"""Checkout Sessions: creation, completion in each mode, expiry."""

from __future__ import annotations

import copy
from typing import Any

from tollbooth.sandbox.core import check_url, strip_private
from tollbooth.sandbox.objects import (
    DEFAULT_CARD,
    add_interval,
    list_envelope,
    new_id,
)
from tollbooth.sandbox.subscription_updates import SubscriptionUpdates
from tollbooth.sandbox.wire import (
    StripeError,
    as_enum,
    as_int,
    as_str,
    bad_request,
    check_currency,
    merge_metadata,
    missing,
    refuse_unsupported,
    required,
)

# Stripe's limit on a checkout session's client_reference_id ("can be up to 200 characters");
# a longer one is refused, as Stripe refuses it.
MAX_CLIENT_REFERENCE = 200

# Parameters the pinned API knows but the sandbox does not model: refused rather than ignored,
# so that a test never passes on behaviour the sandbox did not implement.
CHECKOUT_UNSUPPORTED = (
    ("discounts",),
    ("subscription_data", "trial_period_days"),
    ("subscription_data", "trial_end"),
    ("subscription_data", "billing_cycle_anchor"),
    ("automatic_tax", "enabled"),
    ("shipping_options",),
    ("optional_items",),
)


class Checkout(SubscriptionUpdates):
    """Checkout Sessions; completing one is what the hosted page and the helper do."""

    def create_checkout_session(self, params: dict[str, Any]) -> dict[str, Any]:
        if "mode" not in params:
            raise required("mode")
        mode = as_enum(params["mode"], "mode", ("payment", "subscription", "setup"))
        refuse_unsupported(params, CHECKOUT_UNSUPPORTED)
        ui_mode = params.get("ui_mode", "hosted")
        if ui_mode != "hosted":
            raise bad_request(
                "The sandbox serves hosted Checkout only (ui_mode=hosted).", "ui_mode"
            )
        customer = None
        if params.get("customer"):
            customer = self.customer(as_str(params["customer"], "customer"), "customer")
            if params.get("customer_email"):
                raise bad_request(
                    "You may only specify one of these parameters: customer, customer_email.",
                    "customer_email",
                )
        items = params.get("line_items")
        lines: list[dict[str, Any]] = []
        if mode == "setup":
            if items:
                raise bad_request("You cannot pass `line_items` in `setup` mode.", "line_items")
        else:
            if not isinstance(items, list) or not items:
                raise required("line_items")
            for i, item in enumerate(items):
                lines.append(self._checkout_line(item, i, mode))
            currencies = {line["currency"] for line in lines}
            if len(currencies) > 1:
                raise bad_request("All line items must use the same currency.", "line_items")
            if mode == "subscription":
                recurring = [ln["price"]["recurring"] for ln in lines if ln["price"]["recurring"]]
                if not recurring:
                    raise bad_request(
                        "You must provide at least one recurring price in `subscription` mode "
                        "when using prices.",
                        "line_items",
                    )
                cadence = {(r["interval"], r["interval_count"]) for r in recurring}
                if len(cadence) > 1:
                    raise bad_request(
                        "Checkout does not support multiple prices with different billing "
                        "intervals.",
                        "line_items",
                    )
            elif any(ln["price"]["recurring"] for ln in lines):
                raise bad_request(
                    "You specified `payment` mode but passed a recurring price. Either switch to "
                    "`subscription` mode or use only one-time prices.",
                    "line_items",
                )
        # Checked as a price's is (a setup session's own; a payment one's, its prices').
        asked = None
        if "currency" in params:
            asked = check_currency(as_str(params["currency"], "currency"), "currency")
        currency = lines[0]["currency"] if lines else asked
        total = sum(ln["amount_total"] for ln in lines)
        now = self.now_for(customer)
        session_id = new_id("cs_test_", 58)
        metadata = merge_metadata({}, params.get("metadata", {}))
        session: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "adaptive_pricing": {"enabled": False},
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": total if lines else None,
            "amount_total": total if lines else None,
            "automatic_tax": {
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "billing_address_collection": params.get("billing_address_collection"),
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "client_secret": None,
            "collected_information": None,
            "consent": None,
            "consent_collection": None,
            "created": now,
            "currency": currency,
            "currency_conversion": None,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": customer["id"] if customer else None,
            "customer_creation": None
            if customer
            else (
                "always" if mode != "payment" else params.get("customer_creation", "if_required")
            ),
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "discounts": [],
            "expires_at": now + 24 * 3600,
            "invoice": None,
            "invoice_creation": {"enabled": False, "invoice_data": None}
            if mode == "payment"
            else None,
            "livemode": False,
            "locale": params.get("locale"),
            "metadata": metadata,
            "mode": mode,
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": params.get("payment_method_collection", "always"),
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
            "phone_number_collection": {"enabled": False},
            "recovered_from": None,
            "saved_payment_method_options": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": "open",
            "submit_type": params.get("submit_type"),
            "subscription": None,
            "success_url": params.get("success_url"),
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"{self.config.base_url}/sandbox/checkout/{session_id}",
            "_line_items": lines,
            "_subscription_data": params.get("subscription_data") or {},
            "_payment_intent_data": params.get("payment_intent_data") or {},
            "_setup_intent_data": params.get("setup_intent_data") or {},
        }
        for field in ("success_url", "cancel_url", "client_reference_id", "customer_email"):
            if session[field] is not None:
                limit = MAX_CLIENT_REFERENCE if field == "client_reference_id" else 5000
                session[field] = as_str(session[field], field, max_len=limit)
        for field in ("success_url", "cancel_url"):
            if session[field] is not None:
                check_url(session[field], field)
        if params.get("expires_at"):
            expires = as_int(params["expires_at"], "expires_at")
            if not now + 1800 <= expires <= now + 24 * 3600:
                raise bad_request(
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                    "Checkout Session creation.",
                    "expires_at",
                )
            session["expires_at"] = expires
        self.store.put(session)
        return session

    def _checkout_line(self, item: Any, i: int, mode: str) -> dict[str, Any]:
        param = f"line_items[{i}]"
        if not isinstance(item, dict):
            raise bad_request("Invalid line item", param)
        if item.get("price"):
            price = self.load(as_str(item["price"], f"{param}[price]"), "price", f"{param}[price]")
            if not price["active"]:
                raise bad_request(
                    f"The price specified ({price['id']}) is inactive. This field only accepts "
                    "active prices.",
                    f"{param}[price]",
                )
        elif isinstance(item.get("price_data"), dict):
            data = item["price_data"]
            spec = {k: v for k, v in data.items() if k != "product_data"}
            if "product_data" in data:
                spec["product_data"] = data["product_data"]
            price = self.create_price(spec)
        else:
            raise required(f"{param}[price]")
        if "quantity" not in item:
            raise required(f"{param}[quantity]")
        quantity = as_int(item["quantity"], f"{param}[quantity]", minimum=1, maximum=999999)
        product = self.load(price["product"], "product")
        amount = price["unit_amount"] * quantity
        return {
            "id": new_id("li_"),
            "object": "item",
            "amount_discount": 0,
            "amount_subtotal": amount,
            "amount_tax": 0,
            "amount_total": amount,
            "currency": price["currency"],
            "description": product["name"],
            "metadata": {},
            "price": strip_private(price),
            "quantity": quantity,
        }

    def list_line_items(self, session_id: str, params: dict[str, Any]) -> dict[str, Any]:
        limit = as_int(params.get("limit", "10"), "limit", minimum=1, maximum=100)
        session = self.load(session_id, "checkout.session")
        lines = session.get("_line_items", [])
        after = params.get("starting_after")
        if after:
            ids = [ln["id"] for ln in lines]
            if after not in ids:
                raise missing("line item", after, "starting_after")
            lines = lines[ids.index(after) + 1 :]
        envelope = list_envelope(
            copy.deepcopy(lines[:limit]),
            f"/v1/checkout/sessions/{session_id}/line_items",
            len(lines) > limit,
        )
        for path in params.get("expand", []):
            if path.startswith("data."):
                for line in envelope["data"]:
                    self._expand(line, path.removeprefix("data.").split("."), path)
        return envelope

    def list_checkout_sessions(self, params: dict[str, Any]) -> dict[str, Any]:
        filters = {
            k: params[k]
            for k in ("customer", "payment_intent", "subscription", "status")
            if k in params
        }

        def keep(s: dict[str, Any]) -> bool:
            return all(s.get(k) == v for k, v in filters.items())

        return self.list("checkout.session", params, keep)

    def expire_checkout_session(self, session_id: str) -> dict[str, Any]:
        session = self.load(session_id, "checkout.session")
        if session["status"] != "open":
            raise StripeError(
                400, 'Only Checkout Sessions with a status in ["open"] can be expired.'
            )
        session["status"] = "expired"
        session["url"] = None
        self.store.put(session)
        self.emit("checkout.session.expired", session)
        return session

    def expire_due_sessions(self) -> None:
        """Open Checkout Sessions past `expires_at` expire, as Stripe expires them."""
        for _, session in self.store.all("checkout.session"):
            if session["status"] != "open":
                continue
            customer = self.store.get(session["customer"]) if session["customer"] else None
            if int(session["expires_at"]) <= self.now_for(customer):
                self.expire_checkout_session(session["id"])

    def complete_checkout_session(
        self,
        session_id: str,
        card_number: str = DEFAULT_CARD,
        *,
        email: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Pay (or save the card) as the hosted page does. A decline raises a 402 and commits."""
        session = self.load(session_id, "checkout.session")
        if session["status"] != "open":
            raise bad_request(
                f"This Checkout Session is no longer open (status: {session['status']}).",
                code="checkout_session_not_open",
            )
        customer = self.store.get(session["customer"]) if session["customer"] else None
        if customer is not None and customer.get("deleted"):
            # As Stripe refuses a deleted customer (DeleteCustomer while its checkout is
            # open): a 400, nothing paid or made; before, the stub's missing fields were a 500.
            raise bad_request(
                f"No such customer: '{customer['id']}'", "customer", code="resource_missing"
            )
        email = email or (customer or {}).get("email") or session.get("customer_email")
        email = email or "sandbox@example.com"
        mode = session["mode"]
        # A no-cost order (Stripe, since 2023-08-16): nothing is charged, no PaymentIntent.
        free = mode == "payment" and not session.get("amount_total")
        pm = self.card_payment_method(card_number, email=email, name=name)
        decline = None if free else self._charge_outcome(pm, off_session=False)
        if decline and mode == "payment":
            # The failed attempt is recorded (a PaymentIntent and its events); nothing else is.
            self._complete_payment(session, customer, pm, self.now_for(customer))
        if decline:
            # No customer, subscription or saved card comes out of a declined attempt.
            raise self._card_error(
                decline, payment_method=strip_private(copy.deepcopy(pm))
            ).rolled_back()
        if customer is None and (mode != "payment" or session["customer_creation"] == "always"):
            customer = self.create_customer({"email": email, **({"name": name} if name else {})})
            session["customer"] = customer["id"]
        now = self.now_for(customer)
        if mode == "payment":
            if not free:
                self._complete_payment(session, customer, pm, now)
        elif mode == "subscription":
            self._complete_subscription(session, customer, pm, now)  # type: ignore[arg-type]
        else:
            self._complete_setup(session, customer, pm, now)  # type: ignore[arg-type]
        session["status"] = "complete"
        session["url"] = None
        session["customer_details"] = {
            "address": None,
            "business_name": None,
            "email": email,
            "individual_name": None,
            "name": name,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        }
        if mode != "setup":
            # A plan whose first invoice is 0 charges nothing either (Stripe says so too).
            nothing = free or (mode == "subscription" and not session.get("amount_total"))
            session["payment_status"] = "no_payment_required" if nothing else "paid"
        self.store.put(session)
        self.emit("checkout.session.completed", session)
        return session

    def _decline_on_page(
        self, session: dict[str, Any], pm: dict[str, Any], decline: str, pi: dict[str, Any] | None
    ) -> StripeError:
        extra: dict[str, Any] = {"payment_method": strip_private(copy.deepcopy(pm))}
        if pi is not None:
            extra["payment_intent"] = self.render(pi)
        return self._card_error(decline, **extra)

    def _complete_payment(
        self,
        session: dict[str, Any],
        customer: dict[str, Any] | None,
        pm: dict[str, Any],
        now: int,
    ) -> None:
        data = session["_payment_intent_data"]
        earlier = self.store.get(session["payment_intent"]) if session["payment_intent"] else None
        if earlier is not None and earlier["status"] == "requires_payment_method":
            pi = earlier  # a retry after a decline reuses the session's PaymentIntent
            pi["customer"] = customer["id"] if customer else pi["customer"]
        else:
            pi = self._new_payment_intent(
                session["amount_total"],
                session["currency"],
                customer,
                now,
                description=data.get("description"),
                metadata=merge_metadata({}, data.get("metadata", {})),
            )
            if data.get("setup_future_usage"):
                pi["setup_future_usage"] = data["setup_future_usage"]
            self.store.put(pi)
            self.emit("payment_intent.created", pi)
        decline = self._confirm_payment(pi, pm, now, off_session=False)
        session["payment_intent"] = pi["id"]
        if decline:
            self.store.put(session)
            raise self._decline_on_page(session, pm, decline, pi)
        if customer is not None:
            self._attach(pm, customer)

    def _complete_setup(
        self, session: dict[str, Any], customer: dict[str, Any], pm: dict[str, Any], now: int
    ) -> None:
        seti = self._new_setup_intent(customer, now)
        seti["metadata"] = merge_metadata({}, session["_setup_intent_data"].get("metadata", {}))
        seti["payment_method"] = pm["id"]
        self.store.put(seti)
        self.emit("setup_intent.created", seti)
        seti["status"] = "succeeded"
        self.store.put(seti)
        self._attach(pm, customer)
        self.emit("setup_intent.succeeded", seti)
        session["setup_intent"] = seti["id"]

    def _complete_subscription(
        self, session: dict[str, Any], customer: dict[str, Any], pm: dict[str, Any], now: int
    ) -> None:
        self._attach(pm, customer)
        self._set_default_pm(customer, pm)
        lines = session["_line_items"]
        recurring = [ln for ln in lines if ln["price"]["recurring"]]
        one_time = [ln for ln in lines if not ln["price"]["recurring"]]
        data = session["_subscription_data"]
        sub_id = new_id("sub_")
        rec = recurring[0]["price"]["recurring"]
        period_end = add_interval(now, rec["interval"], rec["interval_count"], now)
        items = [
            self._sub_item(sub_id, ln["price"], ln["quantity"], now, period_end) for ln in recurring
        ]
        sub: dict[str, Any] = {
            "id": sub_id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": now,
            "billing_cycle_anchor_config": None,
            "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
            "billing_thresholds": None,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": "charge_automatically",
            "created": now,
            "currency": session["currency"],
            "customer": customer["id"],
            "days_until_due": None,
            "default_payment_method": pm["id"],
            "default_source": None,
            "default_tax_rates": [],
            "description": data.get("description"),
            "discounts": [],
            "ended_at": None,
            "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
            "items": list_envelope(items, f"/v1/subscription_items?subscription={sub_id}"),
            "latest_invoice": None,
            "livemode": False,
            "metadata": merge_metadata({}, data.get("metadata", {})),
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {
                "payment_method_options": None,
                "payment_method_types": None,
                "save_default_payment_method": "off",
            },
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": now,
            "status": "incomplete",
            "test_clock": customer.get("test_clock"),
            "transfer_data": None,
            "trial_end": None,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": None,
        }
        sub["items"]["total_count"] = len(items)
        invoice = self._draft_invoice(sub, customer, now, now, period_end, "subscription_create")
        for line in one_time:
            self._invoice_line(invoice, line["price"], line["quantity"], now, now, None, None)
        sub["latest_invoice"] = invoice["id"]
        self.store.put(sub)
        self.emit("customer.subscription.created", sub)
        self._finalize_invoice(invoice, now)
        paid = self._pay_invoice(invoice, customer, pm, now, off_session=False)
        before = copy.deepcopy(sub)
        sub["status"] = "active" if paid else "incomplete"
        self.store.put(sub)
        self._emit_updated("customer.subscription.updated", before, sub)
        session["subscription"] = sub_id
        session["invoice"] = invoice["id"]
