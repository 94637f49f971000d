"""A property whose value is an object or a list compares, counts and groups as one text on
both backends: the text PostgreSQL's `jsonb` prints (keys shorter first, then by bytes; `", "`
and `": "` between items; numbers as numbers, strings quoted), so SQLite, which aggregates in
Python, gives the answers PostgreSQL gives in SQL."""

from __future__ import annotations

import datetime as dt

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD
from tests.credit.support import grant
from tests.helpers import keyed
from tests.usage.burn_support import balance, burning_metric
from tests.usage.support import ACCEPTED, NOW, account, event, ingest, stamp, usage_stub

A = usage_pb2
P0 = (NOW - dt.timedelta(days=3)).replace(minute=0, second=0)
P1 = P0 + dt.timedelta(days=1)

# The documented text of each value below (see the module docstring).
PRO_5 = '{"tier": "pro", "seats": 5}'
PRO_5_TEXT = '{"tier": "pro", "seats": "5"}'
LIST = '[1, 2.5, "x", true, null]'


def _load(channel, name: str) -> str:  # type: ignore[no-untyped-def]
    a = account(channel, f"objprops-{name}")
    when = P0 + dt.timedelta(hours=1)
    events = [
        event("o1", a, name=name, when=when, properties={"plan": {"tier": "pro", "seats": 5}}),
        # The same object written in another key order is the same text.
        event("o2", a, name=name, when=when, properties={"plan": {"seats": 5, "tier": "pro"}}),
        # A nested string "5" is not the nested number 5.
        event("o3", a, name=name, when=when, properties={"plan": {"tier": "pro", "seats": "5"}}),
        event("o4", a, name=name, when=when, properties={"plan": [1, 2.5, "x", True, None]}),
    ]
    for e in events:
        e.unique_id = f"{name}-{e.unique_id}"
    assert {r.status for r in ingest(channel, events)} == {ACCEPTED}
    stub = usage_stub(channel)
    for m in [
        A.Metric(code=f"{name}-plans", aggregation=A.AGGREGATION_COUNT_UNIQUE, property="plan"),
        A.Metric(code=f"{name}-calls", aggregation=A.AGGREGATION_COUNT),
        A.Metric(
            code=f"{name}-pro5",
            aggregation=A.AGGREGATION_COUNT,
            filters=[A.PropertyFilter(property="plan", values=[PRO_5])],
        ),
    ]:
        m.event_name = name
        stub.CreateMetric(keyed(A.CreateMetricRequest(metric=m)), metadata=SERVICE_MD)
    return a


def _usage(channel, a: str, code: str, group_by: str = "") -> A.GetUsageResponse:  # type: ignore[no-untyped-def]
    return usage_stub(channel).GetUsage(
        A.GetUsageRequest(
            account=a, metric_code=code, start_time=stamp(P0), end_time=stamp(P1), group_by=group_by
        ),
        metadata=SERVICE_MD,
        timeout=30,
    )


def test_object_values_count_unique_as_their_jsonb_text(channel) -> None:  # type: ignore[no-untyped-def]
    a = _load(channel, "objcount")
    # o1 and o2 are one value; o3 (a string "5") and o4 (a list) are two more.
    assert _usage(channel, a, "objcount-plans").value == "3"


def test_object_values_group_under_their_jsonb_text(channel) -> None:  # type: ignore[no-untyped-def]
    a = _load(channel, "objgroup")
    got = _usage(channel, a, "objgroup-calls", group_by="plan")
    # Ordered by key, code point by code point: '[' before '{', '"' before '5'.
    assert [(g.key, g.value) for g in got.groups] == [(LIST, "1"), (PRO_5_TEXT, "1"), (PRO_5, "2")]
    assert got.value == "4"


def test_a_filter_matches_an_object_value_by_its_jsonb_text(channel) -> None:  # type: ignore[no-untyped-def]
    a = _load(channel, "objfilter")
    assert _usage(channel, a, "objfilter-pro5").value == "2"


def test_a_burn_filtered_on_an_object_value_burns_what_get_usage_counts(channel) -> None:  # type: ignore[no-untyped-def]
    # The burn decides in Python which events a metric counts, GetUsage in SQL on
    # PostgreSQL: both must read an object value as the same text.
    name = "objburn"
    a = account(channel, f"objprops-{name}")
    grant(channel, a, "100")
    burning_metric(channel, f"{name}-pro5", "1", event_name=name, filters={"plan": [PRO_5]})
    when = P0 + dt.timedelta(hours=1)
    plans = [
        {"seats": 5, "tier": "pro"},
        {"tier": "pro", "seats": "5"},
        {"tier": "pro", "seats": 5},
    ]
    events = [
        event(f"{name}-{i}", a, name=name, when=when, properties={"plan": plan})
        for i, plan in enumerate(plans)
    ]
    assert {r.status for r in ingest(channel, events)} == {ACCEPTED}
    counted = _usage(channel, a, f"{name}-pro5").value
    assert counted == "2"
    assert balance(channel, a) == ("98", "0")  # 100 - 2 events x rate 1
