"""Concurrent senders of the same events on PostgreSQL: each event burns once, every balance
stays exact, and burns of many accounts in one batch never deadlock.

8 clients (threads, each with its own channel) send every event, each in its own shuffled
order, through IngestEvents, StreamEvents and IngestEvent; some first attempts get a deadline
too short to finish and are resent. Events spread over 6 accounts and burn through two metrics
(a count on `units`, a sum on `tok`); some balances are too small, so part of the burn is
overage. 300 distinct events by default, 3,000 with BILLING_SOAK=1.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections import Counter, defaultdict
from decimal import Decimal

import grpc
import pytest

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD
from tests.credit.support import check_invariants_at, grant
from tests.usage.burn_support import Db, burning_metric
from tests.usage.support import ACCEPTED, DUPLICATE, account, event, usage_stub

DISTINCT = 3_000 if os.environ.get("BILLING_SOAK") == "1" else 300
CLIENTS = 8
BATCH = 30
COUNT_RATE, SUM_RATE = Decimal("0.25"), Decimal("0.001")
GRANTS = {"units": ["1000", "5", "1000", "2", "1000", "0"], "tok": ["1000", "1000", "3", "0"]}


def send(port: int, events: list[usage_pb2.UsageEvent], k: int, log: Counter[str]) -> None:
    rng = random.Random(k)
    path = k % 3
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = usage_stub(ch)
        chunks = (
            [[e] for e in events]
            if path == 2
            else [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        )
        for chunk in chunks:
            for attempt in range(50):
                timeout = 0.002 if attempt == 0 and rng.random() < 0.1 else 30
                try:
                    if path == 0:
                        results = stub.IngestEvents(
                            usage_pb2.IngestEventsRequest(events=chunk),
                            metadata=SERVICE_MD,
                            timeout=timeout,
                        ).results
                    elif path == 1:
                        messages = [
                            usage_pb2.StreamEventsRequest(events=chunk[i : i + 10])
                            for i in range(0, len(chunk), 10)
                        ]
                        results = [
                            r
                            for resp in stub.StreamEvents(
                                iter(messages), metadata=SERVICE_MD, timeout=timeout
                            )
                            for r in resp.results
                        ]
                    else:
                        results = [
                            stub.IngestEvent(
                                usage_pb2.IngestEventRequest(event=chunk[0]),
                                metadata=SERVICE_MD,
                                timeout=timeout,
                            )
                        ]
                except grpc.RpcError as err:
                    # Anything but a deadline (a deadlock, an error) fails the test.
                    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
                    log["retries"] += 1
                    continue
                assert len(results) == len(chunk)
                for r in results:
                    assert r.status in (ACCEPTED, DUPLICATE), r
                    log[r.status] += 1
                break
            else:
                pytest.fail("a send never got an answer")


@pytest.mark.postgres
@pytest.mark.soak
def test_events_sent_by_8_clients_at_once_burn_exactly_once(pg_port, pg_url) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(f"127.0.0.1:{pg_port}") as ch:
        accounts = [account(ch, f"burn-conc-{i}") for i in range(6)]
        for ctype, amounts in GRANTS.items():
            for acct, amount in zip(accounts, amounts, strict=False):
                if amount != "0":
                    grant(ch, acct, amount, credit_type=ctype)
        burning_metric(ch, "calls", str(COUNT_RATE))
        burning_metric(
            ch,
            "tokens",
            str(SUM_RATE),
            aggregation=usage_pb2.AGGREGATION_SUM,
            prop="tokens",
            credit_type="tok",
        )
    rng = random.Random(1122)
    events = [
        event(f"bc-{i:05d}", accounts[i % 6], properties={"tokens": rng.randrange(0, 3000)})
        for i in range(DISTINCT)
    ]
    wanted: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for e in events:
        wanted[(e.account, "units")] += COUNT_RATE
        wanted[(e.account, "tok")] += SUM_RATE * int(e.properties["tokens"])
    logs = [Counter[str]() for _ in range(CLIENTS)]
    orders = [rng.sample(events, len(events)) for _ in range(CLIENTS)]
    threads = [
        threading.Thread(target=send, args=(pg_port, orders[k], k, logs[k])) for k in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)

    total = sum(logs, Counter[str]())
    assert total[ACCEPTED] + total[DUPLICATE] == CLIENTS * DISTINCT
    assert total[ACCEPTED] <= DISTINCT
    db = Db(pg_url)
    try:
        balances = db.balances()
        granted = {
            (acct, ctype): Decimal(amount)
            for ctype, amounts in GRANTS.items()
            for acct, amount in zip(accounts, amounts, strict=False)
        }
        for key, asked in wanted.items():
            left, over = balances[key]
            taken = granted.get(key, Decimal(0)) - left
            assert taken + over == asked, key
            assert over == max(asked - granted.get(key, Decimal(0)), Decimal(0)), key
        burned = Counter(
            (row.reason, uid)
            for row in db.burn_rows()
            for uid in json.loads(row.attributes["event_ids"])
        )
        assert set(burned.values()) == {1}
        # Each event burned once per metric: those the balance covered are in the ledger.
        assert {uid for _, uid in burned} <= {e.unique_id for e in events}
        depleted = Counter((n["billing_account_id"], n["credit_type"]) for n in db.depletions())
        assert set(depleted.values()) <= {1}
        for key, asked in wanted.items():
            if Decimal(0) < granted.get(key, Decimal(0)) < asked:
                assert depleted[key] == 1, key
    finally:
        db.close()
    check_invariants_at(pg_url)
