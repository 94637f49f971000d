"""`kill -9` of the server during stream ingest: every acknowledged id is stored exactly once
and burns its credits exactly once.

A client streams events without pause; every few seconds the server subprocess is killed with
SIGKILL and started again on the same port. The client keeps the events it sent but has no
acknowledgement for, and resends them first on its next stream: an event whose commit finished
just before the kill comes back as a duplicate. At the end every event sent was acknowledged,
every acknowledged id is stored exactly once, and nothing else is stored. A metric burns
0.001 credits per unit of each event's `n`, from a grant that runs out midway: what the
balance gave plus the overage equals 0.001 x the sum of `n` over the stored events, and every
event's burn is in the ledger once (or in the overage). 3 kills by default, 20 with
BILLING_SOAK=1.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, func, select

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD, make_env
from tests.credit.support import check_invariants_at, grant
from tests.devstack import free_port
from tests.usage.burn_support import Db, burning_metric
from tests.usage.support import ACCEPTED, DUPLICATE, account, event, usage_stub
from tollbooth.db import normalize_url
from tollbooth.db.models import UsageEvent

CYCLES = 20 if os.environ.get("BILLING_SOAK") == "1" else 3
RATE = Decimal("0.001")
GRANT = "20"


class Server:
    """The billing server as a subprocess that can be killed and started again."""

    def __init__(self, database_url: str) -> None:
        self.port = free_port()
        self.env = {**os.environ, **make_env(database_url), "BILLING_GRPC_PORT": str(self.port)}
        self.env["BILLING_LOG_LEVEL"] = "WARNING"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tollbooth.cli", "serve-grpc"], env=self.env
        )
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, "server exited at start"
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        return
                except grpc.RpcError:
                    time.sleep(0.1)
        raise AssertionError("server did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sender:
    """Streams new events; after a broken stream, resends the unacknowledged ones first."""

    def __init__(self, port: int, account_id: str) -> None:
        self.port = port
        self.account = account_id
        self.lock = threading.Lock()
        self.pending: OrderedDict[str, usage_pb2.UsageEvent] = OrderedDict()
        self.sent: set[str] = set()
        self.acked: dict[str, int] = {}
        self.stop = threading.Event()
        self.streams = 0
        self.next = 0

    def requests(self) -> Iterator[usage_pb2.StreamEventsRequest]:
        with self.lock:
            resend = list(self.pending.values())
        for e in resend:
            yield usage_pb2.StreamEventsRequest(event=e)
        while not self.stop.is_set():
            with self.lock:
                uid = f"k9-{self.next:07d}"
                self.next += 1
                e = event(uid, self.account, properties={"n": self.next})
                self.pending[uid] = e
                self.sent.add(uid)
            yield usage_pb2.StreamEventsRequest(event=e)
            time.sleep(0.001)

    def run(self) -> None:
        while True:
            done = self.stop.is_set()
            try:
                with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
                    self.streams += 1
                    responses = usage_stub(ch).StreamEvents(
                        self.requests(), metadata=SERVICE_MD, timeout=120, wait_for_ready=True
                    )
                    for response in responses:
                        with self.lock:
                            for r in response.results:
                                assert r.status in (ACCEPTED, DUPLICATE), r
                                self.acked[r.unique_id] = r.status
                                self.pending.pop(r.unique_id, None)
                if done:
                    return  # a whole stream ran after stop: everything sent was answered
            except grpc.RpcError:
                time.sleep(0.05)  # the server was killed: reconnect and resend


@pytest.mark.soak
@pytest.mark.postgres
def test_every_acknowledged_event_survives_kill_9_exactly_once(pg_url: str) -> None:
    server = Server(pg_url)
    server.start()
    sender: Sender | None = None
    thread: threading.Thread | None = None
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            acct = account(ch, "kill9")
            grant(ch, acct, GRANT)
            burning_metric(ch, "k9_n", str(RATE), aggregation=usage_pb2.AGGREGATION_SUM, prop="n")
        sender = Sender(server.port, acct)
        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        rng = random.Random(9)
        for _ in range(CYCLES):
            time.sleep(rng.uniform(1.0, 2.5))
            server.kill9()
            server.start()
        time.sleep(1.0)
        sender.stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive()
    finally:
        if sender is not None:
            sender.stop.set()
        server.stop()

    assert sender.streams >= CYCLES + 1
    assert not sender.pending
    assert set(sender.acked) == sender.sent  # every event sent was acknowledged at last
    assert len(sender.sent) > 100
    engine = create_engine(normalize_url(pg_url))
    with engine.connect() as conn:
        rows = conn.execute(
            select(UsageEvent.unique_id, func.count()).group_by(UsageEvent.unique_id)
        ).all()
        props = dict(conn.execute(select(UsageEvent.unique_id, UsageEvent.properties)).all())
    engine.dispose()
    stored = dict((uid, n) for uid, n in rows)
    assert set(stored) == sender.sent  # each acknowledged id present, nothing else
    assert set(stored.values()) == {1}

    asked = sum((RATE * props[uid]["n"] for uid in stored), Decimal(0))
    db = Db(pg_url)
    try:
        ((left, overage),) = db.balances().values()
        burned = Counter(
            uid for row in db.burn_rows() for uid in json.loads(row.attributes["event_ids"])
        )
    finally:
        db.close()
    assert Decimal(GRANT) - left + overage == asked  # no burn applied twice, none lost
    assert overage > 0 and left == 0  # the grant ran out midway
    assert set(burned.values()) == {1} and set(burned) <= set(stored)
    check_invariants_at(pg_url)
