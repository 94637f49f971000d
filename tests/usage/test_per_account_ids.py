"""A unique id is unique per billing account: the key is (account, unique id), as Lago's
transaction_id is unique per subscription.

Seed 001's event (`"uniqueId": "evt_123456"`) copied verbatim for two accounts is two events,
each counted once for its own account (usage, metered entitlement, credit burn); the same id
for the same account, named by id or by alias, stays a duplicate in a batch, across batches,
in streams and concurrently from two replicas.
"""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_KEY, SERVICE_MD
from tests.credit.support import grant
from tests.helpers import all_at_once
from tests.usage.burn_support import balance, burning_metric
from tests.usage.support import (
    ACCEPTED,
    DUPLICATE,
    NOW,
    T0,
    account,
    event,
    ingest,
    stamp,
    usage_stub,
)

KEY = {"x-api-key": SERVICE_KEY}
SEED_ID = "evt_123456"
SEED_001_EVENT = {
    "uniqueId": SEED_ID,
    "account": "acc_abc123",
    "eventName": "api_call",
    "timestamp": "2025-03-09T15:03:17Z",
    "properties": {"endpoint": "/v1/analyze", "tokens": 1500},
}
MARCH = "start_time=2025-03-01T00:00:00Z&end_time=2025-04-01T00:00:00Z"


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def count_metric(channel: grpc.Channel, name: str = "api_call") -> str:
    code = fresh("calls").replace("-", "_")
    usage_stub(channel).CreateMetric(
        usage_pb2.CreateMetricRequest(
            metric=usage_pb2.Metric(
                code=code, event_name=name, aggregation=usage_pb2.AGGREGATION_COUNT
            ),
            request_id=f"m-{code}",
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    return code


def used(channel: grpc.Channel, acct: str, code: str) -> str:
    start = stamp(T0 - dt.timedelta(days=1))
    return (
        usage_stub(channel)
        .GetUsage(
            usage_pb2.GetUsageRequest(
                account=acct, metric_code=code, start_time=start, end_time=stamp(NOW)
            ),
            metadata=SERVICE_MD,
            timeout=10,
        )
        .value
    )


# REST through Envoy -------------------------------------------------------------------------


@pytest.mark.envoy
def test_seed_001_body_for_two_fresh_accounts_counts_once_for_each(stack) -> None:  # type: ignore[no-untyped-def]
    code = fresh("seed").replace("-", "_")
    made = stack.request(
        "POST",
        f"/mgt/v1/metrics?request_id={code}",
        {"code": code, "event_name": "api_call", "aggregation": "AGGREGATION_COUNT"},
        KEY,
    )
    assert made.status == 200, made.body
    aliases = [fresh("seed-a"), fresh("seed-b")]
    ids = []
    for alias in aliases:
        r = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": alias}, KEY)
        assert r.status == 200, r.body
        ids.append(r.json()["billing_account_id"])

    def send(ref: str) -> str:
        r = stack.request("POST", "/mgt/v1/events", {**SEED_001_EVENT, "account": ref}, KEY)
        assert r.status == 200, r.body
        assert r.json()["unique_id"] == SEED_ID
        return r.json()["status"]  # type: ignore[no-any-return]

    assert [send(a) for a in aliases] == ["EVENT_STATUS_ACCEPTED"] * 2
    # The same body again, by alias or by id: a duplicate for either account.
    assert [send(ref) for ref in (*aliases, *ids)] == ["EVENT_STATUS_DUPLICATE"] * 4
    batch = stack.request(
        "POST",
        "/mgt/v1/events:batch",
        {"events": [{**SEED_001_EVENT, "account": ref} for ref in (ids[1], aliases[0])]},
        KEY,
    )
    assert batch.status == 200, batch.body
    assert [r["status"] for r in batch.json()["results"]] == ["EVENT_STATUS_DUPLICATE"] * 2
    for acct in ids:
        got = stack.request(
            "GET", f"/mgt/v1/accounts/{acct}/usage?metric_code={code}&{MARCH}", None, KEY
        )
        assert got.status == 200, got.body
        assert got.json()["value"] == "1"


# gRPC batch and stream ----------------------------------------------------------------------


def test_one_id_for_two_accounts_in_a_batch_is_two_events(shared_channel) -> None:  # type: ignore[no-untyped-def]
    ch = shared_channel
    code = count_metric(ch)
    a_alias, b_alias = fresh("ba"), fresh("bb")
    a, b = account(ch, a_alias), account(ch, b_alias)
    results = ingest(
        ch, [event(SEED_ID, a_alias), event(SEED_ID, b), event(SEED_ID, a), event(SEED_ID, b_alias)]
    )
    assert [(r.unique_id, r.status) for r in results] == [
        (SEED_ID, ACCEPTED),
        (SEED_ID, ACCEPTED),
        (SEED_ID, DUPLICATE),
        (SEED_ID, DUPLICATE),
    ]
    again = ingest(ch, [event(SEED_ID, b_alias), event(SEED_ID, a)])
    assert [r.status for r in again] == [DUPLICATE, DUPLICATE]
    assert (used(ch, a, code), used(ch, b, code)) == ("1", "1")


def test_one_id_for_two_accounts_in_a_stream_is_two_events(shared_channel) -> None:  # type: ignore[no-untyped-def]
    ch = shared_channel
    code = count_metric(ch)
    a_alias, b_alias = fresh("sa"), fresh("sb")
    a, b = account(ch, a_alias), account(ch, b_alias)
    sent = [
        usage_pb2.StreamEventsRequest(event=event(SEED_ID, a)),
        usage_pb2.StreamEventsRequest(events=[event(SEED_ID, b_alias), event(SEED_ID, a_alias)]),
        usage_pb2.StreamEventsRequest(event=event(SEED_ID, b)),
    ]
    acks = [
        r
        for response in usage_stub(ch).StreamEvents(iter(sent), metadata=SERVICE_MD, timeout=30)
        for r in response.results
    ]
    assert [(r.unique_id, r.status) for r in acks] == [
        (SEED_ID, ACCEPTED),
        (SEED_ID, ACCEPTED),
        (SEED_ID, DUPLICATE),
        (SEED_ID, DUPLICATE),
    ]
    assert (used(ch, a, code), used(ch, b, code)) == ("1", "1")


def test_a_derived_id_is_per_account_too(shared_channel) -> None:  # type: ignore[no-untyped-def]
    ch = shared_channel
    a, b = account(ch, fresh("da")), account(ch, fresh("db"))
    results = ingest(ch, [event("", a), event("", b), event("", a)])
    assert [r.status for r in results] == [ACCEPTED, ACCEPTED, DUPLICATE]
    assert results[0].unique_id != results[1].unique_id  # the derived id hashes the account


def test_one_id_for_two_accounts_burns_once_for_each(shared_channel) -> None:  # type: ignore[no-untyped-def]
    ch = shared_channel
    ctype = fresh("tok").replace("-", "_")
    burning_metric(ch, fresh("burn").replace("-", "_"), "2", credit_type=ctype)
    a, b = account(ch, fresh("ca")), account(ch, fresh("cb"))
    grant(ch, a, "10", credit_type=ctype)
    grant(ch, b, "10", credit_type=ctype)
    first = ingest(ch, [event(SEED_ID, a), event(SEED_ID, b)])
    retry = ingest(ch, [event(SEED_ID, a), event(SEED_ID, b)])
    assert [r.status for r in first] == [ACCEPTED, ACCEPTED]
    assert [r.status for r in retry] == [DUPLICATE, DUPLICATE]
    assert balance(ch, a, ctype) == ("8", "0")
    assert balance(ch, b, ctype) == ("8", "0")


# Two replicas on PostgreSQL -----------------------------------------------------------------


def test_concurrent_sends_of_one_account_and_id_from_two_replicas_count_once(
    replica_channels,
) -> None:  # type: ignore[no-untyped-def]
    first, second = replica_channels
    code = count_metric(first)
    a_alias, b_alias = fresh("ra"), fresh("rb")
    a, b = account(first, a_alias), account(first, b_alias)
    for _ in range(5):
        uid = fresh("evt")
        # Each account's event of the id from both replicas at once, by id and by alias.
        calls = [
            lambda ch=ch, ref=ref, uid=uid: ingest(ch, [event(uid, ref, when=T0)])[0].status
            for ch, ref in ((first, a), (second, a_alias), (first, b_alias), (second, b))
        ]
        statuses = all_at_once(calls)
        assert sorted(statuses[:2]) == sorted([ACCEPTED, DUPLICATE]), statuses  # type: ignore[type-var]
        assert sorted(statuses[2:]) == sorted([ACCEPTED, DUPLICATE]), statuses  # type: ignore[type-var]
    assert (used(second, a, code), used(first, b, code)) == ("5", "5")
