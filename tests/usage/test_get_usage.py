"""GetUsage against values computed by hand, on SQLite and PostgreSQL (both aggregated in the
database): every aggregation, filters, grouping, paging, the period's bounds, and
who may read what."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_field, error_reason, keyed
from tests.usage.support import ACCEPTED, NOW, account, event, ingest, issue, stamp, usage_stub

A = usage_pb2
P0 = (NOW - dt.timedelta(days=10)).replace(minute=0, second=0)
P1 = P0 + dt.timedelta(days=1)


def h(hours: float) -> dt.datetime:
    return P0 + dt.timedelta(hours=hours)


def load(channel) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """The hand-computed dataset: account A's events, and noise that must never count."""
    a, b = account(channel, "acct-a"), account(channel, "acct-b")
    events = [
        event(
            "e01",
            a,
            when=h(0),
            properties={"tokens": 1500, "model": "small", "user": "u1", "isTrial": True},
        ),
        event("e02", a, when=h(1), properties={"tokens": 0.1, "model": "large", "user": "u2"}),
        event("e03", a, when=h(2), properties={"tokens": "12.50", "model": "small", "user": "u1"}),
        event("e04", a, when=h(3), properties={"tokens": 0.2, "model": "large", "user": "u3"}),
        event("e05", a, when=h(4), properties={"tokens": "n/a", "model": "small"}),
        event("e06", a, when=h(5), properties={"user": "u2"}),
        event("e07", a, when=h(6), properties={"tokens": 7, "model": "xl", "user": 5}),
        event("e08", a, when=h(6), properties={"tokens": 3, "model": "xl", "user": "5"}),
        # Never counted: at the exclusive end, before the start, another name, another account.
        event("n1", a, when=P1, properties={"tokens": 1000000, "model": "small"}),
        event("n2", a, when=P0 - dt.timedelta(seconds=1), properties={"tokens": 999}),
        event("n3", a, name="other_event", when=h(1), properties={"tokens": 50}),
        event("n4", b, when=h(1), properties={"tokens": 77, "model": "small"}),
    ]
    assert {r.status for r in ingest(channel, events)} == {ACCEPTED}
    stub = usage_stub(channel)
    for m in [
        A.Metric(code="calls", aggregation=A.AGGREGATION_COUNT),
        A.Metric(code="users", aggregation=A.AGGREGATION_COUNT_UNIQUE, property="user"),
        A.Metric(code="tokens", aggregation=A.AGGREGATION_SUM, property="tokens"),
        A.Metric(code="peak", aggregation=A.AGGREGATION_MAX, property="tokens"),
        A.Metric(code="last", aggregation=A.AGGREGATION_LATEST, property="tokens"),
        A.Metric(
            code="small_xl_calls",
            aggregation=A.AGGREGATION_COUNT,
            filters=[A.PropertyFilter(property="model", values=["small", "xl"])],
        ),
        A.Metric(
            code="small_xl_tokens",
            aggregation=A.AGGREGATION_SUM,
            property="tokens",
            filters=[A.PropertyFilter(property="model", values=["small", "xl"])],
        ),
        A.Metric(
            code="trial_calls",
            aggregation=A.AGGREGATION_COUNT,
            filters=[
                A.PropertyFilter(property="isTrial", values=["true"]),
                A.PropertyFilter(property="model", values=["small"]),
            ],
        ),
        A.Metric(
            code="user_5_tokens",
            aggregation=A.AGGREGATION_SUM,
            property="tokens",
            filters=[A.PropertyFilter(property="user", values=["5"])],
        ),
    ]:
        m.event_name = "api_call"
        stub.CreateMetric(keyed(A.CreateMetricRequest(metric=m)), metadata=SERVICE_MD)
    return a, b


def usage(channel, code: str, account: str = "acct-a", md=SERVICE_MD, **kw) -> A.GetUsageResponse:  # type: ignore[no-untyped-def]
    kw.setdefault("start_time", stamp(P0))
    kw.setdefault("end_time", stamp(P1))
    return usage_stub(channel).GetUsage(
        A.GetUsageRequest(account=account, metric_code=code, **kw), metadata=md, timeout=30
    )


HAND_COMPUTED = {
    "calls": "8",
    "users": "4",  # u1, u2, u3 and 5 (the number 5 and the string "5" compare equal as text)
    "tokens": "1522.8",  # 1500 + 0.1 + 12.50 + 0.2 + 7 + 3; "n/a" is no number
    "peak": "1500",
    "last": "3",  # e07 and e08 share the latest timestamp: the greater id, e08, wins
    "small_xl_calls": "5",
    "small_xl_tokens": "1522.5",
    "trial_calls": "1",
    "user_5_tokens": "10",
}


def test_each_aggregation_and_filter_equals_its_hand_computed_value(channel) -> None:  # type: ignore[no-untyped-def]
    a, _ = load(channel)
    got = {code: usage(channel, code).value for code in HAND_COMPUTED}
    assert got == HAND_COMPUTED
    resp = usage(channel, "calls")
    assert (resp.billing_account_id, resp.metric_code) == (a, "calls")
    assert (resp.start_time, resp.end_time) == (stamp(P0), stamp(P1))
    assert list(resp.groups) == [] and resp.next_page_token == ""


def groups(resp: A.GetUsageResponse) -> list[tuple[str, str]]:
    return [(g.key, g.value) for g in resp.groups]


@pytest.mark.parametrize(
    "code,group_by,expected",
    [
        ("tokens", "model", [("", "0"), ("large", "0.3"), ("small", "1512.5"), ("xl", "10")]),
        ("calls", "user", [("", "1"), ("5", "2"), ("u1", "2"), ("u2", "2"), ("u3", "1")]),
        ("last", "model", [("", "0"), ("large", "0.2"), ("small", "12.5"), ("xl", "3")]),
        ("peak", "model", [("", "0"), ("large", "0.2"), ("small", "1500"), ("xl", "7")]),
        ("users", "model", [("", "1"), ("large", "2"), ("small", "1"), ("xl", "1")]),
        ("calls", "isTrial", [("", "7"), ("true", "1")]),
        ("small_xl_tokens", "model", [("small", "1512.5"), ("xl", "10")]),
    ],
)
def test_grouping_equals_its_hand_computed_groups(channel, code, group_by, expected) -> None:  # type: ignore[no-untyped-def]
    load(channel)
    resp = usage(channel, code, group_by=group_by)
    assert groups(resp) == expected
    assert resp.value == HAND_COMPUTED[code]  # the overall value beside the groups


def test_groups_are_paginated_by_key(channel) -> None:  # type: ignore[no-untyped-def]
    load(channel)
    pages, token = [], ""
    for _ in range(5):
        resp = usage(channel, "calls", group_by="user", page_size=2, page_token=token)
        pages.append(groups(resp))
        assert resp.value == "8"
        token = resp.next_page_token
        if not token:
            break
    assert pages == [[("", "1"), ("5", "2")], [("u1", "2"), ("u2", "2")], [("u3", "1")]]


def test_page_token_of_another_query_is_refused(channel) -> None:  # type: ignore[no-untyped-def]
    load(channel)
    token = usage(channel, "calls", group_by="user", page_size=2).next_page_token
    with pytest.raises(grpc.RpcError) as exc:
        usage(channel, "calls", group_by="model", page_size=2, page_token=token)
    assert error_reason(exc.value) == "PAGE_TOKEN_INVALID"


@pytest.mark.parametrize("token", ["garbage", "grouped"])
def test_a_bad_page_token_is_refused_without_group_by_too(channel, token: str) -> None:  # type: ignore[no-untyped-def]
    """README "Input rules": an altered or foreign page token is 400 PAGE_TOKEN_INVALID, also
    on a query without `group_by` (which has a single answer), never silently ignored."""
    load(channel)
    if token == "grouped":
        token = usage(channel, "calls", group_by="user", page_size=2).next_page_token
    with pytest.raises(grpc.RpcError) as exc:
        usage(channel, "calls", page_token=token)
    assert error_reason(exc.value) == "PAGE_TOKEN_INVALID"


def test_late_and_duplicate_events_keep_usage_exact(channel) -> None:  # type: ignore[no-untyped-def]
    a, _ = load(channel)
    late = [event("late", a, when=h(0.5), properties={"tokens": 0.7, "model": "large"})]
    dups = [event("e01", a, when=h(9), properties={"tokens": 5})]  # same id, other content
    ingest(channel, late + dups)
    assert usage(channel, "tokens").value == "1523.5"
    assert usage(channel, "calls").value == "9"


def test_period_without_events_is_zero(channel) -> None:  # type: ignore[no-untyped-def]
    load(channel)
    empty = {
        "start_time": stamp(P1 + dt.timedelta(days=1)),
        "end_time": stamp(P1 + dt.timedelta(days=2)),
    }
    for code in HAND_COMPUTED:
        assert usage(channel, code, **empty).value == "0"
    assert groups(usage(channel, "calls", group_by="user", **empty)) == []


def failure(fn) -> tuple[grpc.StatusCode, str | None]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        fn()
    return exc.value.code(), error_reason(exc.value)


def test_bad_requests_are_refused(channel) -> None:  # type: ignore[no-untyped-def]
    load(channel)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert failure(lambda: usage(channel, "")) == (invalid, "FIELD_REQUIRED")
    assert failure(lambda: usage(channel, "nope"))[0] == grpc.StatusCode.NOT_FOUND
    assert (
        failure(lambda: usage(channel, "calls", account="nobody"))[0] == grpc.StatusCode.NOT_FOUND
    )
    assert failure(lambda: usage(channel, "calls", end_time=stamp(P0)))[0] == invalid
    stub = usage_stub(channel)
    no_start = A.GetUsageRequest(account="acct-a", metric_code="calls", end_time=stamp(P1))
    assert failure(lambda: stub.GetUsage(no_start, metadata=SERVICE_MD)) == (
        invalid,
        "FIELD_REQUIRED",
    )


@pytest.mark.parametrize("field", ["start_time", "end_time"])
def test_a_period_bound_out_of_range_names_its_field(channel, field: str) -> None:  # type: ignore[no-untyped-def]
    """README "Input rules": a timestamp outside 0001..9999 is 400 FIELD_INVALID naming the
    field (`start_time` or `end_time`), not a generic `timestamp`."""
    account(channel, "acct-range")
    bounds = {"start_time": stamp(P0), "end_time": stamp(P1)}
    bounds[field] = timestamp_pb2.Timestamp(seconds=253402300800)  # 10000-01-01
    with pytest.raises(grpc.RpcError) as exc:
        usage(channel, "calls", account="acct-range", **bounds)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(exc.value) == "FIELD_INVALID"
    assert error_field(exc.value) == field


# -- bearer callers read their own account's usage only --------------------------------------


def test_bearer_reads_its_own_usage_with_or_without_naming_it(channel) -> None:  # type: ignore[no-untyped-def]
    a, _ = load(channel)
    md = bearer_md(issue(channel, "acct-a").access_token)
    assert usage(channel, "tokens", account="", md=md).value == "1522.8"
    assert usage(channel, "tokens", account=a, md=md).value == "1522.8"
    assert usage(channel, "tokens", account="acct-a", md=md).value == "1522.8"


def test_bearer_never_reads_another_accounts_usage(channel) -> None:  # type: ignore[no-untyped-def]
    a, b = load(channel)
    md = bearer_md(issue(channel, "acct-b").access_token)
    assert usage(channel, "tokens", account="", md=md).value == "77"  # its own
    other = failure(lambda: usage(channel, "tokens", account=a, md=md))
    by_alias = failure(lambda: usage(channel, "tokens", account="acct-a", md=md))
    missing = failure(
        lambda: usage(channel, "tokens", account="acct_000000000000000000000000", md=md)
    )
    assert other == by_alias == missing == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


def test_bearer_needs_the_usage_read_scope(channel) -> None:  # type: ignore[no-untyped-def]
    load(channel)
    md = bearer_md(issue(channel, "acct-a", scopes=("checkout",)).access_token)
    assert failure(lambda: usage(channel, "tokens", account="", md=md)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SCOPE_MISSING",
    )


# Amounts as decimal strings with 18 decimal places and up to 20 integer digits: a binary
# float keeps about 16 significant digits, so any answer that went through one differs.
EXACT = [
    ("x1", h(0), "eth", "0.000000000000000001"),
    ("x2", h(1), "eth", "123456789012.123456789012345678"),
    ("x3", h(2), "eth", "99999999999999999999.999999999999999999"),
    ("x4", h(3), "usd", "0.100000000000000001"),
    ("x5", h(4), "usd", "0.100000000000000002"),
]
# By hand: eth's fractions .000000000000000001 + .123456789012345678 + .999999999999999999 make
# 1.123456789012345678, its whole parts 99999999999999999999 + 123456789012 + 1 make
# 100000000123456789012; usd .200000000000000003.
EXACT_SUMS = {
    "": "100000000123456789012.323456789012345681",
    "eth": "100000000123456789012.123456789012345678",
    "usd": "0.200000000000000003",
}


def test_many_digit_amounts_aggregate_exactly_on_both_databases(channel, deps) -> None:  # type: ignore[no-untyped-def]
    """SUM, MAX and LATEST of amounts with 18 decimal places give every digit, overall, per
    group and as the per-metric total entitlements read (`metric_total`): on SQLite as on
    PostgreSQL, never a float-rounded figure."""
    from tollbooth.usage import service

    a = account(channel, "acct-exact")
    events = [
        event(uid, a, name="transfer", when=when, properties={"amount": amount, "cur": cur})
        for uid, when, cur, amount in EXACT
    ]
    assert {r.status for r in ingest(channel, events)} == {ACCEPTED}
    stub = usage_stub(channel)
    for code, agg in (
        ("moved", A.AGGREGATION_SUM),
        ("largest", A.AGGREGATION_MAX),
        ("last_amount", A.AGGREGATION_LATEST),
    ):
        m = A.Metric(code=code, event_name="transfer", aggregation=agg, property="amount")
        stub.CreateMetric(keyed(A.CreateMetricRequest(metric=m)), metadata=SERVICE_MD)

    assert usage(channel, "moved", account=a).value == EXACT_SUMS[""]
    grouped = usage(channel, "moved", account=a, group_by="cur")
    assert groups(grouped) == [("eth", EXACT_SUMS["eth"]), ("usd", EXACT_SUMS["usd"])]
    assert grouped.value == EXACT_SUMS[""]
    # One group a page: the overall value is not the sum of the groups shown.
    first = usage(channel, "moved", account=a, group_by="cur", page_size=1)
    assert groups(first) == [("eth", EXACT_SUMS["eth"])] and first.value == EXACT_SUMS[""]
    rest = usage(
        channel, "moved", account=a, group_by="cur", page_size=1, page_token=first.next_page_token
    )
    assert groups(rest) == [("usd", EXACT_SUMS["usd"])] and rest.value == EXACT_SUMS[""]

    largest = usage(channel, "largest", account=a, group_by="cur")
    assert largest.value == "99999999999999999999.999999999999999999"
    assert groups(largest) == [
        ("eth", "99999999999999999999.999999999999999999"),
        ("usd", "0.100000000000000002"),  # a float sees 0.1 twice
    ]
    latest = usage(channel, "last_amount", account=a, group_by="cur")
    assert latest.value == "0.100000000000000002"
    assert groups(latest) == [
        ("eth", "99999999999999999999.999999999999999999"),
        ("usd", "0.100000000000000002"),
    ]

    with deps.db.transaction(readonly=True) as s:
        for code, expected in (
            ("moved", EXACT_SUMS[""]),
            ("largest", "99999999999999999999.999999999999999999"),
            ("last_amount", "0.100000000000000002"),
        ):
            assert service.metric_total(s, a, code, P0, P1) == expected, code


# SQLite only: PostgreSQL's plans are tests/usage/test_query_plan.py's.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_every_usage_query_aggregates_in_the_database(channel, deps) -> None:  # type: ignore[no-untyped-def]
    """SQLite answers GetUsage (each aggregation, with and without groups, a later page) with
    statements that aggregate through the functions registered on its connection and read the
    period through the (account, event name, timestamp) index: one row per group comes back,
    never the period's events for the server to aggregate."""
    from sqlalchemy import event as sa_event

    from tollbooth.usage import sqlite_query

    assert deps.db.dialect == "sqlite"
    load(channel)
    seen: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "usage_events" in statement:
            seen.append((statement, parameters))

    sa_event.listen(deps.db.engine, "after_cursor_execute", record)
    try:
        for code in HAND_COMPUTED:
            assert usage(channel, code).value == HAND_COMPUTED[code]
            usage(channel, code, group_by="model")
            first = usage(channel, code, group_by="user", page_size=2)
            usage(channel, code, group_by="user", page_size=2, page_token=first.next_page_token)
    finally:
        sa_event.remove(deps.db.engine, "after_cursor_execute", record)
    reads = [(s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) >= 3 * len(HAND_COMPUTED)
    with deps.db.transaction(readonly=True) as s:
        sqlite_query.register(s)
        conn = s.connection()
        for statement, parameters in reads:
            assert f"{sqlite_query.AGGREGATE}(" in statement, statement
            # One row per group at most: load()'s 8 events of the period are in 5 groups or fewer.
            assert len(conn.exec_driver_sql(statement, parameters).all()) <= 5, statement
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            assert any("ix_usage_events_account_name_time" in str(row[-1]) for row in plan), plan
