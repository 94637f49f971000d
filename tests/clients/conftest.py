"""Fixtures for the client tests: a recording channel and tiny scripted gRPC servers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest


@dataclass
class Sent:
    """One call as it left the client (below BillingClient's own interceptor)."""

    method: str
    timeout: float | None
    metadata: dict[str, str]
    request: Any


@dataclass
class Recorder(grpc.UnaryUnaryClientInterceptor):
    """Records what BillingClient actually puts on the wire, then lets the call through."""

    sent: list[Sent] = field(default_factory=list)

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        d = client_call_details
        self.sent.append(Sent(d.method, d.timeout, dict(d.metadata or ()), request))
        return continuation(client_call_details, request)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def recorded_channel(grpc_port: int, recorder: Recorder) -> Iterator[grpc.Channel]:
    """A real channel to the billing server with the recorder underneath the client."""
    raw = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    grpc.channel_ready_future(raw).result(timeout=10)
    yield grpc.intercept_channel(raw, recorder)
    raw.close()


@dataclass
class FakeServer:
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeServer]]:
    """Start a real grpc server with the (add_to_server, servicer) pairs given."""
    servers: list[grpc.Server] = []

    def start(*adders: tuple[Callable[[Any, grpc.Server], None], Any]) -> FakeServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for add, servicer in adders:
            add(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return FakeServer(port)

    yield start
    for server in servers:
        server.stop(grace=None).wait()


class Calls(list):  # type: ignore[type-arg]
    """A thread-safe append for servicers that record their calls."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, item: Any) -> int:
        with self._lock:
            self.append(item)
            return len(self)
