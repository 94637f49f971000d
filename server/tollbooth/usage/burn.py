"""The credit burn of metrics: what the events a transaction stored burn, without a database.

A metric with a credit burn (credit type, rate) burns `rate x units` credits for each event it
counts (its event name, every filter matching) that the ingest transaction stored; duplicates
are never stored again, so they never burn. Units of one event:

- count: 1;
- sum: the property's number (usage.aggregate.number_of, exactly what GetUsage sums) when it
  is positive; no number, zero or a negative number burns nothing (a burn never gives credits
  back; a refund is a grant);
- count_unique, max, latest: no units per event. A metric with a burn must be count or sum
  (usage.service refuses anything else); a metric stored otherwise is skipped here.

The burn of one event is `rate x units`, exact when it has at most 18 fractional digits (the
credit ledger's precision; always for count), else rounded half to even at the 18th. Each event
is rounded on its own, so the total never depends on how events were batched. No upper bound
applies: what a balance cannot cover becomes overage, which is kept exactly at any size (a
double reaches 1.8e308 and a rate 10^20, so a burn stays under 10^330).

Events burn in groups: one Burn (one ledger entry) per account, credit type and metric of a
transaction, for at most CHUNK events, whose ids its metadata lists (`event_ids`, a JSON
array), with the metric's code and rate and the number of events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from tollbooth.amounts import ZERO, add, mul, to_quantum
from tollbooth.credit.burns import Burn
from tollbooth.usage.aggregate import Aggregation, Filter, MetricSpec, matches, number_of

CHUNK = 100
BURNING = frozenset({Aggregation.COUNT, Aggregation.SUM})
REASON_PREFIX = "usage:"


@dataclass(frozen=True)
class BurningMetric:
    spec: MetricSpec
    credit_type: str
    rate: Decimal
    rate_text: str


def metric(
    code: str,
    event_name: str,
    aggregation: str,
    prop: str,
    filters: Iterable[dict[str, Any]] | None,
    credit_type: str,
    rate: str,
) -> BurningMetric | None:
    """A stored metric as a burning one; None when it cannot burn (see the module docstring)."""
    try:
        agg = Aggregation(aggregation)
    except ValueError:
        return None
    if agg not in BURNING or not credit_type or not rate:
        return None
    spec = MetricSpec(
        code,
        event_name,
        agg,
        prop,
        tuple(Filter(f["property"], tuple(f["values"])) for f in (filters or [])),
    )
    return BurningMetric(spec, credit_type, Decimal(rate), rate)


def units(m: BurningMetric, properties: dict[str, Any]) -> Decimal:
    """The units one event of the metric's name burns for (zero when it burns nothing)."""
    spec = m.spec
    if spec.filters and not matches(spec, properties):
        return Decimal(0)
    if spec.aggregation is Aggregation.COUNT:
        return Decimal(1)
    number = number_of(properties.get(spec.property))
    if number is None or number <= 0:
        return Decimal(0)
    return number


def amount(rate: Decimal, event_units: Decimal) -> Decimal:
    """rate x units at 18 fractional digits, half to even; canonical (no trailing zeros)."""
    return to_quantum(mul(rate, event_units))


class Event(Protocol):
    """What planning needs of one stored event (usage.events.Candidate has these fields)."""

    unique_id: str
    account_id: str
    event_name: str
    properties: dict[str, Any]


def plan(metrics: Sequence[BurningMetric], stored: Sequence[Event]) -> list[Burn]:
    """The burns of the events a transaction stored, in the order of the events."""
    if not metrics:
        return []
    by_name: dict[str, list[BurningMetric]] = {}
    for m in metrics:
        by_name.setdefault(m.spec.event_name, []).append(m)
    # (account, credit type, metric code) -> [(unique id, amount)] in event order
    groups: dict[tuple[str, str, str], list[tuple[str, Decimal]]] = {}
    rates: dict[str, BurningMetric] = {}
    for e in stored:
        for m in by_name.get(e.event_name, ()):
            n = units(m, e.properties)
            if n == 0:
                continue
            value = amount(m.rate, n)
            if value == 0:
                continue  # under half of 10^-18
            groups.setdefault((e.account_id, m.credit_type, m.spec.code), []).append(
                (e.unique_id, value)
            )
            rates[m.spec.code] = m
    burns = []
    for (account_id, credit_type, code), items in groups.items():
        m = rates[code]
        for i in range(0, len(items), CHUNK):
            chunk = items[i : i + CHUNK]
            total = ZERO
            for _, value in chunk:
                total = add(total, value)
            burns.append(
                Burn(
                    account_id=account_id,
                    credit_type=credit_type,
                    amount=total,
                    reason=REASON_PREFIX + code,
                    metadata={
                        "metric": code,
                        "rate": m.rate_text,
                        "events": str(len(chunk)),
                        "event_ids": json.dumps(
                            [uid for uid, _ in chunk], ensure_ascii=False, separators=(",", ":")
                        ),
                    },
                )
            )
    return burns
