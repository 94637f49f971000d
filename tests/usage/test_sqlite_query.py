"""SQLite's usage queries (`usage.sqlite_query`) give what aggregating the period's events in
Python gave before (`usage.aggregate.aggregate`, the rules both databases follow): every
aggregation, filters, grouping by any property and paging through the groups, over generated
events whose values are every kind a property can hold (numbers, decimal strings of many
digits, text that is no number, booleans, objects, keys past the cut and outside ASCII) and
whose timestamps tie."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from sqlalchemy import Text, select, type_coerce

from tests.devstack import migrated_sqlite
from tollbooth.db import Database
from tollbooth.db.models import UsageEvent
from tollbooth.db.types import utcnow
from tollbooth.usage import aggregate
from tollbooth.usage.aggregate import Aggregation, Filter, MetricSpec
from tollbooth.usage.sqlite_query import SqliteUsageQuery

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
VALUES: list[Any] = [
    1, 0, -3, 2.5, 1e-7, 1e21, "12.50", "-0.000000000000000001",
    "99999999999999999999.999999999999999999", "abc", "1e3", True, False, None,
    {"a": 1, "bb": [1, "x"]}, [1, 2], "é", "ü", "\u4e2d", "a" * 300, "", "5", 5,
]  # fmt: skip
FILTERS = [(), (Filter("f", ("5", "true", "abc")),), (Filter("f", ("1",)), Filter("g", ("5", "é")))]


def _texts(groups: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    return [(k, aggregate.decimal_text(v)) for k, v in groups]


def test_sqlite_queries_answer_as_aggregating_in_python(tmp_path: Path) -> None:
    rnd = random.Random(7)
    db = Database(migrated_sqlite(tmp_path / "billing.db"))
    try:
        with db.transaction() as s:
            for i in range(400):
                props = {k: rnd.choice(VALUES) for k in ("v", "g", "f") if rnd.random() < 0.85}
                s.add(
                    UsageEvent(
                        unique_id=f"id{rnd.randint(0, 10**6):07d}-{i}",
                        billing_account_id="acct",
                        event_name="e",
                        occurred_at=T0 + dt.timedelta(seconds=rnd.randint(0, 50)),
                        properties=props,
                        received_at=utcnow(),
                    )
                )
        start, end = T0 + dt.timedelta(seconds=3), T0 + dt.timedelta(seconds=45)
        with db.transaction(readonly=True) as s:
            stored = select(
                UsageEvent.occurred_at,
                UsageEvent.unique_id,
                type_coerce(UsageEvent.properties, Text),
            ).where(UsageEvent.occurred_at >= start, UsageEvent.occurred_at < end)
            rows = [(o, u, aggregate.loads(p)) for o, u, p in s.execute(stored)]
            assert 250 < len(rows) < 400  # the period's bounds leave some out
            for agg in Aggregation:
                for filters in FILTERS:
                    prop = "" if agg is Aggregation.COUNT else "v"
                    spec = MetricSpec("m", "e", agg, prop, filters)
                    for group_by in ("", "g", "v", "f", "missing"):
                        before = aggregate.aggregate(spec, rows, group_by)
                        query = SqliteUsageQuery(spec, "acct", start, end, group_by)
                        assert aggregate.decimal_text(query.total(s)) == aggregate.decimal_text(
                            before.value
                        ), (spec, group_by)
                        if not group_by:
                            continue
                        expected = _texts(before.groups)
                        assert _texts(query.groups(s, None, 10_000)) == expected
                        paged: list[tuple[str, Any]] = []
                        after = None
                        while True:  # two a page, a third fetched to see a next page
                            page = query.groups(s, after, 3)
                            paged += page[:2]
                            if len(page) <= 2:
                                break
                            after = page[1][0]
                        assert _texts(paged) == expected, (spec, group_by)
    finally:
        db.dispose()
