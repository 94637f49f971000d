"""Credit grants that no longer fit the account's balance (README "A paid purchase whose
credits no longer fit").

A balance is stored as NUMERIC(38, 18). A purchase is refused when it is created if its
grants would not fit, but the balance can grow before its payment is recorded, and a renewal
or an upgrade grants with no request to refuse. Such a grant could never be written: its
event would fail on every attempt. Instead the event completes without it, the payment that
bought it (when there is one) is refunded in full, and the company is told, with the reason
`CREDITS_NOT_STORABLE` and the credit type.

A refund of ours for that reason carries no Stripe `reason`: it is no duplicate payment, and
not the customer's request.
"""

from __future__ import annotations

from tollbooth.provider.client import StripeProvider
from tollbooth.provider.keys import idempotency_key

NOT_STORABLE = "CREDITS_NOT_STORABLE"


def refund(provider: StripeProvider, payment_intent: str) -> str | None:
    """Refund in full a payment whose grants cannot be stored; the refund's id (None: the
    provider reports it refunded already). One key per payment, whichever event asks."""
    key = idempotency_key("overflow-refund", payment_intent)
    return provider.refund_payment(payment_intent, idempotency=key, reason=None)
