"""Payment methods from test cards, charges, PaymentIntents, SetupIntents and refunds."""

from __future__ import annotations

import copy
from typing import Any

from tollbooth.sandbox.core import Core, strip_private
from tollbooth.sandbox.objects import (
    DECLINE_MESSAGES,
    TEST_CARDS,
    TEST_PM_TOKENS,
    luhn_ok,
    new_id,
    normalise_card,
)
from tollbooth.sandbox.wire import (
    StripeError,
    as_bool,
    as_enum,
    as_int,
    as_str,
    bad_request,
    check_currency,
    check_currency_amount,
    merge_metadata,
    required,
)

# Stripe's cancel: the statuses it accepts, and the reasons it knows.
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


class Payments(Core):
    """Test-card payment methods, charges, PaymentIntents and SetupIntents."""

    def card_payment_method(
        self, raw_number: str, *, email: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        number = normalise_card(raw_number)
        if not 12 <= len(number) <= 19 or not luhn_ok(number):
            raise StripeError(
                402,
                "Your card number is incorrect.",
                type="card_error",
                code="incorrect_number",
                param="number",
            )
        card = TEST_CARDS.get(number)
        if card is None:
            raise StripeError(
                402,
                "Your card was declined. Your request was in test mode, but used a non test "
                "(live) card. For a list of valid test cards, visit: "
                "https://stripe.com/docs/testing.",
                type="card_error",
                code="card_declined",
                extra={"decline_code": "live_mode_test_card"},
            )
        pm = {
            "id": new_id("pm_"),
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": {
                    "city": None,
                    "country": None,
                    "line1": None,
                    "line2": None,
                    "postal_code": None,
                    "state": None,
                },
                "email": email,
                "name": name,
                "phone": None,
                "tax_id": None,
            },
            "card": {
                "brand": card.brand,
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "pass",
                },
                "country": "US",
                "display_brand": card.brand,
                "exp_month": 12,
                "exp_year": 2034,
                "fingerprint": new_id("", 16),
                "funding": "credit",
                "last4": number[-4:],
                "networks": {"available": [card.brand], "preferred": None},
                "wallet": None,
            },
            "created": self.wall(),
            "customer": None,
            "livemode": False,
            "metadata": {},
            "type": "card",
            "_behaviour": card.behaviour,
            "_decline_code": card.decline_code,
        }
        self.store.put(pm)
        return pm

    def _payment_method_from(self, value: str, param: str) -> dict[str, Any]:
        if value in TEST_PM_TOKENS:
            return self.card_payment_method(TEST_PM_TOKENS[value])
        return self.load(value, "payment_method", param)

    def _attach(self, pm: dict[str, Any], customer: dict[str, Any]) -> None:
        if pm.get("customer") == customer["id"]:
            return
        if pm.get("customer"):
            raise bad_request(
                "The payment method you provided has already been attached to a customer.",
                "payment_method",
            )
        pm["customer"] = customer["id"]
        self.store.put(pm)
        self.emit("payment_method.attached", pm)

    def _set_default_pm(self, customer: dict[str, Any], pm: dict[str, Any]) -> None:
        if customer["invoice_settings"]["default_payment_method"] == pm["id"]:
            return
        before = copy.deepcopy(customer)
        customer["invoice_settings"]["default_payment_method"] = pm["id"]
        self.store.put(customer)
        self._emit_updated("customer.updated", before, customer)

    def _charge_outcome(self, pm: dict[str, Any] | None, off_session: bool) -> str | None:
        """None when the charge succeeds, else the decline code."""
        if pm is None:
            return "generic_decline"
        behaviour = pm.get("_behaviour", "ok")
        if behaviour == "decline" or (behaviour == "fail_later" and off_session):
            return pm.get("_decline_code") or "generic_decline"
        return None

    def _card_error(self, decline: str, **extra: Any) -> StripeError:
        return StripeError(
            402,
            DECLINE_MESSAGES.get(decline, "Your card was declined."),
            type="card_error",
            code="card_declined",
            extra={"decline_code": decline, **extra},
            commit=True,
        )

    def _new_payment_intent(
        self,
        amount: int,
        currency: str,
        customer: dict[str, Any] | None,
        now: int,
        *,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        pi_id = new_id("pi_")
        return {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic",
            "client_secret": f"{pi_id}_secret_{new_id('', 24)}",
            "confirmation_method": "automatic",
            "created": now,
            "currency": currency,
            "customer": customer["id"] if customer else None,
            "description": description,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata or {},
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": None,
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "processing": None,
            "receipt_email": None,
            "review": None,
            "setup_future_usage": None,
            "shipping": None,
            "source": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": "requires_payment_method",
            "transfer_data": None,
            "transfer_group": None,
        }

    def _confirm_payment(
        self, pi: dict[str, Any], pm: dict[str, Any], now: int, off_session: bool
    ) -> str | None:
        """Charge `pm` for the intent; returns the decline code or None. Emits the events."""
        decline = self._charge_outcome(pm, off_session)
        charge = {
            "id": new_id("ch_"),
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": 0 if decline else pi["amount"],
            "amount_refunded": 0,
            "captured": not decline,
            "created": now,
            "currency": pi["currency"],
            "customer": pi["customer"],
            "description": pi["description"],
            "disputed": False,
            "failure_code": "card_declined" if decline else None,
            "failure_message": DECLINE_MESSAGES.get(decline or "", None) if decline else None,
            "livemode": False,
            "metadata": pi["metadata"],
            "outcome": {
                "network_status": "declined_by_network" if decline else "approved_by_network",
                "reason": decline,
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline."
                if decline
                else "Payment complete.",
                "type": "issuer_declined" if decline else "authorized",
            },
            "paid": not decline,
            "payment_intent": pi["id"],
            "payment_method": pm["id"],
            "refunded": False,
            "status": "failed" if decline else "succeeded",
        }
        self.store.put(charge)
        pi["payment_method"] = pm["id"]
        pi["latest_charge"] = charge["id"]
        if decline:
            pi["status"] = "requires_payment_method"
            pi["last_payment_error"] = {
                "charge": charge["id"],
                "code": "card_declined",
                "decline_code": decline,
                "message": DECLINE_MESSAGES.get(decline, "Your card was declined."),
                "payment_method": strip_private(copy.deepcopy(pm)),
                "type": "card_error",
            }
            self.store.put(pi)
            self.emit("charge.failed", charge)
            self.emit("payment_intent.payment_failed", pi)
        else:
            pi["status"] = "succeeded"
            pi["amount_received"] = pi["amount"]
            pi["last_payment_error"] = None
            self.store.put(pi)
            self.emit("charge.succeeded", charge)
            self.emit("payment_intent.succeeded", pi)
        return decline

    def create_payment_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        if "amount" not in params:
            raise required("amount")
        if "currency" not in params:
            raise required("currency")
        amount = as_int(params["amount"], "amount", minimum=1, maximum=99999999)
        currency = check_currency(as_str(params["currency"], "currency"), "currency")
        check_currency_amount(amount, currency, "amount")
        customer = self.customer(params["customer"], "customer") if params.get("customer") else None
        pi = self._new_payment_intent(
            amount,
            currency,
            customer,
            self.now_for(customer),
            description=as_str(params.get("description", ""), "description") or None,
            metadata=merge_metadata({}, params.get("metadata", {})),
        )
        if params.get("receipt_email"):
            pi["receipt_email"] = as_str(params["receipt_email"], "receipt_email")
        if params.get("setup_future_usage"):
            pi["setup_future_usage"] = as_enum(
                params["setup_future_usage"], "setup_future_usage", ("on_session", "off_session")
            )
        if params.get("payment_method"):
            pm = self._payment_method_from(
                as_str(params["payment_method"], "payment_method"), "payment_method"
            )
            pi["payment_method"] = pm["id"]
            pi["status"] = "requires_confirmation"
        self.store.put(pi)
        self.emit("payment_intent.created", pi)
        if as_bool(params.get("confirm", "false"), "confirm"):
            off = as_bool(params.get("off_session", "false"), "off_session")
            return self.confirm_payment_intent(pi["id"], {}, off_session=off)
        return pi

    def confirm_payment_intent(
        self, pi_id: str, params: dict[str, Any], off_session: bool | None = None
    ) -> dict[str, Any]:
        pi = self.load(pi_id, "payment_intent")
        if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
            raise bad_request(
                f"You cannot confirm this PaymentIntent because it has a status of {pi['status']}.",
                code="payment_intent_unexpected_state",
            )
        if params.get("payment_method"):
            pm = self._payment_method_from(
                as_str(params["payment_method"], "payment_method"), "payment_method"
            )
        elif pi.get("payment_method"):
            pm = self.load(pi["payment_method"], "payment_method")
        else:
            raise bad_request(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                "payment_method",
                code="payment_intent_unexpected_state",
            )
        if off_session is None:
            off_session = as_bool(params.get("off_session", "false"), "off_session")
        customer = self.store.get(pi["customer"]) if pi.get("customer") else None
        decline = self._confirm_payment(pi, pm, self.now_for(customer), off_session)
        if decline:
            raise self._card_error(
                decline, payment_intent=self.render(pi), charge=pi["latest_charge"]
            )
        if customer and pi.get("setup_future_usage"):
            self._attach(pm, customer)
        return pi

    def cancel_payment_intent(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Stripe's cancel: an intent not yet paid (nor being paid) moves to `canceled` for good
        and `payment_intent.canceled` is sent; any other is refused as Stripe refuses it."""
        pi = self.load(pi_id, "payment_intent")
        if pi["status"] not in CANCELABLE:
            raise bad_request(
                "You cannot cancel this PaymentIntent because it has a status of"
                f" {pi['status']}. Only a PaymentIntent with one of the following statuses may be"
                f" canceled: {', '.join(CANCELABLE)}.",
                code="payment_intent_unexpected_state",
            )
        reason = params.get("cancellation_reason")
        customer = self.store.get(pi["customer"]) if pi.get("customer") else None
        pi["status"] = "canceled"
        pi["canceled_at"] = self.now_for(customer)
        pi["cancellation_reason"] = (
            None if reason is None else as_enum(reason, "cancellation_reason", CANCELLATION_REASONS)
        )
        self.store.put(pi)
        self.emit("payment_intent.canceled", pi)
        return pi

    def _new_setup_intent(self, customer: dict[str, Any] | None, now: int) -> dict[str, Any]:
        seti_id = new_id("seti_")
        return {
            "id": seti_id,
            "object": "setup_intent",
            "application": None,
            "automatic_payment_methods": None,
            "cancellation_reason": None,
            "client_secret": f"{seti_id}_secret_{new_id('', 24)}",
            "created": now,
            "customer": customer["id"] if customer else None,
            "description": None,
            "flow_directions": None,
            "last_setup_error": None,
            "latest_attempt": None,
            "livemode": False,
            "mandate": None,
            "metadata": {},
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": None,
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "single_use_mandate": None,
            "status": "requires_payment_method",
            "usage": "off_session",
        }

    def create_setup_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = self.customer(params["customer"], "customer") if params.get("customer") else None
        seti = self._new_setup_intent(customer, self.now_for(customer))
        if "metadata" in params:
            seti["metadata"] = merge_metadata({}, params["metadata"])
        if "description" in params:
            seti["description"] = as_str(params["description"], "description") or None
        if "usage" in params:
            seti["usage"] = as_enum(params["usage"], "usage", ("on_session", "off_session"))
        if params.get("payment_method"):
            pm = self._payment_method_from(
                as_str(params["payment_method"], "payment_method"), "payment_method"
            )
            seti["payment_method"] = pm["id"]
            seti["status"] = "requires_confirmation"
        self.store.put(seti)
        self.emit("setup_intent.created", seti)
        if as_bool(params.get("confirm", "false"), "confirm"):
            return self.confirm_setup_intent(seti["id"], {})
        return seti

    def confirm_setup_intent(self, seti_id: str, params: dict[str, Any]) -> dict[str, Any]:
        seti = self.load(seti_id, "setup_intent")
        if seti["status"] not in ("requires_payment_method", "requires_confirmation"):
            raise bad_request(
                f"You cannot confirm this SetupIntent because it has a status of {seti['status']}.",
                code="setup_intent_unexpected_state",
            )
        if params.get("payment_method"):
            pm = self._payment_method_from(
                as_str(params["payment_method"], "payment_method"), "payment_method"
            )
        elif seti.get("payment_method"):
            pm = self.load(seti["payment_method"], "payment_method")
        else:
            raise bad_request(
                "You cannot confirm this SetupIntent because it's missing a payment method.",
                "payment_method",
                code="setup_intent_unexpected_state",
            )
        seti["payment_method"] = pm["id"]
        if pm.get("_behaviour") == "decline":
            seti["status"] = "requires_payment_method"
            seti["last_setup_error"] = {
                "code": "card_declined",
                "decline_code": pm.get("_decline_code"),
                "message": "Your card was declined.",
                "type": "card_error",
            }
            self.store.put(seti)
            self.emit("setup_intent.setup_failed", seti)
            raise self._card_error(
                pm.get("_decline_code") or "generic_decline", setup_intent=self.render(seti)
            )
        seti["status"] = "succeeded"
        seti["last_setup_error"] = None
        self.store.put(seti)
        if seti.get("customer"):
            self._attach(pm, self.customer(seti["customer"], "customer"))
        self.emit("setup_intent.succeeded", seti)
        return seti

    # -- refunds ----------------------------------------------------------------------------

    def create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        """Refund a succeeded charge (named, or the PaymentIntent's latest), all of what remains
        or `amount`; emits `refund.created` and `charge.refunded`, signed like every event."""
        reason = params.get("reason") or None  # Stripe's three, or none
        if reason is not None:
            reason = as_enum(reason, "reason", REFUND_REASONS)
        if params.get("charge"):
            charge = self.load(as_str(params["charge"], "charge"), "charge", "charge")
        elif params.get("payment_intent"):
            pi = self.load(
                as_str(params["payment_intent"], "payment_intent"),
                "payment_intent",
                "payment_intent",
            )
            if not pi.get("latest_charge"):
                raise bad_request("This PaymentIntent has no charge to refund.", "payment_intent")
            charge = self.load(pi["latest_charge"], "charge", "payment_intent")
        else:
            raise bad_request("One of charge or payment_intent is required.", "charge")
        if charge["status"] != "succeeded":
            raise bad_request("This charge did not succeed; there is nothing to refund.", "charge")
        if charge.get("disputed"):
            raise bad_request(
                f"Charge {charge['id']} has been disputed.", "charge", code="charge_disputed"
            )
        remaining = int(charge["amount_captured"]) - int(charge["amount_refunded"])
        if remaining <= 0:
            raise bad_request(
                f"Charge {charge['id']} has already been refunded.",
                "charge",
                code="charge_already_refunded",
            )
        amount = remaining
        if "amount" in params:
            amount = as_int(params["amount"], "amount", minimum=1, maximum=remaining)
            check_currency_amount(amount, charge["currency"], "amount")
        customer = self.store.get(charge["customer"]) if charge.get("customer") else None
        now = self.now_for(customer)
        refund = {
            "id": new_id("re_"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": now,
            "currency": charge["currency"],
            "metadata": merge_metadata({}, params["metadata"]) if "metadata" in params else {},
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "status": "succeeded",
        }
        self.store.put(refund)
        charge["amount_refunded"] = int(charge["amount_refunded"]) + amount
        charge["refunded"] = charge["amount_refunded"] >= int(charge["amount_captured"])
        self.store.put(charge)
        self.emit("refund.created", refund)
        self.emit("charge.refunded", charge)
        return refund
