"""Event checks and normalisation, without a database."""

from __future__ import annotations

import hashlib
import json

import pytest
from google.protobuf import struct_pb2

from billing.v1 import usage_pb2
from tests.usage.support import NOW, event
from tollbooth.errors import DomainError
from tollbooth.rpc import edge
from tollbooth.usage import convert, events
from tollbooth.usage.limits import Limits, LimitsError

LIMITS = Limits()
NOW_S = int(NOW.timestamp())


def check(msg: usage_pb2.UsageEvent, limits: Limits = LIMITS) -> events.Candidate:
    return convert.check(msg, 0, limits, NOW_S)


def refusal(msg: usage_pb2.UsageEvent, limits: Limits = LIMITS) -> DomainError:
    with pytest.raises(DomainError) as exc:
        check(msg, limits)
    return exc.value


def test_derived_id_is_sha256_of_account_name_timestamp_and_sorted_compact_json() -> None:
    msg = event("", "p1", "api_call", NOW, {"tokens": 1500.0, "endpoint": "/v1/é", "r": 0.1})
    c = check(msg)
    c.account_id = "acct_abc"
    material = "\n".join(
        [
            "acct_abc",
            "api_call",
            NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
            '{"endpoint":"/v1/é","r":0.1,"tokens":1500}',
        ]
    )
    expected = "derived_" + hashlib.sha256(material.encode()).hexdigest()
    assert events.final_unique_id(c) == expected


def test_derived_id_keeps_fractional_seconds_as_protobuf_prints_them() -> None:
    msg = event("", "p1")
    msg.event_time.nanos = 5_000_000
    c = check(msg)
    c.account_id = "acct_x"
    ts = msg.event_time.ToJsonString()
    assert ts.endswith(".005Z")
    material = f"acct_x\napi_call\n{ts}\n{{}}"
    assert events.final_unique_id(c) == "derived_" + hashlib.sha256(material.encode()).hexdigest()


def test_sender_id_is_kept_as_sent() -> None:
    c = check(event("evt_1", "p1"))
    c.account_id = "acct_x"
    assert events.final_unique_id(c) == "evt_1"


def test_whole_numbers_become_integers_and_others_keep_their_shortest_form() -> None:
    c = check(event("e", "p", properties={"a": 1500.0, "b": 0.1, "c": -2.5, "d": 1e300}))
    assert c.properties == {"a": 1500, "b": 0.1, "c": -2.5, "d": 1e300}
    assert json.loads(c.properties_json) == {"a": 1500, "b": 0.1, "c": -2.5, "d": 1e300}
    assert c.properties_json == '{"a":1500,"b":0.1,"c":-2.5,"d":1e+300}'


def test_numbers_beyond_2_to_53_stay_doubles() -> None:
    c = check(event("e", "p", properties={"big": float(2**60)}))
    assert isinstance(c.properties["big"], float)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(bad: float) -> None:
    msg = event("e", "p")
    msg.properties.fields["x"].number_value = bad
    err = refusal(msg)
    assert err.reason == "FIELD_INVALID" and err.metadata["field"] == "properties"


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_properties_at_the_depth_limit_pass_and_one_deeper_is_refused() -> None:
    limits = Limits(max_properties_depth=3)
    check(event("e", "p", properties=nested(3)), limits)
    assert refusal(event("e", "p", properties=nested(4)), limits).reason == (
        "EVENT_PROPERTIES_TOO_DEEP"
    )


def test_lists_count_as_a_level() -> None:
    limits = Limits(max_properties_depth=2)
    check(event("e", "p", properties={"l": [1, 2]}), limits)
    err = refusal(event("e", "p", properties={"l": [[1]]}), limits)
    assert err.reason == "EVENT_PROPERTIES_TOO_DEEP"


def test_properties_size_counts_utf8_bytes_of_the_canonical_json() -> None:
    limits = Limits(max_properties_bytes=20)
    check(event("e", "p", properties={"k": "é" * 6}), limits)  # {"k":"éééééé"} = 20 bytes
    err = refusal(event("e", "p", properties={"k": "é" * 7}), limits)
    assert err.reason == "EVENT_PROPERTIES_TOO_LARGE"


def test_timestamp_in_the_future_beyond_the_skew_is_refused() -> None:
    limits = Limits(max_future_sec=60)
    ok = event("e", "p")
    ok.event_time.seconds = NOW_S + 60
    check(ok, limits)
    late = event("e", "p")
    late.event_time.seconds = NOW_S + 61
    assert refusal(late, limits).reason == "EVENT_TIMESTAMP_IN_FUTURE"


def test_timestamp_older_than_the_window_is_refused() -> None:
    limits = Limits(max_age_days=1)
    ok = event("e", "p")
    ok.event_time.seconds = NOW_S - 86400
    check(ok, limits)
    old = event("e", "p")
    old.event_time.seconds = NOW_S - 86401
    assert refusal(old, limits).reason == "EVENT_TIMESTAMP_TOO_OLD"


def test_seed_001_timestamp_is_inside_the_default_window() -> None:
    msg = usage_pb2.UsageEvent(unique_id="evt_123456", account="a", event_name="api_call")
    msg.event_time.FromJsonString("2025-03-09T15:03:17Z")
    check(msg)


@pytest.mark.parametrize("field", ["account", "event_name", "timestamp"])
def test_required_fields(field: str) -> None:
    msg = event("e", "p")
    # The contract's event_time; errors name it by its JSON name, seed 001's `timestamp`.
    msg.ClearField({"timestamp": "event_time"}.get(field, field))  # type: ignore[arg-type]
    err = refusal(msg)
    assert err.reason == "FIELD_REQUIRED" and err.metadata["field"] == field


def test_blank_account_counts_as_missing() -> None:
    assert refusal(event("e", "   ")).reason == "FIELD_REQUIRED"


def test_timestamp_stored_with_microseconds() -> None:
    msg = event("e", "p")
    msg.event_time.nanos = 123_456_789
    c = check(msg)
    assert c.micros == 123_456 and c.occurred_at.microsecond == 123_456


# -- the fast string check and edge.validate agree --------------------------------------------


def bad_strings() -> list[usage_pb2.UsageEvent]:
    cases = []
    long_value = "x" * (edge.STRUCT_MAX_LENGTH + 1)
    for field, limit in (
        ("unique_id", convert.UNIQUE_ID_LIMIT),
        ("account", convert.ACCOUNT_LIMIT),
        ("event_name", convert.EVENT_NAME_LIMIT),
    ):
        for value in ("a\x00b", "a\x01b", "a\nb", "a\x7f", "y" * (limit + 1)):
            msg = event("e", "p")
            setattr(msg, field, value)
            cases.append(msg)
    for props in (
        {"k\x00": 1},
        {"k": "v\x00"},
        {"k": long_value},
        {long_value: 1},
        {"n": {"deep": "v\x00"}},
        {"l": ["ok", "no\x00"]},
    ):
        cases.append(event("e", "p", properties=props))
    return cases


@pytest.mark.parametrize("msg", bad_strings(), ids=lambda m: str(len(m.SerializeToString())))
def test_fast_string_check_refuses_exactly_what_edge_validate_refuses(msg) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as edge_err:
        edge.validate(msg)
    err = refusal(msg, Limits(max_properties_bytes=10**6))
    assert (err.reason, err.message) == (edge_err.value.reason, edge_err.value.message)


def test_control_characters_in_properties_pass_both_checks() -> None:
    """Properties are free-form JSON: only NUL is refused there, at the edge and in the fast
    pass alike."""
    msg = event("e", "p", properties={"k\t": "line\nbreak\x01\x7f", "l": ["\x1b[0m"]})
    edge.validate(msg)
    check(msg, Limits(max_properties_bytes=10**6))


def test_strings_at_their_limits_pass_both_checks() -> None:
    msg = event("u" * convert.UNIQUE_ID_LIMIT, "a" * convert.ACCOUNT_LIMIT)
    msg.event_name = "n" * convert.EVENT_NAME_LIMIT
    msg.properties.update({"k" * edge.STRUCT_MAX_LENGTH: "v" * edge.STRUCT_MAX_LENGTH})
    edge.validate(msg)
    check(msg, Limits(max_properties_bytes=10**6))


def test_usage_event_has_exactly_the_fields_the_fast_check_knows() -> None:
    # A new field must be taught to convert.check (or the fast path dropped): this fails first.
    assert tuple(f.name for f in usage_pb2.UsageEvent.DESCRIPTOR.fields) == convert.KNOWN_FIELDS
    assert usage_pb2.UsageEvent.DESCRIPTOR.fields_by_name["properties"].message_type is (
        struct_pb2.Struct.DESCRIPTOR
    )


# -- limits ---------------------------------------------------------------------------------


def test_limits_default_and_read_from_the_environment() -> None:
    assert Limits.from_env({}) == Limits()
    limits = Limits.from_env({"BILLING_USAGE_MAX_BATCH": "7", "BILLING_USAGE_STREAM_GROUP_MS": "2"})
    assert (limits.max_batch, limits.stream_group_ms) == (7, 2)


@pytest.mark.parametrize("raw", ["1001", "86400000", str(10**20)])
def test_a_stream_group_wait_past_a_second_is_refused_naming_it(raw: str) -> None:
    # 10**20 ms was accepted and overflowed the stream's wait (OverflowError in every
    # StreamEvents); an hour held every ack for an hour.
    with pytest.raises(LimitsError, match="BILLING_USAGE_STREAM_GROUP_MS"):
        Limits.from_env({"BILLING_USAGE_STREAM_GROUP_MS": raw})
    assert Limits.from_env({"BILLING_USAGE_STREAM_GROUP_MS": "1000"}).stream_group_ms == 1000


@pytest.mark.parametrize("raw", ["0", "-1", "ten"])
def test_limits_refuse_values_that_are_not_positive_integers(raw: str) -> None:
    with pytest.raises(LimitsError):
        Limits.from_env({"BILLING_USAGE_MAX_BATCH": raw})


def test_depth_limit_past_the_edge_nesting_limit_is_refused_not_lowered() -> None:
    """20 is the deepest the edge lets through; a larger setting is a configuration error
    naming the variable (it was lowered to 20 silently, unlike every other bad number)."""
    assert Limits.from_env({"BILLING_USAGE_MAX_PROPERTIES_DEPTH": "20"}).max_properties_depth == 20
    for raw in ("21", "500"):
        with pytest.raises(LimitsError, match="BILLING_USAGE_MAX_PROPERTIES_DEPTH"):
            Limits.from_env({"BILLING_USAGE_MAX_PROPERTIES_DEPTH": raw})
