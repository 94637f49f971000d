"""What the fulfilment guards of a paid purchase share (`checkout.once` for a checkout,
`payments.guard` for a payment intent): a payment that cannot be recorded, because it buys a
price the account holds already (`HELD`), because what it grants no longer fits a balance
(`NOT_STORABLE`) or, for a payment intent, because its account was archived since
(`ARCHIVED`: its customer deleted), is refunded in full in the read phase, and the apply
phase's refusal when it meets such a purchase unseen.
"""

from __future__ import annotations

from tollbooth import errors
from tollbooth.provider.client import DUPLICATE, StripeProvider, refund_or_refusal
from tollbooth.provider.keys import idempotency_key
from tollbooth.subscriptions import overflow

HELD = "PRICE_ALREADY_PURCHASED"
NOT_STORABLE = overflow.NOT_STORABLE
# A payment of an account archived since its intent was made (its customer deleted, the
# intent paid before its cancel reached the provider): refunded, nothing granted.
ARCHIVED = "ACCOUNT_ARCHIVED"


def refund_key(payment_intent: str) -> str:
    """One refund of a duplicate payment per provider payment intent, whichever guard asks."""
    return idempotency_key("once-refund", payment_intent)


def refund(
    provider: StripeProvider, payment_intent: str, reason: str
) -> tuple[str | None, str | None]:
    """(refund id, None), or (None, Stripe's code) when Stripe refuses the refund for good. A
    duplicate goes with Stripe's reason `duplicate`; a grant that cannot be stored with none
    (`overflow.refund`). A refund id of None with no code: the provider had refunded it."""
    if reason == HELD:
        key = refund_key(payment_intent)
        return refund_or_refusal(
            lambda: provider.refund_payment(payment_intent, idempotency=key, reason=DUPLICATE)
        )
    if reason == ARCHIVED:  # no duplicate, and not the customer's request: no Stripe reason
        key = idempotency_key("archived-refund", payment_intent)
        return refund_or_refusal(
            lambda: provider.refund_payment(payment_intent, idempotency=key, reason=None)
        )
    return refund_or_refusal(lambda: overflow.refund(provider, payment_intent))


def refusal(what: str, reason: str, price_id: str, detail: str = "") -> errors.DomainError:
    """The apply phase's refusal of `what` ("checkout co_…", "payment intent pi_…") meeting,
    under the account's lock, a purchase its read phase did not see: the attempt fails with
    nothing recorded, and the retry's read phase refunds. `detail`: the held purchase (HELD)
    or the credit type that does not fit (NOT_STORABLE)."""
    if reason == HELD:
        held = f" ({detail})" if detail else ""
        message = f"{what} buys price {price_id!r}, which the account holds already{held}"
    elif reason == ARCHIVED:
        message = f"{what}: its account {detail} is archived"
    else:
        message = (
            f"{what}: what price {price_id!r} grants no longer fits the account's"
            f" {errors.shown(detail)} balance"
        )
    return errors.failed_precondition(
        reason, f"{message}; the next attempt refunds it", price_id=price_id
    )
