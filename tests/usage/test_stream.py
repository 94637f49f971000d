"""StreamEvents: each event acknowledged once, in order, only after its group committed."""

from __future__ import annotations

import queue
import threading

import grpc
import pytest
from sqlalchemy import create_engine, select

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD
from tests.usage.support import ACCEPTED, DUPLICATE, REJECTED, account, event, usage_stub
from tollbooth.db import normalize_url
from tollbooth.db.models import UsageEvent

_END = object()


def one(e: usage_pb2.UsageEvent) -> usage_pb2.StreamEventsRequest:
    return usage_pb2.StreamEventsRequest(event=e)


def acks(responses) -> list[usage_pb2.EventResult]:  # type: ignore[no-untyped-def]
    return [r for response in responses for r in response.results]


def test_every_event_is_acknowledged_once_in_order(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    messages = [one(event(f"s{i:03d}", acct)) for i in range(120)]
    messages.append(usage_pb2.StreamEventsRequest(events=[event(f"m{i}", acct) for i in range(30)]))
    messages.append(one(event("s000", acct)))  # sent again
    results = acks(
        usage_stub(channel).StreamEvents(iter(messages), metadata=SERVICE_MD, timeout=60)
    )
    expected = [f"s{i:03d}" for i in range(120)] + [f"m{i}" for i in range(30)] + ["s000"]
    assert [r.unique_id for r in results] == expected
    assert [r.status for r in results] == [ACCEPTED] * 150 + [DUPLICATE]


def test_event_and_events_of_one_message_are_answered_in_that_order(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    msg = usage_pb2.StreamEventsRequest(event=event("first", acct), events=[event("second", acct)])
    results = acks(usage_stub(channel).StreamEvents(iter([msg]), metadata=SERVICE_MD, timeout=30))
    assert [(r.unique_id, r.status) for r in results] == [("first", ACCEPTED), ("second", ACCEPTED)]


def test_a_bad_event_is_rejected_and_the_stream_goes_on(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    messages = [
        one(event("a", acct)),
        one(event("b\x00", acct)),  # would fail the whole call at the edge without per-item
        one(event("c", "nobody")),
        one(event("d", acct)),
    ]
    results = acks(
        usage_stub(channel).StreamEvents(iter(messages), metadata=SERVICE_MD, timeout=30)
    )
    assert [(r.status, r.reason) for r in results] == [
        (ACCEPTED, ""),
        (REJECTED, "FIELD_INVALID"),
        (REJECTED, "ACCOUNT_UNKNOWN"),
        (ACCEPTED, ""),
    ]


def test_a_message_over_the_batch_maximum_is_rejected_event_by_event(channel_with_env) -> None:  # type: ignore[no-untyped-def]
    channel = channel_with_env(BILLING_USAGE_MAX_BATCH="2")
    acct = account(channel, "p1")
    messages = [
        usage_pb2.StreamEventsRequest(events=[event(f"x{i}", acct) for i in range(3)]),
        one(event("y", acct)),
    ]
    results = acks(
        usage_stub(channel).StreamEvents(iter(messages), metadata=SERVICE_MD, timeout=30)
    )
    assert [r.reason for r in results] == ["BATCH_TOO_LARGE"] * 3 + [""]
    assert results[-1].status == ACCEPTED
    # Each answer names its event (EventResult.unique_id) and comes in the order sent, so a
    # sender following the README (the n-th result answers the n-th event) knows which events
    # were refused for good.
    assert [r.unique_id for r in results] == ["x0", "x1", "x2", "y"]


def test_acknowledged_events_are_already_committed_while_the_stream_is_open(
    channel, settings
) -> None:  # type: ignore[no-untyped-def]
    """A sender that waits for each ack before the next event: the time limit releases every
    group, and each acknowledged id is readable from another connection at once."""
    acct = account(channel, "p1")
    outbox: queue.Queue = queue.Queue()

    def requests():  # type: ignore[no-untyped-def]
        while (item := outbox.get(timeout=30)) is not _END:
            yield item

    engine = create_engine(normalize_url(settings.database_url))
    responses = usage_stub(channel).StreamEvents(requests(), metadata=SERVICE_MD, timeout=60)
    try:
        for i in range(5):
            outbox.put(one(event(f"w{i}", acct)))
            (result,) = next(responses).results
            assert result.status == ACCEPTED
            with engine.connect() as conn:
                found = conn.execute(
                    select(UsageEvent.unique_id).where(UsageEvent.unique_id == result.unique_id)
                ).all()
            assert found == [(f"w{i}",)]
    finally:
        outbox.put(_END)
        list(responses)
        engine.dispose()


def test_concurrent_streams_each_get_their_own_acks(channel) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "p1")
    got: dict[int, list[str]] = {}

    def run(k: int) -> None:
        msgs = [one(event(f"c{k}-{i}", acct)) for i in range(60)]
        got[k] = [
            r.unique_id
            for r in acks(
                usage_stub(channel).StreamEvents(iter(msgs), metadata=SERVICE_MD, timeout=60)
            )
        ]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {k: [f"c{k}-{i}" for i in range(60)] for k in range(4)}


def test_a_deadline_passing_mid_stream_is_not_logged_as_our_error(channel, caplog) -> None:  # type: ignore[no-untyped-def]
    """A client that goes away while the server reads its request stream is not an INTERNAL
    error of ours: the RPC ends without an "unhandled error" record."""
    import logging

    acct = account(channel, "p1")
    gate: queue.Queue[object] = queue.Queue()

    def requests():  # type: ignore[no-untyped-def]
        yield one(event("c1", acct))
        gate.get(timeout=30)  # hold the stream open until the test has cancelled it

    caplog.set_level(logging.INFO, logger="tollbooth.rpc")
    call = usage_stub(channel).StreamEvents(requests(), metadata=SERVICE_MD, timeout=2)
    first = next(call)
    assert [r.unique_id for r in first.results] == ["c1"]
    with pytest.raises(grpc.RpcError):  # the deadline passes while the stream is held open
        next(call)
    gate.put(_END)
    ended = threading.Event()  # the server's own line for this RPC: it has finished with it
    for _ in range(300):
        if any(getattr(r, "method", "").endswith("/StreamEvents") for r in caplog.records):
            ended.set()
            break
        threading.Event().wait(0.1)
    assert ended.is_set()
    assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]


def test_concurrent_streams_sending_the_same_ids_store_each_once(channel) -> None:  # type: ignore[no-untyped-def]
    # Groups of several streams may share one commit (usage.batcher.SharedCommit): an id sent
    # by every stream is accepted exactly once, whichever commit or group holds it.
    acct = account(channel, "p1")
    got: dict[int, list[usage_pb2.EventResult]] = {}

    def run(k: int) -> None:
        msgs = [one(event(f"same-{i}", acct)) for i in range(80)]
        got[k] = acks(usage_stub(channel).StreamEvents(iter(msgs), metadata=SERVICE_MD, timeout=60))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert [r.unique_id for r in got[k]] == [f"same-{i}" for i in range(80)]
    for i in range(80):
        statuses = sorted(got[k][i].status for k in range(4))
        assert statuses == [ACCEPTED, DUPLICATE, DUPLICATE, DUPLICATE], (i, statuses)
