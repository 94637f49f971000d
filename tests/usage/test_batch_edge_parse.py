"""tollbooth.usage.batch_edge's reading of a batch, without a stack: an event is unreadable
exactly when protobuf's JSON parser (the rules the transcoder applies) refuses it, the fast
check included, and the body it sends on keeps every byte of the readable events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format

from billing.v1 import usage_pb2
from tollbooth.usage.batch_edge import plan, splice
from tollbooth.usage.convert import json_event_problem

GOOD = {"uniqueId": "u", "account": "a", "eventName": "e", "timestamp": "2026-03-01T00:00:00Z"}
CASES: list[Any] = [
    GOOD,
    {**GOOD, "timestamp": "2026-02-30T00:00:00Z"},
    {**GOOD, "timestamp": "0001-01-01T00:00:00Z"},
    {**GOOD, "timestamp": "9999-12-31T23:59:59.999999999Z"},
    {**GOOD, "timestamp": "2026-03-01T00:00:00.1234567890Z"},
    {**GOOD, "timestamp": "2026-03-01T00:00:60Z"},
    {**GOOD, "timestamp": "2026-03-01T00:00:00+02:00"},
    {**GOOD, "timestamp": "2026-03-01t00:00:00z"},
    {**GOOD, "timestamp": None},
    {**GOOD, "event_time": "2026-03-01T00:00:00Z"},
    {**GOOD, "properties": {"n": 10**400}},
    {**GOOD, "properties": {"n": 10**300, "l": [1, [2.5, None], {"x": True}]}},
    {**GOOD, "properties": None},
    {**GOOD, "properties": "x"},
    {**GOOD, "uniqueId": None},
    {**GOOD, "uniqueId": 1},
    {**GOOD, "unique_id": "v"},
    {**GOOD, "account": ["a"]},
    {**GOOD, "unknown": [1, {"x": 2}]},
]


def _parses(event: Any) -> bool:
    try:
        json_format.ParseDict(event, usage_pb2.UsageEvent(), ignore_unknown_fields=True)
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.parametrize("event", CASES, ids=lambda e: json.dumps(e)[-60:])
def test_an_event_is_unreadable_exactly_when_protobuf_refuses_it(event: Any) -> None:
    assert (json_event_problem(event) is None) == _parses(event)


def test_the_readable_events_go_on_byte_for_byte_and_the_answer_is_spliced_in_order() -> None:
    good = (
        '{ "uniqueId" : "g1",\n "account": "a", "eventName": "e",'
        ' "timestamp": "2026-03-01T00:00:00Z"}'
    )
    body = f'{{"x": 1, "events" : [ {good} , {{"timestamp": 5, "uniqueId": "b"}}, null ] }}'
    cut = plan(body.encode(), 1000)
    assert cut is not None
    assert cut.body.decode() == f'{{"x": 1, "events" : [{good}] }}'
    answer = b'{"results":[{"unique_id":"g1","status":"EVENT_STATUS_ACCEPTED"}]}'
    results = json.loads(splice(answer, cut) or b"")["results"]
    assert [(r["unique_id"], r["status"]) for r in results] == [
        ("g1", "EVENT_STATUS_ACCEPTED"),
        ("b", "EVENT_STATUS_REJECTED"),
        ("", "EVENT_STATUS_REJECTED"),
    ]
    assert splice(b'{"results":[]}', cut) is None  # not the kept events' answer: left as is


@pytest.mark.parametrize(
    "body",
    [b"x", b"[]", b'{"events": 1}', b'{"events": [{"timestamp": 5}], "events": []}', b"{} 1"],
)
def test_a_body_it_cannot_take_apart_goes_on_unchanged(body: bytes) -> None:
    assert plan(body, 1000) is None


def test_a_batch_over_the_limit_goes_on_unchanged() -> None:
    assert plan(json.dumps({"events": [GOOD, 1, 2]}).encode(), 2) is None
