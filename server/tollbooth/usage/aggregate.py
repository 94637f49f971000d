"""How events become usage: the rules of every aggregation, without a database.

PostgreSQL computes aggregates in SQL (`usage.repository`) following exactly these rules;
SQLite, the embedded default, runs this module's `Accumulator`, group key and filters inside
its queries, as functions registered on the connection (`usage.sqlite_query`). Tests hold
both to the same hand-computed values.

- A property's **number**: a JSON number (its decimal text, exact: see usage.events), or a
  string holding a plain decimal (`-12.50`: optional minus, up to 30 digits, optionally a point
  and up to 30 digits; no exponent, no plus sign, no spaces). Anything else is no number and
  does not contribute to sum, max or latest.
- A property's **text** (filters, count_unique, group keys): a string as is; a number as its
  plain decimal (`1500`, `0.1`, never an exponent); `true`/`false`; an object or list as
  PostgreSQL's `jsonb` prints it (`{"tier": "pro", "seats": 5}`); absent or null is no text.
- count: events. count_unique: distinct texts. sum: exact decimal sum. max: largest number.
  latest: the number on the latest event that has one (timestamp, then greatest unique id).
  No contributing event gives 0.
- Grouping: the group key is the text cut to GROUP_KEY_LENGTH characters, or "" without text;
  groups are ordered by key, code point by code point.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tollbooth import amounts

# Page tokens carry the last key of a page (at most 200 characters, with a marker).
GROUP_KEY_LENGTH = 190
# PostgreSQL applies the same pattern (`~`), so both backends agree on what a number is.
DECIMAL_STRING = r"-?[0-9]{1,30}(\.[0-9]{1,30})?"
_DECIMAL_STRING = re.compile(DECIMAL_STRING)


class Aggregation(enum.StrEnum):
    COUNT = "count"
    COUNT_UNIQUE = "count_unique"
    SUM = "sum"
    MAX = "max"
    LATEST = "latest"


NEEDS_PROPERTY = frozenset(
    {Aggregation.COUNT_UNIQUE, Aggregation.SUM, Aggregation.MAX, Aggregation.LATEST}
)


@dataclass(frozen=True)
class Filter:
    property: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class MetricSpec:
    """What GetUsage needs of a metric."""

    code: str
    event_name: str
    aggregation: Aggregation
    property: str = ""
    filters: tuple[Filter, ...] = ()


def exact_sum(values: Iterable[Decimal | int]) -> Decimal:
    """An exact sum in the one context of amounts (`tollbooth.amounts.CONTEXT`: exact sums of
    doubles between 1e-308 and 1e308 need about 630 digits; it keeps 1000 and never rounds)."""
    return amounts.total(values)


def number_of(value: Any) -> Decimal | None:
    """The exact number a property value stands for, or None (see the module docstring).

    Accepts values parsed with Decimal numbers (`loads`) and plain Python ints and floats
    (a float counts as its shortest round-trip decimal).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and _DECIMAL_STRING.fullmatch(value):
        return Decimal(value)
    return None


def text_of(value: Any) -> str | None:
    """The text a property value compares as (filters, count_unique, grouping)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Decimal, int, float)):
        return plain(number_of(value) or Decimal(0))
    return jsonb_text(value)


def jsonb_text(value: Any) -> str:
    """An object or list as PostgreSQL's `jsonb` prints it (what `->>` gives there), so both
    backends compare, count and group it as the same text: keys shorter first, then by their
    UTF-8 bytes; `", "` and `": "` between items; numbers as plain decimals, never strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Decimal, int, float)):
        return plain(number_of(value) or Decimal(0))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        items = (f"{json.dumps(k, ensure_ascii=False)}: {jsonb_text(value[k])}" for k in keys)
        return "{" + ", ".join(items) + "}"
    return str(value)


def plain(number: Decimal) -> str:
    """A decimal without exponent, keeping its scale (as PostgreSQL prints numeric)."""
    return format(number, "f")


def decimal_text(number: Decimal | int | None) -> str:
    """An aggregate on the wire: plain decimal, no exponent, no trailing zeros; None is 0."""
    if number is None:
        return "0"
    if isinstance(number, int):
        return str(number)
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def loads(properties_json: str) -> dict[str, Any]:
    """Stored properties with exact numbers (Decimal, never float)."""
    value = json.loads(properties_json, parse_float=Decimal, parse_int=Decimal)
    return value if isinstance(value, dict) else {}


def group_key(value: Any) -> str:
    text = text_of(value)
    return "" if text is None else text[:GROUP_KEY_LENGTH]


def matches(spec: MetricSpec, properties: dict[str, Any]) -> bool:
    return all(text_of(properties.get(f.property)) in f.values for f in spec.filters)


@dataclass
class Accumulator:
    """One running aggregate."""

    aggregation: Aggregation
    count: int = 0
    total: Decimal = Decimal(0)
    best: Decimal | None = None
    latest_key: tuple[dt.datetime, str] | None = None
    distinct: set[str] = field(default_factory=set)

    def add(self, value: Any, occurred_at: dt.datetime, unique_id: str) -> None:
        agg = self.aggregation
        if agg is Aggregation.COUNT:
            self.count += 1
        elif agg is Aggregation.COUNT_UNIQUE:
            text = text_of(value)
            if text is not None:
                self.distinct.add(text)
        else:
            number = number_of(value)
            if number is None:
                return
            if agg is Aggregation.SUM:
                self.total = amounts.add(self.total, number)
            elif agg is Aggregation.MAX:
                if self.best is None or number > self.best:
                    self.best = number
            else:
                key = (occurred_at, unique_id)
                if self.latest_key is None or key > self.latest_key:
                    self.latest_key, self.best = key, number

    def result(self) -> Decimal | int | None:
        agg = self.aggregation
        if agg is Aggregation.COUNT:
            return self.count
        if agg is Aggregation.COUNT_UNIQUE:
            return len(self.distinct)
        if agg is Aggregation.SUM:
            return self.total
        return self.best


@dataclass(frozen=True)
class Usage:
    """The answer of GetUsage before paging: the overall value and every group, by key."""

    value: Decimal | int | None
    groups: list[tuple[str, Decimal | int | None]]


def aggregate(
    spec: MetricSpec,
    events: Iterable[tuple[dt.datetime, str, dict[str, Any]]],
    group_by: str = "",
) -> Usage:
    """Aggregate (occurred_at, unique_id, properties) of one account, name and period."""
    overall = Accumulator(spec.aggregation)
    groups: dict[str, Accumulator] = {}
    for occurred_at, unique_id, properties in events:
        if spec.filters and not matches(spec, properties):
            continue
        value = properties.get(spec.property) if spec.property else None
        overall.add(value, occurred_at, unique_id)
        if group_by:
            key = group_key(properties.get(group_by))
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = Accumulator(spec.aggregation)
            acc.add(value, occurred_at, unique_id)
    return Usage(overall.result(), [(k, groups[k].result()) for k in sorted(groups)])
