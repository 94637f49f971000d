"""Ingest through the real server: accepted, duplicate or rejected per event, on SQLite and
PostgreSQL. Acknowledged means committed: every check reads the database afterwards."""

from __future__ import annotations

import datetime as dt
import json

import grpc
import pytest
from sqlalchemy import select

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD
from tests.helpers import error_field, error_reason
from tests.usage.support import (
    ACCEPTED,
    DUPLICATE,
    NOW,
    REJECTED,
    T0,
    account,
    event,
    ingest,
    usage_stub,
)
from tollbooth.db import Database
from tollbooth.db.models import UsageEvent
from tollbooth.usage import events


def stored(db: Database) -> dict[str, UsageEvent]:
    with db.transaction(readonly=True) as session:
        return {e.unique_id: e for e in session.scalars(select(UsageEvent))}


def statuses(results: list[usage_pb2.EventResult]) -> list[tuple[str, int, str]]:
    return [(r.unique_id, r.status, r.reason) for r in results]


def test_new_event_is_accepted_and_stored_once_then_duplicate(channel, db) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    first = ingest(channel, [event("evt_1", acct, properties={"tokens": 1500})])
    again = ingest(channel, [event("evt_1", acct, properties={"tokens": 9})])
    assert statuses(first) == [("evt_1", ACCEPTED, "")]
    assert statuses(again) == [("evt_1", DUPLICATE, "")]
    rows = stored(db)
    assert list(rows) == ["evt_1"] and rows["evt_1"].properties == {"tokens": 1500}


def test_one_bad_event_never_sinks_the_batch(channel, db) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    batch = [
        event("ok_1", acct),
        event("bad_account", "nobody-here"),
        event("ok_2", acct),
        event("bad\x00id", acct),
        event("future", acct, when=NOW + dt.timedelta(hours=1)),
        event("ok_3", acct),
    ]
    results = ingest(channel, batch)
    assert statuses(results) == [
        ("ok_1", ACCEPTED, ""),
        ("bad_account", REJECTED, "ACCOUNT_UNKNOWN"),
        ("ok_2", ACCEPTED, ""),
        ("", REJECTED, "FIELD_INVALID"),  # the id itself was the problem: not echoed
        ("future", REJECTED, "EVENT_TIMESTAMP_IN_FUTURE"),
        ("ok_3", ACCEPTED, ""),
    ]
    assert all(r.message for r in results if r.status == REJECTED)
    assert set(stored(db)) == {"ok_1", "ok_2", "ok_3"}


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda a: event("e", a, when=T0 - dt.timedelta(days=5000)), "EVENT_TIMESTAMP_TOO_OLD"),
        (
            lambda a: event("e", a, properties={f"k{i}": "y" * 100 for i in range(90)}),
            "EVENT_PROPERTIES_TOO_LARGE",
        ),
        (
            lambda a: event("e", a, properties={"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}),
            "EVENT_PROPERTIES_TOO_DEEP",
        ),
        (lambda a: event("e", a, name=""), "FIELD_REQUIRED"),
        (lambda a: event("e", ""), "FIELD_REQUIRED"),
        (
            lambda a: usage_pb2.UsageEvent(unique_id="e", account=a, event_name="x"),
            "FIELD_REQUIRED",
        ),
        (lambda a: event("e", a, name="n" * 201), "FIELD_INVALID"),
    ],
    ids=["too_old", "too_large", "too_deep", "no_name", "no_account", "no_timestamp", "long_name"],
)
def test_each_rejection_has_its_stable_reason(channel, db, make, reason) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    (result,) = ingest(channel, [make(acct)])
    assert (result.status, result.reason) == (REJECTED, reason)
    assert stored(db) == {}


def test_unknown_event_names_are_accepted_and_stored(channel, db) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    (result,) = ingest(channel, [event("e1", acct, name="never.seen.before")])
    assert result.status == ACCEPTED
    assert stored(db)["e1"].event_name == "never.seen.before"


def test_account_by_alias_or_id_is_stored_under_the_account_id(channel, db) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "principal-7")
    results = ingest(channel, [event("by_id", acct), event("by_alias", "principal-7")])
    assert [r.status for r in results] == [ACCEPTED, ACCEPTED]
    rows = stored(db)
    assert rows["by_id"].billing_account_id == rows["by_alias"].billing_account_id == acct


def test_event_without_id_gets_the_derived_id_and_counts_once(channel, db) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "principal-8")
    props = {"tokens": 1500, "endpoint": "/v1/analyze"}
    first = ingest(channel, [event("", acct, properties=props)])
    # The same event by alias, retried: same account id, same derived id.
    again = ingest(channel, [event("", "principal-8", properties=props)])
    expected = events.derive_unique_id(
        acct,
        "api_call",
        T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        json.dumps(props, sort_keys=True, separators=(",", ":")),
    )
    assert statuses(first) == [(expected, ACCEPTED, "")]
    assert statuses(again) == [(expected, DUPLICATE, "")]
    assert list(stored(db)) == [expected]


@pytest.mark.parametrize("blank", [" ", "  ", "\u00a0 "])
def test_whitespace_only_id_is_treated_as_missing(channel, db, blank) -> None:  # type: ignore[no-untyped-def]
    """A blank id is no id: the derived one, the same as for an empty id (never stored as sent)."""
    acct = account(channel, "principal-blank")
    props = {"tokens": 7}
    blank_first = ingest(channel, [event(blank, acct, properties=props)])
    empty_again = ingest(channel, [event("", acct, properties=props)])
    expected = events.derive_unique_id(
        acct,
        "api_call",
        T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        json.dumps(props, sort_keys=True, separators=(",", ":")),
    )
    assert statuses(blank_first) == [(expected, ACCEPTED, "")]
    assert statuses(empty_again) == [(expected, DUPLICATE, "")]
    assert list(stored(db)) == [expected]


def test_an_id_with_a_control_character_is_rejected_blank_or_not(channel, db) -> None:  # type: ignore[no-untyped-def]
    """A tab or a line break is a control character, refused in the id like any other (even
    when the rest is blank: it is not taken for a missing id); the batch's other events count."""
    acct = account(channel, "principal-control")
    results = ingest(channel, [event("\t\n ", acct), event("ok\x1bid", acct), event("fine", acct)])
    assert [(r.status, r.reason) for r in results] == [
        (REJECTED, "FIELD_INVALID"),
        (REJECTED, "FIELD_INVALID"),
        (ACCEPTED, ""),
    ]
    assert list(stored(db)) == ["fine"]


def test_repeated_id_within_a_batch_counts_once(channel, db) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    results = ingest(channel, [event("x", acct), event("y", acct), event("x", acct)])
    assert [r.status for r in results] == [ACCEPTED, ACCEPTED, DUPLICATE]
    assert set(stored(db)) == {"x", "y"}


def test_large_batch_of_new_and_known_ids_accepts_exactly_the_new(channel, db) -> None:  # type: ignore[no-untyped-def]
    # Above repository.SMALL_BATCH: on PostgreSQL this goes through the COPY staging path.
    acct = account(channel, "p1")
    ingest(channel, [event(f"id{i:03d}", acct) for i in range(0, 300, 3)])
    results = ingest(channel, [event(f"id{i:03d}", acct) for i in range(300)])
    assert [r.unique_id for r in results] == [f"id{i:03d}" for i in range(300)]
    assert [r.status for r in results] == [
        DUPLICATE if i % 3 == 0 else ACCEPTED for i in range(300)
    ]
    assert len(stored(db)) == 300


def test_stored_event_keeps_timestamp_to_the_microsecond_and_canonical_properties(
    channel, db
) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    when = T0.replace(microsecond=654321)
    batch = [event(f"m{i}", acct, when=when, properties={"b": 0.1, "a": 2.0}) for i in range(20)]
    ingest(channel, batch[:1] + batch)  # one small, one large batch
    row = stored(db)["m7"]
    assert row.occurred_at == when
    assert row.properties == {"a": 2, "b": 0.1}


def test_empty_batch_answers_nothing(channel) -> None:  # type: ignore[no-untyped-def]
    assert ingest(channel, []) == []


def test_batch_over_the_configured_maximum_is_refused_whole(channel_with_env, db) -> None:  # type: ignore[no-untyped-def]
    channel = channel_with_env(BILLING_USAGE_MAX_BATCH="3")
    acct = account(channel, "p1")
    assert len(ingest(channel, [event(f"e{i}", acct) for i in range(3)])) == 3
    with pytest.raises(grpc.RpcError) as exc:
        ingest(channel, [event(f"f{i}", acct) for i in range(4)])
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(exc.value) == "BATCH_TOO_LARGE"
    assert set(stored(db)) == {"e0", "e1", "e2"}


def test_single_event_is_answered_accepted_then_duplicate(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    stub = usage_stub(channel)
    request = usage_pb2.IngestEventRequest(event=event("one", acct))
    first = stub.IngestEvent(request, metadata=SERVICE_MD, timeout=10)
    again = stub.IngestEvent(request, metadata=SERVICE_MD, timeout=10)
    assert (first.unique_id, first.status) == ("one", ACCEPTED)
    assert (again.unique_id, again.status) == ("one", DUPLICATE)


def test_rejected_single_event_is_an_invalid_argument_error_with_the_reason(channel, db) -> None:  # type: ignore[no-untyped-def]
    stub = usage_stub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.IngestEvent(
            usage_pb2.IngestEventRequest(event=event("one", "nobody")),
            metadata=SERVICE_MD,
            timeout=10,
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(exc.value) == "ACCOUNT_UNKNOWN"
    assert stored(db) == {}


@pytest.mark.parametrize(
    "make,reason,field",
    [
        (lambda a: event("one", "nobody"), "ACCOUNT_UNKNOWN", "account"),
        (lambda a: event("one", ""), "FIELD_REQUIRED", "account"),
        (lambda a: event("one", a, name=""), "FIELD_REQUIRED", "event_name"),
        (
            lambda a: usage_pb2.UsageEvent(unique_id="one", account=a, event_name="x"),
            "FIELD_REQUIRED",
            "timestamp",
        ),
        (
            lambda a: event("one", a, when=NOW + dt.timedelta(hours=1)),
            "EVENT_TIMESTAMP_IN_FUTURE",
            "timestamp",
        ),
        (
            lambda a: event("one", a, properties={"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}),
            "EVENT_PROPERTIES_TOO_DEEP",
            "properties",
        ),
    ],
    ids=["unknown_account", "no_account", "no_name", "no_timestamp", "future", "too_deep"],
)
def test_rejected_single_event_names_the_field_it_is_about(
    channel, db, make, reason, field
) -> None:  # type: ignore[no-untyped-def]
    """IngestEvent's error carries `metadata.field`, as every other refusal does: the batch
    checks knew the field and the single event's error dropped it."""
    acct = account(channel, "p1")
    with pytest.raises(grpc.RpcError) as exc:
        usage_stub(channel).IngestEvent(
            usage_pb2.IngestEventRequest(event=make(acct)), metadata=SERVICE_MD, timeout=10
        )
    assert (error_reason(exc.value), error_field(exc.value)) == (reason, field)
    assert stored(db) == {}


def test_ingest_takes_a_service_key_only(channel) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import bearer_md
    from tests.usage.support import issue

    token = issue(channel, "p1").access_token
    with pytest.raises(grpc.RpcError) as exc:
        usage_stub(channel).IngestEvents(
            usage_pb2.IngestEventsRequest(events=[event("e", "p1")]), metadata=bearer_md(token)
        )
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_outcome_counter_counts_every_event_of_a_batch(channel, db) -> None:  # type: ignore[no-untyped-def]
    from tollbooth import metrics

    def counts() -> dict[str, float]:
        return {
            s: metrics.USAGE_EVENTS.labels(s)._value.get()
            for s in (events.ACCEPTED, events.DUPLICATE, events.REJECTED)
        }

    acct = account(channel, "p1")
    ingest(channel, [event("cnt_0", acct)])
    before = counts()
    ingest(
        channel,
        [
            event("cnt_0", acct),
            event("cnt_1", acct),
            event("cnt_2", acct),
            event("cnt_bad", "nobody-here"),
            event("cnt_1", acct),
        ],
    )
    after = counts()
    assert {s: after[s] - before[s] for s in after} == {
        events.ACCEPTED: 2,
        events.DUPLICATE: 2,
        events.REJECTED: 1,
    }
