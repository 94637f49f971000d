"""Many clients, duplicates and retries on PostgreSQL: stored rows equal the distinct ids and
every aggregation equals its value computed independently here.

8 clients (threads, each with its own channel) send the events of a shuffled list holding every
distinct event once plus 10% duplicates, in batches; a fifth of the first attempts get a
deadline too short to finish, so the client cannot know whether the batch committed, and it
resends the same batch (same ids) until it gets an answer. 2,000 sends by default, 10,000
with BILLING_SOAK=1."""

from __future__ import annotations

import datetime as dt
import os
import random
import threading
from collections import defaultdict
from decimal import Decimal

import grpc
import pytest
from sqlalchemy import create_engine, func, select

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD
from tests.helpers import keyed
from tests.usage.support import ACCEPTED, DUPLICATE, NOW, account, event, stamp, usage_stub
from tollbooth.db import normalize_url
from tollbooth.db.models import UsageEvent

SENDS = 10_000 if os.environ.get("BILLING_SOAK") == "1" else 2_000
CLIENTS = 8
BATCH = 50
MODELS = ("small", "medium", "large", "xl")
P0 = NOW - dt.timedelta(days=3)


def dataset(rng: random.Random, accounts: list[str]) -> list[usage_pb2.UsageEvent]:
    distinct = int(SENDS / 1.1)
    events = []
    for i in range(distinct):
        tokens: object
        kind = i % 3
        if kind == 0:
            tokens = rng.randrange(1, 5000)
        elif kind == 1:
            tokens = (
                f"{rng.randrange(0, 10**6)}.{rng.randrange(0, 1000):03d}"  # exact decimal string
            )
        else:
            tokens = rng.randrange(0, 400) / 4  # a double with an exact short form
        events.append(
            event(
                f"c-{i:06d}",
                accounts[i % len(accounts)],
                when=P0 + dt.timedelta(seconds=rng.randrange(0, 2 * 86400)),
                properties={
                    "tokens": tokens,
                    "model": MODELS[rng.randrange(len(MODELS))],
                    "user": f"u{rng.randrange(40)}",
                },
            )
        )
    return events


def expected_usage(events: list[usage_pb2.UsageEvent]) -> dict[tuple[str, str], object]:
    """Each account's aggregates, computed here without the server's code."""
    per: dict[str, list[usage_pb2.UsageEvent]] = defaultdict(list)
    for e in events:
        per[e.account].append(e)
    out: dict[tuple[str, str], object] = {}
    for acct, evs in per.items():

        def tokens(e: usage_pb2.UsageEvent) -> Decimal:
            v = e.properties.fields["tokens"]
            if v.HasField("string_value"):
                return Decimal(v.string_value)
            f = v.number_value
            return Decimal(int(f)) if f == int(f) else Decimal(repr(f))

        latest = max(evs, key=lambda e: (e.event_time.ToDatetime(), e.unique_id))
        by_model: dict[str, Decimal] = defaultdict(Decimal)
        for e in evs:
            by_model[e.properties.fields["model"].string_value] += tokens(e)
        out[(acct, "count")] = len(evs)
        out[(acct, "sum")] = sum((tokens(e) for e in evs), Decimal(0))
        out[(acct, "max")] = max(tokens(e) for e in evs)
        out[(acct, "latest")] = tokens(latest)
        out[(acct, "users")] = len({e.properties.fields["user"].string_value for e in evs})
        out[(acct, "by_model")] = sorted(by_model.items())
    return out


def send_all(port: int, batches: list[list[usage_pb2.UsageEvent]], seed: int, log: dict) -> None:
    rng = random.Random(seed)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = usage_stub(ch)
        for batch in batches:
            request = usage_pb2.IngestEventsRequest(events=batch)
            for attempt in range(50):
                timeout = 0.002 if attempt == 0 and rng.random() < 0.2 else 30
                try:
                    response = stub.IngestEvents(request, metadata=SERVICE_MD, timeout=timeout)
                except grpc.RpcError as err:
                    log["failures"] += 1
                    assert err.code() in (
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.UNAVAILABLE,
                    ), err
                    continue
                for r in response.results:
                    log[r.status] += 1
                break
            else:
                pytest.fail("a batch never got an answer")


@pytest.mark.soak
@pytest.mark.postgres
def test_duplicates_and_retries_from_8_clients_store_each_id_once_and_aggregate_exactly(
    pg_port, pg_url
) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(f"127.0.0.1:{pg_port}") as ch:
        accounts = [account(ch, f"conc-{k}") for k in range(5)]
    rng = random.Random(20261122)
    distinct = dataset(rng, accounts)
    sends = distinct + [rng.choice(distinct) for _ in range(SENDS - len(distinct))]
    rng.shuffle(sends)
    per_client = [sends[k::CLIENTS] for k in range(CLIENTS)]
    logs = [defaultdict(int) for _ in range(CLIENTS)]
    threads = [
        threading.Thread(
            target=send_all,
            args=(pg_port, [c[i : i + BATCH] for i in range(0, len(c), BATCH)], k, logs[k]),
        )
        for k, c in enumerate(per_client)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)

    engine = create_engine(normalize_url(pg_url))
    with engine.connect() as conn:
        stored = conn.execute(
            select(func.count(), func.count(func.distinct(UsageEvent.unique_id)))
        ).one()
        ids = {r[0] for r in conn.execute(select(UsageEvent.unique_id))}
    engine.dispose()
    assert tuple(stored) == (len(distinct), len(distinct))
    assert ids == {e.unique_id for e in distinct}
    answered = sum(log[ACCEPTED] + log[DUPLICATE] for log in logs)
    assert answered == SENDS  # every send got a final answer, accepted or duplicate
    assert sum(log[ACCEPTED] for log in logs) <= len(distinct)
    assert sum(log["failures"] for log in logs) > 0  # the retries were exercised

    expected = expected_usage(distinct)
    with grpc.insecure_channel(f"127.0.0.1:{pg_port}") as ch:
        stub = usage_stub(ch)
        metrics = {
            "count": usage_pb2.Metric(aggregation=usage_pb2.AGGREGATION_COUNT),
            "sum": usage_pb2.Metric(aggregation=usage_pb2.AGGREGATION_SUM, property="tokens"),
            "max": usage_pb2.Metric(aggregation=usage_pb2.AGGREGATION_MAX, property="tokens"),
            "latest": usage_pb2.Metric(aggregation=usage_pb2.AGGREGATION_LATEST, property="tokens"),
            "users": usage_pb2.Metric(
                aggregation=usage_pb2.AGGREGATION_COUNT_UNIQUE, property="user"
            ),
        }
        for code, m in metrics.items():
            m.code, m.event_name = code, "api_call"
            stub.CreateMetric(keyed(usage_pb2.CreateMetricRequest(metric=m)), metadata=SERVICE_MD)
        period = {"start_time": stamp(P0 - dt.timedelta(days=1)), "end_time": stamp(NOW)}
        for acct in accounts:
            for code in metrics:
                got = stub.GetUsage(
                    usage_pb2.GetUsageRequest(account=acct, metric_code=code, **period),
                    metadata=SERVICE_MD,
                ).value
                assert Decimal(got) == Decimal(expected[(acct, code)]), (acct, code)  # type: ignore[arg-type]
            grouped = stub.GetUsage(
                usage_pb2.GetUsageRequest(
                    account=acct, metric_code="sum", group_by="model", **period
                ),
                metadata=SERVICE_MD,
            )
            assert [(g.key, Decimal(g.value)) for g in grouped.groups] == expected[
                (acct, "by_model")
            ]
