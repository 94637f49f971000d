"""GetUsage, per-metric totals and the console's daily usage aggregated by SQLite.

SQLite has no exact decimal type and its JSON functions read numbers as binary floats, so the
rules of `usage.aggregate` run inside SQLite as functions registered on the session's driver
connection: an aggregate function (`usage.aggregate`'s own `Accumulator`, fed one event at a
time, so nothing but the running value stays in memory, and exact in `Decimal`), the group
key of an event and whether it passes the metric's filters. SQLite groups, orders and limits;
one row per group (or per day, or one) comes back, never the period's events.

Group keys are ordered by SQLite's BINARY collation (UTF-8 bytes), which is the order of their
code points, as `usage.aggregate` and PostgreSQL's `COLLATE "C"` order them. An aggregate's
value travels as text (SQLite would turn a Decimal into a binary float), back to a Decimal.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, Text, func, select, type_coerce
from sqlalchemy.orm import Session

from tollbooth.db.models import UsageEvent
from tollbooth.usage.aggregate import (
    Accumulator,
    Aggregation,
    Filter,
    MetricSpec,
    group_key,
    loads,
    matches,
)

AGGREGATE = "tollbooth_usage"  # (spec, occurred_at, unique_id, properties) -> value
KEY = "tollbooth_usage_key"  # (group_by, properties) -> the event's group key
MATCH = "tollbooth_usage_match"  # (spec, properties) -> 1 when the filters pass, else 0


def spec_json(spec: MetricSpec) -> str:
    """What the functions need of a metric, as the text they are called with."""
    return json.dumps(
        [spec.aggregation.value, spec.property, [[f.property, f.values] for f in spec.filters]]
    )


def _spec(text: str) -> MetricSpec:
    agg, prop, filters = json.loads(text)
    return MetricSpec(
        "", "", Aggregation(agg), prop, tuple(Filter(p, tuple(v)) for p, v in filters)
    )


class _Parsed:
    """The properties of the row being read, parsed once: SQLite calls the filter, the group
    key and the aggregate on the same row one after another, each with the same text. One per
    registration, so per connection and statement: never shared between threads."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.value: dict[str, Any] = {}

    def __call__(self, text: str) -> dict[str, Any]:
        if text != self.text:
            self.value, self.text = loads(text), text
        return self.value


class UsageAggregate:
    """SQLite's aggregate of a metric over a set of events (`create_aggregate`). The metric's
    filters are applied here: events that miss them add nothing."""

    parse: Callable[[str], dict[str, Any]] = staticmethod(loads)

    def __init__(self) -> None:
        self.spec: MetricSpec | None = None
        self.acc: Accumulator | None = None

    def step(self, spec_text: str, occurred_at: str, unique_id: str, properties: str) -> None:
        if self.spec is None:
            self.spec = _spec(spec_text)
            self.acc = Accumulator(self.spec.aggregation)
        assert self.acc is not None
        found = self.parse(properties)
        if self.spec.filters and not matches(self.spec, found):
            return
        # occurred_at is SQLAlchemy's fixed-width SQLite text: it orders as the times do.
        value = found.get(self.spec.property) if self.spec.property else None
        self.acc.add(value, occurred_at, unique_id)  # type: ignore[arg-type]

    def finalize(self) -> int | str | None:
        result = self.acc.result() if self.acc is not None else None
        return result if result is None or isinstance(result, int) else str(result)


def register(session: Session) -> None:
    """The functions, on the driver connection of the session's transaction."""
    parse = _Parsed()
    specs = functools.lru_cache(maxsize=8)(_spec)

    def key(group_by: str, properties: str) -> str:
        return group_key(parse(properties).get(group_by))

    def match(spec_text: str, properties: str) -> int:
        return int(matches(specs(spec_text), parse(properties)))

    aggregate = type("UsageAggregate", (UsageAggregate,), {"parse": staticmethod(parse)})
    dbapi: Any = session.connection().connection.driver_connection
    dbapi.create_aggregate(AGGREGATE, 4, aggregate)
    dbapi.create_function(KEY, 2, key, deterministic=True)
    dbapi.create_function(MATCH, 2, match, deterministic=True)


def value_of(spec: MetricSpec, value: int | str | None) -> Decimal | int | None:
    """An aggregate's value as SQLite returns it, as `usage.aggregate` has it."""
    if value is None or spec.aggregation in (Aggregation.COUNT, Aggregation.COUNT_UNIQUE):
        return value  # type: ignore[return-value]
    return Decimal(value)


PROPERTIES = type_coerce(UsageEvent.properties, Text)


class SqliteUsageQuery:
    """GetUsage on SQLite: the same answers as `PgUsageQuery` (total, groups, daily)."""

    def __init__(
        self,
        spec: MetricSpec,
        account_id: str,
        start: dt.datetime,
        end: dt.datetime,
        group_by: str = "",
    ) -> None:
        self.spec = spec
        self.group_by = group_by
        self.period = (
            UsageEvent.billing_account_id == account_id,
            UsageEvent.event_name == spec.event_name,
            UsageEvent.occurred_at >= start,
            UsageEvent.occurred_at < end,
        )

    def _aggregate(self, spec: MetricSpec) -> Any:
        return getattr(func, AGGREGATE)(
            spec_json(spec),
            type_coerce(UsageEvent.occurred_at, Text),
            UsageEvent.unique_id,
            PROPERTIES,
        )

    def _run(self, session: Session, stmt: Select[Any]) -> list[Any]:
        register(session)
        return list(session.execute(stmt).all())

    def total(self, session: Session) -> Decimal | int | None:
        rows = self._run(session, select(self._aggregate(self.spec)).where(*self.period))
        return value_of(self.spec, rows[0][0])

    def groups(
        self, session: Session, after: str | None, limit: int
    ) -> list[tuple[str, Decimal | int | None]]:
        """The groups after the key `after` (None: from the first), by key, at most `limit`.
        Only events that pass the filters make a group (they are left out before grouping,
        so the aggregate need not check them again)."""
        key = getattr(func, KEY)(self.group_by, PROPERTIES)
        stmt = select(
            key, self._aggregate(MetricSpec("", "", self.spec.aggregation, self.spec.property))
        )
        stmt = stmt.where(*self.period)
        if self.spec.filters:
            stmt = stmt.where(getattr(func, MATCH)(spec_json(self.spec), PROPERTIES) == 1)
        stmt = stmt.group_by(key)
        if after is not None:
            stmt = stmt.having(key > after)
        rows = self._run(session, stmt.order_by(key).limit(limit))
        return [(r[0], value_of(self.spec, r[1])) for r in rows]

    def daily(self, session: Session) -> dict[dt.date, Decimal | int | None]:
        """One value per UTC day with events of the metric's name; the filters apply inside
        the aggregate, so a day whose events all miss them is still a day with events (count
        0, sum 0, max none), as `usage.aggregate` has it."""
        day = func.substr(UsageEvent.occurred_at, 1, 10)
        stmt = select(day, self._aggregate(self.spec)).where(*self.period)
        rows = self._run(session, stmt.group_by(day).order_by(day))
        return {dt.date.fromisoformat(d): value_of(self.spec, v) for d, v in rows}
