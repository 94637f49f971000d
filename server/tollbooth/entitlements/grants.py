"""What held prices grant, feature by feature: a pure calculation, testable without a database.

The rules (README "Entitlements"):

- a subscription's prices grant only in `active`, `trialing` and `past_due`, and not once it
  has ended at its period's end (`Holding.grants_at`: applied at `now`, since holdings are kept
  in memory past that instant); a one-time purchase grants until it is refunded;
- a price grants its own entitlements and its product's; for one feature the price's entry
  wins over the product's;
- holdings are read in order: subscriptions before one-time purchases, newest first; the first
  holding that grants a feature decides its kind (and the metric, or the credit type);
- boolean: held; metered: the limits of every holding granting the same metric, each times its
  quantity, add up, counted over the billing period of the first subscription that grants it
  (a one-time purchase: the calendar month, UTC); credit-backed: the first holding's amount.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tollbooth.amounts import CONTEXT, ZERO
from tollbooth.catalog.fields import Entitlement
from tollbooth.subscriptions.repository import HOLDING_SUBSCRIPTION, Holding


class Kind(enum.StrEnum):
    BOOLEAN = "boolean"
    METERED = "metered"
    CREDIT = "credit"


def kind_of(entitlement: Entitlement) -> Kind:
    if entitlement.metric:
        return Kind.METERED
    if entitlement.credit_type:
        return Kind.CREDIT
    return Kind.BOOLEAN


@dataclass(frozen=True)
class HeldPrice:
    """One holding with the entitlements of its price and of the price's product (as stored)."""

    holding: Holding
    price_entitlements: Sequence[Mapping[str, Any]]
    product_entitlements: Sequence[Mapping[str, Any]]

    def entitlements(self) -> dict[str, Entitlement]:
        out = {e["feature"]: Entitlement.from_json(e) for e in self.product_entitlements}
        out.update({e["feature"]: Entitlement.from_json(e) for e in self.price_entitlements})
        return out


@dataclass
class Grant:
    """What the account holds of one feature."""

    feature: str
    kind: Kind
    value: str = ""
    metric: str = ""
    limit: Decimal = ZERO
    period: tuple[dt.datetime, dt.datetime] | None = None
    credit_type: str = ""
    amount: Decimal = ZERO
    price_ids: list[str] = field(default_factory=list)


def _order(held: HeldPrice) -> tuple[int, float]:
    h = held.holding
    return (0 if h.source == HOLDING_SUBSCRIPTION else 1, -h.created_at.timestamp())


def month_of(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def current_period(
    start: dt.datetime | None, end: dt.datetime | None, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The subscription's billing period that contains `now`. A stored period that has ended
    (its renewal not yet recorded) rolls forward by its own length; none: the calendar month."""
    if start is None or end is None or end <= start:
        return month_of(now)
    length = end - start
    if end <= now:
        steps = (now - end) // length + 1
        start, end = start + steps * length, end + steps * length
    return start, end


def grants(held: Iterable[HeldPrice], now: dt.datetime) -> dict[str, Grant]:
    """Every feature the holdings grant, by feature."""
    out: dict[str, Grant] = {}
    for item in sorted(held, key=_order):
        h = item.holding
        if not h.grants_at(now):
            continue
        for feature, ent in item.entitlements().items():
            kind = kind_of(ent)
            grant = out.get(feature)
            if grant is None:
                grant = out[feature] = Grant(
                    feature, kind, ent.value, ent.metric, credit_type=ent.credit_type
                )
                if kind is Kind.CREDIT:
                    grant.amount = Decimal(ent.amount)
            if h.price_id not in grant.price_ids:
                grant.price_ids.append(h.price_id)
            if grant.kind is Kind.METERED and kind is Kind.METERED and ent.metric == grant.metric:
                share = CONTEXT.multiply(Decimal(ent.limit), Decimal(max(h.quantity, 1)))
                grant.limit = CONTEXT.add(grant.limit, share)
                if grant.period is None and h.source == HOLDING_SUBSCRIPTION:
                    grant.period = current_period(h.period_start, h.period_end, now)
    for grant in out.values():
        if grant.kind is Kind.METERED and grant.period is None:
            grant.period = month_of(now)
    return out
