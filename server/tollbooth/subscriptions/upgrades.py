"""Upgrades: when a subscription's price or quantity changes to one that grants more per period,
the difference is granted at once for the rest of the period (README "Upgrades and refunds").
Called by `tollbooth.subscriptions.effects` when it writes the provider's object over our row."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tollbooth import amounts
from tollbooth.auth.caller import SERVICE
from tollbooth.catalog import repository as catalog
from tollbooth.credit import grants as credit_grants
from tollbooth.credit.queries import first_not_storable
from tollbooth.db.models import Price, Subscription
from tollbooth.errors import DomainError
from tollbooth.notifications import outbox
from tollbooth.provider import repository as links
from tollbooth.subscriptions import repository
from tollbooth.webhooks.dispatch import claim_effect

if TYPE_CHECKING:
    from tollbooth.subscriptions.effects import Context


def grant(ctx: Context, row: Subscription, before: dict[str, Any]) -> None:
    """The upgrade's grant, if the change from `before` (the row as it was) is one. A change
    seen only across a renewal (`renewed_since`) is measured from the plan the renewal charged
    for (`Facts.period_plan`; nothing when it is not known): the renewal grants that plan."""
    if not renewed_since(before.get("current_period_end"), row.current_period_start):
        _grant_upgrade(ctx, row, str(before["price_id"]), int(before.get("quantity") or 1))
        return
    charged = ctx.facts.period_plan.get(row.stripe_subscription_id)
    price = links.price_by_stripe_id(ctx.session, charged[0]) if charged else None
    if charged is not None and price is not None:
        _grant_upgrade(ctx, row, price.id, charged[1])


def renewed_since(old_end: Any, new_start: dt.datetime | None) -> bool:
    """Whether the provider's object is in a billing period that began when (or after) the one
    our row held ended: a change seen only across a renewal (its event applied late) is the
    renewal's to grant (`invoice.paid` grants the new plan for the new period); the difference
    an upgrade grants was for the rest of a period that is over. A period restarted by the
    change itself (a new billing anchor) begins before the old one's end."""
    return isinstance(old_end, dt.datetime) and new_start is not None and new_start >= old_end


def per_period(price: Price | None, quantity: int) -> dict[str, Decimal]:
    """What a price grants each period (its `on_renewal` grants × quantity), by credit type."""
    out: dict[str, Decimal] = {}
    for spec in (price.credit_grants or []) if price else []:
        if spec.get("on_renewal"):
            kind = str(spec["credit_type"])
            each = amounts.times(str(spec["amount"]), max(quantity, 1), "credit_grants.amount")
            out[kind] = amounts.add(out.get(kind, amounts.ZERO), each)
    return out


def _grant_upgrade(ctx: Context, row: Subscription, old_price_id: str, old_quantity: int) -> None:
    """An upgrade grants, at once, what the new plan gives per period beyond the highest level
    the subscription held in this period (the old plan's, or an earlier one's), per credit type
    (never less: a downgrade takes nothing back); once per subscription, change and period."""
    if row.price_id is None or (row.price_id, row.quantity) == (old_price_id, old_quantity):
        return
    if row.current_period_end is not None and row.current_period_end <= ctx.clock():
        # The provider's period is over (its renewal not made yet, or a paused subscription):
        # nothing is left of it to grant for; the renewal grants the new plan. Its grant
        # would expire in the past, which the ledger refuses: the event failed on every try.
        return
    prices = catalog.prices_by_ids(ctx.session, [old_price_id, row.price_id])
    period = int(row.current_period_start.timestamp()) if row.current_period_start else 0
    key = f"upgrade:{row.stripe_subscription_id}:{old_price_id}:{old_quantity}:{row.price_id}"
    key = f"{key}:{row.quantity}:{period}"
    try:
        old = per_period(prices.get(old_price_id), old_quantity)
    except DomainError:  # the old plan gave more per period than can be stored: nothing more
        return
    try:
        new = per_period(prices.get(row.price_id), row.quantity)
    except DomainError:  # a grant × the new quantity is past the largest storable amount
        if claim_effect(ctx.session, key, ctx.event_id, row.billing_account_id):
            _not_granted(ctx, row, _renewal_type(prices.get(row.price_id)), None, f"{key}:0")
        return
    old = repository.with_upgrades_reached(ctx.session, row, period, old, new)
    after = {k: max(old.get(k, amounts.ZERO), new.get(k, amounts.ZERO)) for k in old | new}
    repository.note_levels(ctx.session, row, period, after, ctx.event_id)
    extra = {kind: amounts.sub(amount, old.get(kind, amounts.ZERO)) for kind, amount in new.items()}
    extra = {kind: amount for kind, amount in extra.items() if amount > 0}
    if not extra or not claim_effect(ctx.session, key, ctx.event_id, row.billing_account_id):
        return
    for n, (kind, amount) in enumerate(sorted(extra.items())):
        request_id = f"{key}:{n}"
        if first_not_storable(ctx.session, row.billing_account_id, {kind: amount}, ctx.clock()):
            _not_granted(ctx, row, kind, amount, request_id)
            continue
        made = credit_grants.grant(
            ctx.session,
            SERVICE,
            row.billing_account_id,
            credit_type=kind,
            amount=format(amount, "f"),
            reason=f"upgrade to {row.lookup_key or row.price_id}",
            priority=0,
            expire_at=row.current_period_end,
            request_id=request_id,
            metadata={"price_id": row.price_id, "event_id": ctx.event_id},
            clock=ctx.clock,
        )
        outbox.enqueue(
            ctx.session,
            "credits.granted",
            row.billing_account_id,
            {
                "grant_id": made.id,
                "credit_type": kind,
                "amount": format(amount, "f"),
                "price_id": row.price_id,
                "request_id": request_id,
            },
            f"credits.granted:{request_id}",
        )
        ctx.changes.append(f"upgrade granted {format(amount, 'f')} {kind}")


def _renewal_type(price: Price | None) -> str:
    """The credit type of a price's first `on_renewal` grant ("" when it has none)."""
    specs = [s for s in (price.credit_grants or []) if s.get("on_renewal")] if price else []
    return str(specs[0]["credit_type"]) if specs else ""


def _not_granted(
    ctx: Context, row: Subscription, kind: str, amount: Decimal | None, request_id: str
) -> None:
    """The upgrade's grant of `kind` would take the balance past the largest storable amount
    (NUMERIC(38, 18)): not made, and the company told. Nothing to refund: an upgrade has no
    payment of its own (its proration, if any, is billed with the next invoice's charges).
    The change is claimed, so a replay tells nothing twice; the levels are noted, so a later
    change in this period does not grant it either."""
    outbox.enqueue(
        ctx.session,
        "subscription.upgrade_not_granted",
        row.billing_account_id,
        {
            "subscription_id": row.id,
            "stripe_subscription_id": row.stripe_subscription_id,
            "price_id": row.price_id,
            "quantity": row.quantity,
            "credit_type": kind,
            "amount": None if amount is None else format(amount, "f"),
            "reason": "CREDITS_NOT_STORABLE",  # `overflow.NOT_STORABLE` (it imports this room)
        },
        f"subscription.upgrade_not_granted:{request_id}",
    )
    what = f"{format(amount, 'f')} {kind}" if amount is not None else f"the {kind} grant"
    ctx.changes.append(f"upgrade: {what} not granted, it does not fit the balance")
