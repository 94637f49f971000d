"""Streams cannot starve a replica: a separate budget of open streams, a per-caller cap, an
idle timeout; and Envoy's active health checks take a failing replica out of rotation."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from billing.v1 import credit_pb2, credit_pb2_grpc, usage_pb2, usage_pb2_grpc
from tests.conftest import OTHER_SERVICE_KEY, SERVICE_KEY, SERVICE_MD
from tests.helpers import error_reason
from tests.limits.support import gateway, port_of, server, token


class IdleStreams:
    """`n` StreamEvents calls that send nothing until released; each one's final code."""

    def __init__(self, channel: grpc.Channel, n: int, key: str = SERVICE_KEY) -> None:
        self.release = threading.Event()
        self.codes: list[grpc.StatusCode | None] = [None] * n
        self.reasons: list[str | None] = [None] * n
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        self.calls = [
            stub.StreamEvents(self._silence(), metadata=(("x-api-key", key),), timeout=60)
            for _ in range(n)
        ]
        self.threads = [threading.Thread(target=self._drain, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _silence(self) -> Iterator[usage_pb2.StreamEventsRequest]:
        self.release.wait(60)
        return
        yield  # a generator that sends nothing

    def _drain(self, i: int) -> None:
        try:
            for _ in self.calls[i]:
                pass
            self.codes[i] = grpc.StatusCode.OK
        except grpc.RpcError as err:
            self.codes[i] = err.code()
            self.reasons[i] = error_reason(err)

    def refused(self) -> int:
        return sum(1 for c in self.codes if c == grpc.StatusCode.RESOURCE_EXHAUSTED)

    def wait_refused(self, expected: int, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.refused() < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.refused()

    def close(self) -> None:
        self.release.set()
        for call in self.calls:
            call.cancel()
        for t in self.threads:
            t.join(timeout=10)


def balance(channel: grpc.Channel, account: str) -> str:
    stub = credit_pb2_grpc.CreditServiceStub(channel)
    reply = stub.GetBalance(
        credit_pb2.GetBalanceRequest(account=account, type="units"),
        metadata=SERVICE_MD,
        timeout=3,
    )
    return str(reply.balance)


def test_forty_idle_streams_leave_health_and_get_balance_answering(database_url: str) -> None:
    env = {"BILLING_GRPC_MAX_STREAMS": "8", "BILLING_GRPC_MAX_STREAMS_PER_KEY": "100"}
    with server(database_url, **env) as (ch, deps, _health):
        assert deps.settings.grpc_workers == 16
        account = f"streams-{uuid.uuid4().hex[:8]}"
        token(ch, account)  # the account exists
        streams = IdleStreams(ch, 40)
        try:
            assert streams.wait_refused(32) == 32
            assert set(streams.reasons) == {None, "RATE_LIMITED"}
            # 8 streams are open and idle; unary calls and health still have workers.
            health = health_pb2_grpc.HealthStub(ch)
            for _ in range(5):
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                assert balance(ch, account) == "0"
            assert sum(1 for c in streams.codes if c is None) == 8
        finally:
            streams.close()


def test_open_streams_are_capped_per_caller(database_url: str) -> None:
    env = {"BILLING_GRPC_MAX_STREAMS": "10", "BILLING_GRPC_MAX_STREAMS_PER_KEY": "3"}
    with server(database_url, **env) as (ch, _deps, _health):
        mine = IdleStreams(ch, 5)
        try:
            assert mine.wait_refused(2) == 2
            theirs = IdleStreams(ch, 1, key=OTHER_SERVICE_KEY)
            try:
                time.sleep(0.5)
                assert theirs.codes == [None]  # another key still opens a stream
            finally:
                theirs.close()
        finally:
            mine.close()


def test_an_idle_stream_is_cancelled_and_frees_its_place(database_url: str) -> None:
    env = {
        "BILLING_GRPC_STREAM_IDLE_SEC": "1",
        "BILLING_GRPC_MAX_STREAMS": "1",
        "BILLING_GRPC_MAX_STREAMS_PER_KEY": "1",
    }
    with server(database_url, **env) as (ch, _deps, _health):
        idle = IdleStreams(ch, 1)
        try:
            idle.threads[0].join(timeout=20)
            assert idle.codes == [grpc.StatusCode.CANCELLED]
        finally:
            idle.close()
        # Its place is free again: a stream that sends and ends is served.
        stub = usage_pb2_grpc.UsageServiceStub(ch)
        replies = list(stub.StreamEvents(iter([]), metadata=SERVICE_MD, timeout=10))
        assert replies == []


@pytest.mark.envoy
def test_envoy_takes_a_failing_replica_out_of_rotation_until_it_recovers(
    database_url: str, tmp_path: Path
) -> None:
    with (
        server(database_url) as (one, _d1, _h1),
        server(database_url) as (two, _d2, health_two),
        gateway(database_url, tmp_path, [port_of(one), port_of(two)]) as gw,
    ):
        failing = f"127.0.0.1:{port_of(two)}::health_flags::/failed_active_hc"

        def flags_of_two() -> bool:
            return failing in gw.clusters()

        health_two.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        deadline = time.monotonic() + 20
        while not flags_of_two() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert flags_of_two()
        account = f"hc-{uuid.uuid4().hex[:8]}"
        token(one, account)
        # Every call lands on the healthy replica.
        for _ in range(10):
            reply = gw.request(
                "GET",
                f"/mgt/v1/accounts/{account}/credits/balance?type=units",
                headers={"x-api-key": SERVICE_KEY},
            )
            assert reply.status == 200, reply.body
        health_two.set("", health_pb2.HealthCheckResponse.SERVING)
        deadline = time.monotonic() + 20
        while flags_of_two() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not flags_of_two()


def test_health_checks_are_not_logged_at_info(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Envoy checks every replica every 2 s: those calls stay out of the INFO log."""
    with server(database_url) as (ch, _deps, _health):
        caplog.set_level(logging.INFO, logger="tollbooth.rpc")
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        account = f"log-{uuid.uuid4().hex[:8]}"
        token(ch, account)
        logged = [r.method for r in caplog.records if getattr(r, "event", None) == "rpc"]
    assert "/billing.v1.TokenService/IssueToken" in logged
    assert not [m for m in logged if m.startswith("/grpc.health.v1.Health/")]
