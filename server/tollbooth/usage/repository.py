"""Every query of the usage domain.

Ingest writes through the driver connection of the session's transaction (one statement or one
COPY per batch, no ORM object per row): on PostgreSQL the batch is COPied into a temporary
staging table and moved with one `INSERT ... SELECT ... ON CONFLICT (unique_id,
billing_account_id) DO NOTHING RETURNING billing_account_id, unique_id`; on SQLite each row is
one `INSERT ... ON CONFLICT DO NOTHING` whose row count says whether it was new. Both are
insert-first: the primary key (unique id, account: an id is unique per account) decides, never
a read before the write. Rows go in (unique id, account) order (code points, as Python sorts
and as `COLLATE "C"` sorts) so that two concurrent batches sharing keys lock them in the same
order and cannot deadlock.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, or_, select, text, tuple_
from sqlalchemy.orm import Session

from tollbooth.db import upsert_insert
from tollbooth.db.models import BillableMetric, BillingAccount, UsageEvent
from tollbooth.db.types import UTCDateTime
from tollbooth.usage.aggregate import (
    DECIMAL_STRING,
    GROUP_KEY_LENGTH,
    Aggregation,
    MetricSpec,
)
from tollbooth.usage.events import EPOCH
from tollbooth.usage.sqlite_query import SqliteUsageQuery

# (unique_id, billing_account_id, event_name, seconds, microseconds, properties_json): the
# timestamp in two exact integers (seconds since the epoch, then microseconds).
Row = tuple[str, str, str, int, int, str]

_STAGING_DDL = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS usage_events_staging ("
    " unique_id varchar(200) NOT NULL, billing_account_id varchar(40) NOT NULL,"
    " event_name varchar(200) NOT NULL, seconds bigint NOT NULL, micros integer NOT NULL,"
    " properties text NOT NULL) ON COMMIT DELETE ROWS"
)
_STAGING_COPY = "COPY usage_events_staging FROM STDIN"
# The timestamp from (seconds, microseconds), exactly over the whole Timestamp range: whole
# hours go in as an integer, the rest (under an hour) as seconds with a fraction, which
# make_interval rounds to the microsecond. An interval without days or months adds plain
# microseconds, whatever the session's time zone.
OCCURRED_AT_SQL = (
    "TIMESTAMPTZ 'epoch' + make_interval(hours => ({s} / 3600)::int,"
    " secs => mod({s}, 3600) + {us} / 1000000.0)"
)
_STAGING_MOVE = (
    "INSERT INTO usage_events"
    " (unique_id, billing_account_id, event_name, occurred_at, properties, received_at)"
    " SELECT unique_id, billing_account_id, event_name, "
    + OCCURRED_AT_SQL.format(s="seconds", us="micros")
    + ", properties::jsonb, %s"
    " FROM usage_events_staging WHERE billing_account_id NOT IN (SELECT id FROM arch)"
    ' ORDER BY unique_id COLLATE "C", billing_account_id COLLATE "C"'
    " ON CONFLICT (unique_id, billing_account_id) DO NOTHING"
    " RETURNING billing_account_id, unique_id"
)
# Few rows (a single event, a trickling stream): one statement beats the staging round trips.
SMALL_BATCH = 16
_VALUES_ROW = "(%s, %s, %s, %s::bigint, %s::int, %s, %s::timestamptz)"
_VALUES_INSERT = (
    "INSERT INTO usage_events"
    " (unique_id, billing_account_id, event_name, occurred_at, properties, received_at)"
    " SELECT u, a, e, "
    + OCCURRED_AT_SQL.format(s="s", us="us")
    + ", p::jsonb, r FROM (VALUES {rows}) AS v (u, a, e, s, us, p, r)"
    " WHERE a NOT IN (SELECT id FROM arch)"
    ' ORDER BY u COLLATE "C", a COLLATE "C"'
    " ON CONFLICT (unique_id, billing_account_id) DO NOTHING"
    " RETURNING billing_account_id, unique_id"
)
_SQLITE_INSERT = (
    "INSERT INTO usage_events"
    " (unique_id, billing_account_id, event_name, occurred_at, properties, received_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (unique_id, billing_account_id) DO NOTHING"
)


def dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# ---------------------------------------------------------------------------------------------
# Ingest


def accounts_by_ref(session: Session, refs: Iterable[str]) -> dict[str, str]:
    """Account id of each ref that names one, in one query (the rule of accounts.resolve:
    an `acct_` ref is an id first, anything else a principal id)."""
    refs = set(refs)
    if not refs:
        return {}
    ids = [r for r in refs if r.startswith("acct_")]
    rows = session.execute(
        select(BillingAccount.id, BillingAccount.principal_id).where(
            or_(BillingAccount.id.in_(ids), BillingAccount.principal_id.in_(refs))
        )
    ).all()
    by_id = {r.id for r in rows}
    by_principal = {r.principal_id: r.id for r in rows}
    found: dict[str, str] = {}
    for ref in refs:
        if ref in by_id:
            found[ref] = ref
        elif ref in by_principal:
            found[ref] = by_principal[ref]
    return found


def archived_among(session: Session, account_ids: Iterable[str]) -> set[str]:
    """The ids among `account_ids` of archived accounts, in one query by primary key (on
    PostgreSQL ingest reads them in its inserting statement instead)."""
    ids = list(set(account_ids))
    if not ids:
        return set()
    return set(
        session.scalars(
            select(BillingAccount.id).where(
                BillingAccount.id.in_(ids), BillingAccount.archived_at.is_not(None)
            )
        )
    )


# An event's key: (billing account id, unique id). An id is unique per account.
Key = tuple[str, str]


def stored_among(session: Session, keys: Iterable[Key]) -> set[Key]:
    """The keys among `keys` of events stored already."""
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    pair = tuple_(UsageEvent.billing_account_id, UsageEvent.unique_id)
    rows = session.execute(
        select(UsageEvent.billing_account_id, UsageEvent.unique_id).where(pair.in_(wanted))
    )
    return {(r[0], r[1]) for r in rows}


def insert_events(session: Session, rows: Sequence[Row], received_at: dt.datetime) -> set[Key]:
    """insert_events_and_read_burns, answering only the keys this call inserted."""
    return insert_events_and_read_burns(session, rows, received_at)[0]


# The statement that inserts also reads which of the batch's accounts are archived (their
# events are not inserted) and every metric with a credit burn, so that ingest costs one round
# trip: each answer row is tagged, "i" an inserted event (its account, then its unique id), "a"
# an archived account, "m" a burning metric. The archive is read in the inserting statement's
# own snapshot; an archive committing while it runs may let that batch's events in (as a
# separate read would).
_WITH_BURNS = (
    "WITH arch AS (SELECT id FROM billing_accounts"
    " WHERE id = ANY(%s::varchar[]) AND archived_at IS NOT NULL),"
    " ins AS ({insert}) SELECT 'i', billing_account_id, unique_id FROM ins"
    " UNION ALL SELECT 'a', id, NULL FROM arch"
    " UNION ALL SELECT 'm', json_build_array(code, event_name, aggregation, property, filters,"
    " credit_type, credit_rate)::text, NULL FROM billable_metrics WHERE credit_type IS NOT NULL"
)
# (code, event_name, aggregation, property, filters, credit_type, credit_rate)
MetricRow = tuple[str, str, str, str, list[Any], str, str]


def insert_events_and_read_burns(
    session: Session, rows: Sequence[Row], received_at: dt.datetime
) -> tuple[set[Key], list[MetricRow], set[str]]:
    """Insert the rows whose (account, unique id) is new and whose account is not archived;
    answers the keys inserted, every metric with a credit burn (none when nothing was inserted) and
    the archived accounts among the rows' (whose rows were not inserted), all read in this
    transaction (on PostgreSQL by the inserting statement itself).

    `rows` must not repeat a key (the service keeps the first of a batch).
    """
    if not rows:
        return set(), [], set()
    ordered = sorted(rows)
    accounts = sorted({row[1] for row in ordered})
    dbapi = session.connection().connection.driver_connection
    if dialect(session) == "postgresql":
        with dbapi.cursor() as cur:  # type: ignore[union-attr]
            if len(ordered) <= SMALL_BATCH:
                sql = _VALUES_INSERT.format(rows=", ".join([_VALUES_ROW] * len(ordered)))
                params: list[Any] = [accounts]
                params.extend(v for row in ordered for v in (*row, received_at))
                cur.execute(_WITH_BURNS.format(insert=sql), params)
            else:
                cur.execute(_STAGING_DDL)
                with cur.copy(_STAGING_COPY) as copy:
                    write = copy.write_row
                    for row in ordered:
                        write(row)
                cur.execute(_WITH_BURNS.format(insert=_STAGING_MOVE), (accounts, received_at))
            inserted: set[Key] = set()
            archived: set[str] = set()
            metrics: list[MetricRow] = []
            for tag, value, uid in cur.fetchall():
                if tag == "i":
                    inserted.add((value, uid))
                elif tag == "a":
                    archived.add(value)
                else:
                    metrics.append(tuple(json.loads(value)))  # type: ignore[arg-type]
            return inserted, (metrics if inserted else []), archived
    archived = archived_among(session, accounts)
    bind = session.get_bind().dialect
    # The column type's own processor (naive UTC, then SQLAlchemy's SQLite text format), so raw
    # rows compare exactly like the bound parameters of every query.
    to_db = UTCDateTime().dialect_impl(bind).bind_processor(bind)
    assert to_db is not None
    received = to_db(received_at)
    inserted = set()
    cur = dbapi.cursor()  # type: ignore[union-attr]
    try:
        for uid, account, name, seconds, micros, props in ordered:
            if account in archived:
                continue
            occurred = EPOCH + dt.timedelta(seconds=seconds, microseconds=micros)
            cur.execute(_SQLITE_INSERT, (uid, account, name, to_db(occurred), props, received))
            if cur.rowcount == 1:
                inserted.add((account, uid))
    finally:
        cur.close()
    return inserted, (burning_metrics(session) if inserted else []), archived


# ---------------------------------------------------------------------------------------------
# Metrics

# `session.info` key: this transaction changed metrics by statement (the ORM's own changes are
# seen at flush); this process's kept definitions are dropped when it commits
# (`tollbooth.usage.known_metrics`).
METRICS_CHANGED = "tollbooth_metrics_changed"


def get_metric(session: Session, code: str, *, lock: bool = False) -> BillableMetric | None:
    """The metric; with `lock`, its row locked until commit, so an update waits for a
    concurrent delete and then finds nothing (instead of updating a row that is gone)."""
    if lock:
        return session.scalars(
            select(BillableMetric).where(BillableMetric.code == code).with_for_update()
        ).first()
    return session.get(BillableMetric, code)


def insert_metric(session: Session, values: dict[str, Any]) -> bool:
    """Insert unless the code exists. True when this call created it."""
    stmt = (
        upsert_insert(session, BillableMetric)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["code"])
        .returning(BillableMetric.code)
    )
    session.info[METRICS_CHANGED] = True
    return session.execute(stmt).first() is not None


def all_metrics(session: Session) -> list[BillableMetric]:
    """Every metric (a small table: read whole, in one statement)."""
    return list(session.scalars(select(BillableMetric)))


def burning_metrics(session: Session) -> list[MetricRow]:
    """Every metric with a credit burn (a small table: read whole, in one statement)."""
    m = BillableMetric
    return [
        tuple(r)  # type: ignore[misc]
        for r in session.execute(
            select(
                m.code,
                m.event_name,
                m.aggregation,
                m.property,
                m.filters,
                m.credit_type,
                m.credit_rate,
            ).where(m.credit_type.is_not(None))
        )
    ]


def list_metrics(session: Session, after: str | None, limit: int) -> list[BillableMetric]:
    stmt = select(BillableMetric).order_by(BillableMetric.code).limit(limit)
    if after is not None:
        stmt = stmt.where(BillableMetric.code > after)
    return list(session.scalars(stmt))


def delete_metric(session: Session, code: str) -> bool:
    session.info[METRICS_CHANGED] = True
    result = session.execute(delete(BillableMetric).where(BillableMetric.code == code))
    return bool(result.rowcount)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Usage queries


@functools.lru_cache(maxsize=256)
def _pyformat(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s` (a `::type` cast is left alone)."""
    assert "%" not in sql, sql
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


class PgUsageQuery:
    """GetUsage in SQL on PostgreSQL: the rules of usage.aggregate, as expressions.

    Every query reads the period through ix_usage_events_account_name_time (account, event
    name, timestamp). Property names and values are bound parameters, never SQL text.
    """

    def __init__(
        self,
        spec: MetricSpec,
        account_id: str,
        start: dt.datetime,
        end: dt.datetime,
        group_by: str = "",
    ) -> None:
        self.spec = spec
        self.params: dict[str, Any] = {
            "account": account_id,
            "event_name": spec.event_name,
            "start": start,
            "end": end,
            "prop": spec.property,
            "group_by": group_by,
            "decimal": f"^{DECIMAL_STRING}$",
        }
        where = [
            "billing_account_id = :account",
            "event_name = :event_name",
            "occurred_at >= :start",
            "occurred_at < :end",
        ]
        self.period = " AND ".join(where)  # the events of the metric's name, account, period
        matched = []
        for i, f in enumerate(spec.filters):
            self.params[f"fp{i}"] = f.property
            self.params[f"fv{i}"] = list(f.values)
            matched.append(f"properties ->> CAST(:fp{i} AS text) = ANY(CAST(:fv{i} AS text[]))")
        self.matched = " AND ".join(matched)  # the metric's filters ("" for none)
        self.where = " AND ".join(where + matched)

    # Expressions -------------------------------------------------------------------------

    NUMBER = (
        "CASE jsonb_typeof(properties -> CAST(:prop AS text))"
        " WHEN 'number' THEN (properties ->> CAST(:prop AS text))::numeric"
        " WHEN 'string' THEN CASE WHEN (properties ->> CAST(:prop AS text)) ~ :decimal"
        " THEN (properties ->> CAST(:prop AS text))::numeric END END"
    )
    TEXT = "properties ->> CAST(:prop AS text)"
    KEY = (
        f"left(coalesce(properties ->> CAST(:group_by AS text), ''), {GROUP_KEY_LENGTH})"
        ' COLLATE "C"'
    )
    LATEST_ORDER = 'occurred_at DESC, unique_id COLLATE "C" DESC'

    def _aggregate(self) -> str:
        agg = self.spec.aggregation
        if agg is Aggregation.COUNT:
            return "count(*)"
        if agg is Aggregation.COUNT_UNIQUE:
            return f"count(DISTINCT {self.TEXT})"
        if agg is Aggregation.SUM:
            return f"sum({self.NUMBER})"
        return f"max({self.NUMBER})"

    def statement(self, sql: str) -> Any:
        return text(sql).bindparams(
            bindparam("start", type_=UTCDateTime),
            bindparam("end", type_=UTCDateTime),
        )

    def total_sql(self) -> str:
        if self.spec.aggregation is Aggregation.LATEST:
            return (
                f"SELECT {self.NUMBER} AS v FROM usage_events WHERE {self.where}"
                f" AND ({self.NUMBER}) IS NOT NULL ORDER BY {self.LATEST_ORDER} LIMIT 1"
            )
        return f"SELECT {self._aggregate()} AS v FROM usage_events WHERE {self.where}"

    def groups_sql(self, after: str | None) -> str:
        after_sql = " WHERE k > :after" if after is not None else ""
        if self.spec.aggregation is Aggregation.LATEST:
            return (
                f"SELECT DISTINCT ON (k) k, v FROM (SELECT {self.KEY} AS k, {self.NUMBER} AS v,"
                f" occurred_at, unique_id FROM usage_events WHERE {self.where}) s{after_sql}"
                f" ORDER BY k, v IS NULL, {self.LATEST_ORDER} LIMIT :limit"
            )
        return (
            f"SELECT {self.KEY} AS k, {self._aggregate()} AS v FROM usage_events"
            f" WHERE {self.where}"
            + (f" AND {self.KEY} > :after" if after is not None else "")
            + " GROUP BY k ORDER BY k LIMIT :limit"
        )

    DAY = "(occurred_at AT TIME ZONE 'UTC')::date"

    def daily_sql(self) -> str:
        """One row per UTC day with events of the metric's name: (day, value). The filters
        go inside the aggregate, so a day whose events all miss them is still a day with
        events (count 0, sum 0, max none), as `usage.aggregate` has it."""
        if self.spec.aggregation is Aggregation.LATEST:
            return (
                f"SELECT DISTINCT ON (d) {self.DAY} AS d, {self.NUMBER} AS v FROM usage_events"
                f" WHERE {self.where} AND ({self.NUMBER}) IS NOT NULL"
                f" ORDER BY d, {self.LATEST_ORDER}"
            )
        value = self._aggregate() + (f" FILTER (WHERE {self.matched})" if self.matched else "")
        if self.spec.aggregation is Aggregation.SUM:
            value = f"coalesce({value}, 0)"  # no number among the day's events: 0, not none
        return (
            f"SELECT {self.DAY} AS d, {value} AS v FROM usage_events WHERE {self.period}"
            " GROUP BY d ORDER BY d"
        )

    # Execution ---------------------------------------------------------------------------

    def driver_total(self) -> tuple[str, dict[str, Any]]:
        """`total`'s statement and parameters for the driver's own cursor (psycopg's
        `%(name)s` parameters): `Database.read_one`."""
        return _pyformat(self.total_sql()), self.params

    def total(self, session: Session) -> Decimal | int | None:
        return session.execute(self.statement(self.total_sql()), self.params).scalar()

    def groups(
        self, session: Session, after: str | None, limit: int
    ) -> list[tuple[str, Decimal | int | None]]:
        params = {**self.params, "limit": limit}
        if after is not None:
            params["after"] = after
        rows = session.execute(self.statement(self.groups_sql(after)), params).all()
        return [(r[0], r[1]) for r in rows]

    def daily(self, session: Session) -> dict[dt.date, Decimal | int | None]:
        rows = session.execute(self.statement(self.daily_sql()), self.params).all()
        return {r[0]: r[1] for r in rows}


# ---------------------------------------------------------------------------------------------
# Usage per UTC day (the operator console's chart)


def daily_usage(
    session: Session, spec: MetricSpec, account_id: str, start: dt.datetime, end: dt.datetime
) -> dict[dt.date, Decimal | int | None]:
    """The metric's value on each UTC day of [start, end) that has events of its name (by the
    rules of `usage.aggregate`, over that day's events), aggregated by the database: one row
    per day whatever the number of events, sums exact (PostgreSQL's numeric; on SQLite an
    aggregate function over Decimal, `usage.sqlite_query`)."""
    if dialect(session) == "postgresql":
        return PgUsageQuery(spec, account_id, start, end).daily(session)
    return SqliteUsageQuery(spec, account_id, start, end).daily(session)
