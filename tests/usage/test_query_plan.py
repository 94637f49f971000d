"""On PostgreSQL every GetUsage query reads one account's period through the
(account, event name, timestamp) index, never the whole table."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from sqlalchemy import create_engine

from tollbooth.db import normalize_url
from tollbooth.usage.aggregate import Aggregation, Filter, MetricSpec
from tollbooth.usage.repository import PgUsageQuery

INDEX = "ix_usage_events_account_name_time"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def fill(url: str, accounts: int = 40, per_account: int = 500) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY usage_events (unique_id, billing_account_id, event_name, occurred_at,"
                " properties, received_at) FROM STDIN"
            ) as copy,
        ):
            for i in range(accounts * per_account):
                copy.write_row(
                    (
                        f"qp-{i}",
                        f"acct_{i % accounts:024d}",
                        "api_call" if i % 5 else "other",
                        T0 + dt.timedelta(minutes=i),
                        f'{{"tokens": {i % 97}, "model": "m{i % 4}"}}',
                        T0,
                    )
                )
        conn.execute("ANALYZE usage_events")


SPECS = [
    MetricSpec("c", "api_call", Aggregation.COUNT),
    MetricSpec("u", "api_call", Aggregation.COUNT_UNIQUE, "model"),
    MetricSpec("s", "api_call", Aggregation.SUM, "tokens", (Filter("model", ("m1", "m2")),)),
    MetricSpec("m", "api_call", Aggregation.MAX, "tokens"),
    MetricSpec("l", "api_call", Aggregation.LATEST, "tokens"),
]


@pytest.mark.postgres
@pytest.mark.parametrize("spec", SPECS, ids=[s.aggregation.value for s in SPECS])
@pytest.mark.parametrize("group_by", ["", "model", "(per day)"])
def test_usage_queries_use_the_account_name_time_index(pg_url, spec, group_by) -> None:  # type: ignore[no-untyped-def]
    """GetUsage's total and groups, and the console chart's per-day values (`daily_sql`)."""
    fill(pg_url)
    daily = group_by == "(per day)"
    by = "" if daily else group_by
    query = PgUsageQuery(spec, f"acct_{7:024d}", T0, T0 + dt.timedelta(days=30), by)
    sql = query.daily_sql() if daily else query.groups_sql(None) if by else query.total_sql()
    params = {**query.params, "limit": 101}
    engine = create_engine(normalize_url(pg_url))
    with engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.execute(query.statement("EXPLAIN " + sql), params))
    engine.dispose()
    assert INDEX in plan, plan
    assert "Seq Scan on usage_events" not in plan, plan
