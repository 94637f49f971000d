"""Disputes (chargebacks) on charges, as Stripe test mode has them.

Stripe opens a dispute when a cardholder questions a charge with their bank; there is no API to
open one (test mode does it for special cards), so the sandbox has its own test helper that
opens one on a succeeded charge. Closing follows Stripe: `POST /v1/disputes/{id}/close` accepts
the dispute (it is `lost`), and the sandbox's helper settles it either way (`won` or `lost`),
as the bank's decision would. Each change emits Stripe's event with the dispute as its object:
`charge.dispute.created` on opening, `charge.dispute.closed` when it is won or lost.
"""

from __future__ import annotations

from typing import Any

from tollbooth.sandbox.objects import new_id
from tollbooth.sandbox.payments import Payments
from tollbooth.sandbox.wire import as_enum, bad_request

# Stripe's reasons a cardholder gives (a subset: the ones a test asks for).
REASONS = ("fraudulent", "general", "duplicate", "product_not_received", "subscription_canceled")
OPEN = ("warning_needs_response", "warning_under_review", "needs_response", "under_review")
CLOSED = ("won", "lost")


class Disputes(Payments):
    """Disputes of charges: opened by a test helper, closed by Stripe's close or a helper."""

    def open_dispute(self, charge_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """A dispute of the whole charge, `needs_response`; emits `charge.dispute.created`."""
        charge = self.load(charge_id, "charge")
        if charge["status"] != "succeeded":
            raise bad_request("Only a succeeded charge can be disputed.", "charge")
        if charge.get("_dispute"):
            raise bad_request(f"Charge {charge_id} has already been disputed.", "charge")
        reason = as_enum(params.get("reason", "general"), "reason", REASONS)
        customer = self.store.get(charge["customer"]) if charge.get("customer") else None
        now = self.now_for(customer)
        dispute = {
            "id": new_id("dp_"),
            "object": "dispute",
            "amount": int(charge["amount_captured"]),
            "balance_transactions": [],
            "charge": charge["id"],
            "created": now,
            "currency": charge["currency"],
            "enhanced_eligibility_types": [],
            "evidence": {},
            "evidence_details": {
                "due_by": now + 7 * 86400,
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
            },
            "is_charge_refundable": False,
            "livemode": False,
            "metadata": {},
            "payment_intent": charge.get("payment_intent"),
            "reason": reason,
            "status": "needs_response",
        }
        self.store.put(dispute)
        charge["disputed"] = True
        charge["_dispute"] = dispute["id"]
        self.store.put(charge)
        self.emit("charge.dispute.created", dispute)
        return dispute

    def close_dispute(self, dispute_id: str, status: str = "lost") -> dict[str, Any]:
        """Settle an open dispute as `won` or `lost`; emits `charge.dispute.closed`. Stripe's
        own close (accepting the dispute) is `lost`."""
        dispute = self.load(dispute_id, "dispute")
        status = as_enum(status, "status", CLOSED)
        if dispute["status"] not in OPEN:
            raise bad_request(
                f"Dispute {dispute_id} is already closed ({dispute['status']}).", "dispute"
            )
        dispute["status"] = status
        self.store.put(dispute)
        self.emit("charge.dispute.closed", dispute)
        return dispute
