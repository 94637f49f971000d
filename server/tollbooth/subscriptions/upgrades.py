"""Upgrades: when a subscription's price or quantity changes to one that grants more per period,
the difference is granted at once for the rest of the period (README "Upgrades and refunds").
Called by `tollbooth.subscriptions.effects` when it writes the provider's object over our row."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
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


# (our price id, None for a price not ours; quantity) of each item of a subscription
Items = list[tuple[str | None, int]]


def grant(ctx: Context, row: Subscription, before: dict[str, Any], items: list[Any]) -> None:
    """The upgrade's grant, if the change from `before` (the row as it was, its `items` the
    (Stripe price, quantity) it held) to `items` (the provider's, as `subscription_items`
    columns) is one. A change seen only across a renewal (`renewed_since`) is measured from
    the plan the renewal charged for (`Facts.period_plan`; nothing when it is not known): the
    renewal grants that plan. A subscription of one item is measured by its price and
    quantity; one that has (or had) several, by all of its items together."""
    new: Items = [(i["price_id"], i["quantity"]) for i in items]
    if not renewed_since(before.get("current_period_end"), row.current_period_start):
        held = before.get("items") or [(before.get("stripe_price_id"), before.get("quantity"))]
        if len(held) == 1 and len(new) == 1:
            _grant_upgrade(ctx, row, str(before["price_id"]), int(before.get("quantity") or 1))
        else:
            _grant_set_change(ctx, row, _ours(ctx, held), new)
        return
    charged = ctx.facts.period_plan.get(row.stripe_subscription_id)
    if charged is None:
        return
    if len(charged) == 1 and len(new) == 1:
        price = links.price_by_stripe_id(ctx.session, charged[0][0])
        if price is not None:
            _grant_upgrade(ctx, row, price.id, charged[0][1])
        return
    _grant_set_change(ctx, row, _ours(ctx, charged), new)


def _ours(ctx: Context, items: Sequence[tuple[str | None, Any]]) -> Items:
    """(Stripe price, quantity) pairs as our prices (None: a price not ours grants nothing)."""
    out: Items = []
    for stripe_price, quantity in items:
        price = links.price_by_stripe_id(ctx.session, stripe_price) if stripe_price else None
        out.append((price.id if price else None, int(quantity or 1)))
    return out


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


def per_period_of(prices: dict[str, Price], items: Items) -> dict[str, Decimal]:
    """What a set of items grants each period (`per_period` of each, added up by credit type);
    AMOUNT_INVALID when one item's grant, or a credit type's total, is not storable."""
    out: dict[str, Decimal] = {}
    for price_id, quantity in items:
        for kind, amount in per_period(prices.get(price_id or ""), quantity).items():
            total = amounts.add(out.get(kind, amounts.ZERO), amount)
            out[kind] = amounts.check_storable(total, "credit_grants.amount x quantity")
    return out


def _grant_upgrade(ctx: Context, row: Subscription, old_price_id: str, old_quantity: int) -> None:
    """A subscription of one item, before and after: an upgrade grants, at once, what the new
    plan gives per period beyond the highest level the subscription held in this period (the
    old plan's, or an earlier one's), per credit type (never less: a downgrade takes nothing
    back); once per subscription, change and period."""
    if row.price_id is None or (row.price_id, row.quantity) == (old_price_id, old_quantity):
        return
    key = f"upgrade:{row.stripe_subscription_id}:{old_price_id}:{old_quantity}:{row.price_id}"
    key = f"{key}:{row.quantity}"
    _grant_difference(ctx, row, [(old_price_id, old_quantity)], [(row.price_id, row.quantity)], key)


def _grant_set_change(ctx: Context, row: Subscription, old: Items, new: Items) -> None:
    """A subscription of several items (before or after): measured over all of them, so a
    second item's quantity raised grants its difference, and the first item removed or moved
    does not grant the new first item's plan again; once per subscription, change of the whole
    set (in any order: a reordering alone is no change) and period."""
    change = [sorted(old, key=_order), sorted(new, key=_order)]
    if change[0] == change[1] or not new:
        return
    digest = hashlib.sha256(json.dumps(change).encode()).hexdigest()[:40]
    _grant_difference(ctx, row, old, new, f"upgrade:{row.stripe_subscription_id}:set:{digest}")


def _order(item: tuple[str | None, int]) -> tuple[str, int]:
    return (item[0] or "", item[1])


def _grant_difference(ctx: Context, row: Subscription, was: Items, now: Items, key: str) -> None:
    """Grant what `now` gives per period beyond `was` (raised to the highest level held in this
    period), per credit type, once: claimed on `key` (the change) and the period."""
    until = _plan_ends(row)
    if until is not None and until <= ctx.clock():
        # The provider's period is over (its renewal not made yet, or a paused subscription),
        # or the plan ended at its `cancel_at`: nothing is left of it to grant for; a renewal
        # grants the new plan. Its grant would expire in the past, which the ledger refuses:
        # the event failed on every try.
        return
    prices = catalog.prices_by_ids(ctx.session, sorted({p for p, _ in was + now if p}))
    period = int(row.current_period_start.timestamp()) if row.current_period_start else 0
    key = f"{key}:{period}"
    try:
        old = _per_period(prices, was)
    except DomainError:  # the old plan gave more per period than can be stored: nothing more
        return
    try:
        new = _per_period(prices, now)
    except DomainError:  # a grant × the new quantity is past the largest storable amount
        if claim_effect(ctx.session, key, ctx.event_id, row.billing_account_id):
            kind = _overflowing_type(prices, now)
            _not_granted(ctx, row, kind, None, f"{key}:0")
        return
    old = repository.with_upgrades_reached(ctx.session, row, period, old, new)
    after = {k: max(old.get(k, amounts.ZERO), new.get(k, amounts.ZERO)) for k in old | new}
    repository.note_levels(ctx.session, row, period, after, ctx.event_id)
    extra = {kind: amounts.sub(amount, old.get(kind, amounts.ZERO)) for kind, amount in new.items()}
    extra = {kind: amount for kind, amount in extra.items() if amount > 0}
    if not extra or not claim_effect(ctx.session, key, ctx.event_id, row.billing_account_id):
        return
    ours = [p for p, _ in now if p]
    if len(now) == 1:  # a plan of one item: named as the subscription's
        plan, price_id = row.lookup_key or row.price_id, row.price_id or ""
    else:  # several: each of ours, in the provider's order; the first of them
        plan = ", ".join((prices[p].lookup_key if p in prices else None) or p for p in ours)
        price_id = row.price_id or ours[0]
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
            reason=f"upgrade to {plan}",
            priority=0,
            expire_at=until,
            request_id=request_id,
            metadata={"price_id": price_id, "event_id": ctx.event_id},
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
                "price_id": price_id,
                "request_id": request_id,
            },
            f"credits.granted:{request_id}",
        )
        ctx.changes.append(f"upgrade granted {format(amount, 'f')} {kind}")


def _plan_ends(row: Subscription) -> dt.datetime | None:
    """When what the plan holds in this period ends: the period's end, or Stripe's `cancel_at`
    when the subscription is scheduled to end before it (`repository.ended`)."""
    ends = [t for t in (row.current_period_end, row.cancel_at) if t is not None]
    return min(ends) if ends else None


def _per_period(prices: dict[str, Price], items: Items) -> dict[str, Decimal]:
    """`per_period` of a lone item as it is (a subscription of one item), else `per_period_of`."""
    if len(items) == 1:
        return per_period(prices.get(items[0][0] or ""), items[0][1])
    return per_period_of(prices, items)


def _overflowing_type(prices: dict[str, Price], items: Items) -> str:
    """The credit type of the first item's grant that is not storable (else the first item's
    with an `on_renewal` grant): what `subscription.upgrade_not_granted` names."""
    for price_id, quantity in items:
        try:
            per_period(prices.get(price_id or ""), quantity)
        except DomainError:
            return _renewal_type(prices.get(price_id or ""))
    return next((t for t in (_renewal_type(prices.get(p or "")) for p, _ in items) if t), "")


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
