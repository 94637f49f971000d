"""Non-stackable one-time prices are bought once per account.

An account holds a one-time price while it has a purchase of it that was not refunded in full
(`purchases.refunded_at`: what purchase hints and entitlements count). A non-stackable one it
holds is not sold to it again; a stackable one (a credit pack) is bought as often as wanted.
The same rule answers at every step:

- the catalog's hint is CURRENT (`subscriptions.service.hints_of`);
- CreateCheckoutSession (and CreatePaymentIntent) is refused: FAILED_PRECONDITION
  `PRICE_ALREADY_PURCHASED`, nothing created;
- while unpaid, a checkout buying such a price holds the account's slot `once:{price}` as a
  subscription group's checkout holds its group's (`checkout_slots`): a second tab gets the
  same session back, or expires the first; one paid meanwhile makes the second refused;
- at fulfilment (the last line, for a checkout paid while another purchase of the price was
  fulfilled, or a payment intent bought it): the read phase refunds its payment in full (and
  cancels its subscription, if it brought one), outside any transaction (`prepare`); the apply
  phase grants nothing for it and records a `checkout.duplicate_refunded` notification. It
  re-checks under the account's lock (`check`), so two fulfilments of one account take turns,
  and one that meets a purchase its read phase did not see fails with
  `PRICE_ALREADY_PURCHASED` (nothing granted) and its retry refunds.

A paid checkout whose purchase grants no longer fit the account's balance (it grew since the
checkout was created) takes the same path, with the reason `CREDITS_NOT_STORABLE`: its
fulfilment could never write the grant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.catalog import repository as catalog
from tollbooth.checkout import repository
from tollbooth.db import Database
from tollbooth.db.models import CheckoutSession, Price
from tollbooth.provider.client import StripeProvider
from tollbooth.provider.keys import idempotency_key
from tollbooth.subscriptions import overflow, unfulfilled
from tollbooth.subscriptions.effects import Facts
from tollbooth.subscriptions.service import already_purchased, bought_once, held_once
from tollbooth.webhooks.dispatch import object_id as _id

SLOT = "once:"


def slots(prices: Sequence[Price]) -> list[str]:
    """The checkout slots of the non-stackable one-time prices among `prices`."""
    return sorted(f"{SLOT}{p.id}" for p in prices if bought_once(p))


def refused_by_slot(group: str) -> errors.DomainError:
    """The refusal when the checkout holding slot `group` (`once:{price}`) was paid."""
    return already_purchased(group.removeprefix(SLOT))


# -- fulfilment -------------------------------------------------------------------------------


HELD = unfulfilled.HELD
NOT_STORABLE = unfulfilled.NOT_STORABLE


@dataclass(frozen=True)
class Refunded:
    """What the read phase did at the provider for a checkout that cannot be fulfilled: it
    buys a price held already (`HELD`), or what it grants no longer fits the account's
    balance (`NOT_STORABLE`, `credit_type` naming the balance)."""

    price_id: str
    payment_intent: str | None
    refund: str | None
    subscription: str | None
    reason: str = HELD
    credit_type: str = ""
    refused: str | None = None  # Stripe's code when it refuses the refund for good


def _held_by_other(session: Session, row: CheckoutSession) -> Price | None:
    prices = catalog.prices_by_ids(session, [i["price_id"] for i in row.items])
    return held_once(session, row.billing_account_id, list(prices.values()), besides=row.id)


def _not_storable(session: Session, row: CheckoutSession) -> tuple[str, str] | None:
    """(price id, credit type) when the checkout's purchase grants would take a balance of the
    account past the largest storable amount. Checked when the checkout was created, but the
    balance may have grown since (another purchase, a grant): its fulfilment could then never
    write the grant, and the payment would buy nothing while its event failed forever."""
    prices = catalog.prices_by_ids(session, [i["price_id"] for i in row.items])
    bought = [
        (prices[i["price_id"]], int(i.get("quantity") or 1))
        for i in row.items
        if i["price_id"] in prices
    ]
    return overflow.not_storable(session, row.billing_account_id, bought, "on_purchase")


def prepare(
    db: Database, provider: StripeProvider, facts: Facts, stripe_session_id: str
) -> Refunded | None:
    """Read phase: refund (and cancel the subscription of) a paid checkout buying a price the
    account holds by another purchase, or whose grants no longer fit; None when it does not.
    A no-cost checkout (`no_payment_required`) has no payment to refund: the rest is alike."""
    truth = facts.checkout_sessions[stripe_session_id]
    paid = truth.get("payment_status") in ("paid", "no_payment_required")
    if truth.get("status") != "complete" or not paid:
        return None
    with db.transaction(readonly=True) as session:
        row = repository.checkout_by_stripe_id(session, stripe_session_id, owner=None)
        if row is None or row.fulfilled_at is not None:
            return None
        price = _held_by_other(session, row)
        reason, credit_type = HELD, ""
        if price is not None:
            price_id = price.id
        else:
            full = _not_storable(session, row)
            if full is None:
                return None
            (price_id, credit_type), reason = full, NOT_STORABLE
    sub_id = _id(truth.get("subscription")) or None
    if sub_id:
        provider.cancel_subscription(sub_id, idempotency=idempotency_key("guard-cancel", sub_id))
        facts.subscriptions.pop(sub_id, None)
        facts.read_subscription(provider, sub_id)  # canceled now
    paid_by = facts.payment_intents.get(stripe_session_id)
    refund, refused = unfulfilled.refund(provider, paid_by, reason) if paid_by else (None, None)
    return Refunded(price_id, paid_by, refund, sub_id, reason, credit_type, refused)


def check(session: Session, row: CheckoutSession) -> None:
    """Apply phase, under the account's lock: a purchase the read phase did not see fails the
    attempt (nothing is granted); the retry's read phase refunds."""
    repository.lock_account(session, row.billing_account_id)
    price = _held_by_other(session, row)
    if price is not None:
        raise unfulfilled.refusal(f"checkout {row.id}", HELD, price.id)
    full = _not_storable(session, row)
    if full is not None:
        raise unfulfilled.refusal(f"checkout {row.id}", NOT_STORABLE, *full)
