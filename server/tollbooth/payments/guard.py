"""The guard of prices bought once, for payment intents (the payment-intent side of
`tollbooth.checkout.once`).

A payment of an intent whose account was archived since it was made (DeleteCustomer cancels
the customer's open intents, but one can be paid between the delete and the cancel; or
ArchiveAccount) is refunded the same way (`ARCHIVED`): no purchase, nothing granted.

A payment intent is refused at creation for a price bought once (one-time, not stackable)
that the account holds already, but two created before either was paid (two tabs), or one
created beside a checkout of the price, can all be paid. The payment recorded first keeps the
purchase. A `payment_intent.succeeded` of an intent buying a price the account holds by
another purchase (another intent's, or a checkout's) records no purchase and grants nothing:
its payment is refunded in full at the provider, the intent records the refund and the
purchase it duplicated, and a `payment_intent.duplicate_refunded` notification names them.

As the checkout guards do: the refund happens in the handler's read phase, outside any
transaction (`prepare`), under an idempotency key derived from the provider's payment intent
(a retry, a redelivery or a twin never refunds twice); the apply phase re-checks under the
account's lock (`check`), so two successes of one account take turns, and one that meets a
purchase its read phase did not see fails with `PRICE_ALREADY_PURCHASED` (nothing recorded);
the inbox retries it, and that retry's read phase refunds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from tollbooth.accounts import repository as accounts
from tollbooth.catalog import repository as catalog
from tollbooth.db import Database
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.payments import repository
from tollbooth.provider.client import StripeProvider
from tollbooth.subscriptions import overflow, unfulfilled
from tollbooth.subscriptions.service import held_besides_intent
from tollbooth.webhooks.dispatch import object_id as _id

HELD = unfulfilled.HELD
NOT_STORABLE = unfulfilled.NOT_STORABLE
ARCHIVED = unfulfilled.ARCHIVED


@dataclass(frozen=True)
class Duplicate:
    """What the read phase did at the provider for a payment that cannot be recorded: of a
    price held already (`HELD`), whose grants no longer fit the account's balance
    (`NOT_STORABLE`, `credit_type` naming the balance; no purchase duplicated), or of an
    archived account (`ARCHIVED`; `price_id` "" when the intent named no price)."""

    price_id: str
    purchase_id: str  # the purchase it duplicated ("" for NOT_STORABLE and ARCHIVED)
    refund: str | None  # None: the provider reported the payment refunded already
    reason: str = HELD
    credit_type: str = ""
    refused: str | None = None  # Stripe's code when it refuses the refund for good


def archived(session: Session, row: PaymentIntent) -> bool:
    """Whether the intent's account is archived (DeleteCustomer, or ArchiveAccount): no
    purchase is recorded on it and nothing granted (the request path refuses it too)."""
    account = accounts.by_id(session, row.billing_account_id)
    return account is not None and account.archived_at is not None


def held_by_other(session: Session, row: PaymentIntent) -> tuple[str, str] | None:
    """(price id, purchase id) when the intent buys a price bought once that the account
    holds by a purchase not made by this intent; None otherwise."""
    if not row.price_id:
        return None
    price = catalog.prices_by_ids(session, [row.price_id]).get(row.price_id)
    if price is None:
        return None
    held = held_besides_intent(session, row.billing_account_id, price, row.id)
    return (price.id, held.id) if held is not None else None


def not_storable(session: Session, row: PaymentIntent) -> tuple[str, str] | None:
    """(price id, credit type) when what the intent's price grants would take a balance of
    the account past the largest storable amount. Checked when the intent was created, but the
    balance may have grown since: recording the payment could then never write its grant."""
    if not row.price_id:
        return None
    price = catalog.prices_by_ids(session, [row.price_id]).get(row.price_id)
    if price is None:
        return None
    return overflow.not_storable(session, row.billing_account_id, [(price, 1)], "on_purchase")


def prepare(
    db: Database, provider: StripeProvider, truth: dict[str, Any], ours: str
) -> Duplicate | None:
    """Read phase: refund a succeeded payment of a price the account holds by another
    purchase; None when it does not (or this intent's success was recorded already)."""
    stripe_id = _id(truth.get("id"))
    if truth.get("status") != "succeeded" or not stripe_id or not ours:
        return None
    with db.transaction(readonly=True) as session:
        row = repository.intent_by_id(session, ours, owner=None)
        if row is None or row.stripe_payment_intent_id not in (None, stripe_id):
            return None
        if row.purchase_id is not None or row.duplicate_of or row.refunded_at is not None:
            return None  # recorded already: the effect's guard makes this event a no-op
        gone = archived(session, row)
        held = held_by_other(session, row) if not gone else None
        full = not_storable(session, row) if held is None and not gone else None
    if gone:
        refund, refused = unfulfilled.refund(provider, stripe_id, ARCHIVED)
        return Duplicate(row.price_id or "", "", refund, ARCHIVED, refused=refused)
    if held is None and full is None:
        return None
    if held is not None:
        refund, refused = unfulfilled.refund(provider, stripe_id, HELD)
        return Duplicate(held[0], held[1], refund, refused=refused)
    assert full is not None
    refund, refused = unfulfilled.refund(provider, stripe_id, NOT_STORABLE)
    return Duplicate(full[0], "", refund, NOT_STORABLE, full[1], refused)


def check(session: Session, row: PaymentIntent) -> None:
    """Apply phase, under the account's lock: a purchase of the price the read phase did not
    see fails the attempt (nothing recorded, nothing granted); the retry's read phase
    refunds."""
    if archived(session, row):
        raise unfulfilled.refusal(
            f"payment intent {row.id}", ARCHIVED, row.price_id or "", row.billing_account_id
        )
    held = held_by_other(session, row)
    if held is not None:
        raise unfulfilled.refusal(f"payment intent {row.id}", HELD, held[0], f"purchase {held[1]}")
    full = not_storable(session, row)
    if full is not None:
        raise unfulfilled.refusal(f"payment intent {row.id}", NOT_STORABLE, *full)
