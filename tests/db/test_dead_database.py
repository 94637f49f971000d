"""A dead PostgreSQL is found out in bounded time (`tollbooth.db.make_engine`'s connection
settings): an RPC answers UNAVAILABLE `SERVICE_UNAVAILABLE` within the connect timeout instead
of holding its worker thread until the caller gives up, and every pooled connection has TCP
keepalives and a TCP user timeout, so a path that stops acknowledging is given up by the
kernel in seconds, not after the system's two hours of keepalive idle or 15 retransmissions."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import text

from billing.v1 import token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD, make_env
from tests.devstack import serving
from tests.helpers import error_reason
from tests.tcpproxy import Proxy
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db import CONNECT_TIMEOUT_SEC, TCP_USER_TIMEOUT_SEC, Database

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxy(pg_shared_url: str) -> Iterator[Proxy]:
    p = Proxy.to(pg_shared_url)
    yield p
    p.close()


def issue(stub: token_pb2_grpc.TokenServiceStub, timeout: float) -> token_pb2.IssueTokenResponse:
    return stub.IssueToken(
        token_pb2.IssueTokenRequest(
            principal_id=f"dead-{uuid.uuid4().hex[:8]}", user_id="u1", scopes=["checkout"]
        ),
        metadata=SERVICE_MD,
        timeout=timeout,
    )


def test_a_database_that_answers_nothing_is_unavailable_within_the_connect_timeout(
    pg_shared_url: str, proxy: Proxy
) -> None:
    deps = Deps.build(Settings.from_env(make_env(proxy.through(pg_shared_url))))
    try:
        with serving(deps) as channel:
            stub = token_pb2_grpc.TokenServiceStub(channel)
            assert issue(stub, timeout=10).access_token  # alive: connections in the pool
            proxy.play_dead()
            deadline = 4 * CONNECT_TIMEOUT_SEC
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as err:
                    issue(stub, timeout=deadline)
                took = time.monotonic() - started
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (
                    err.value.code(),
                    round(took, 1),
                )
                assert error_reason(err.value) == "SERVICE_UNAVAILABLE"
                assert took < 2 * CONNECT_TIMEOUT_SEC + 2, took
    finally:
        proxy.close()  # wakes any connection attempt still waiting
        deps.db.dispose()


def test_pooled_connections_carry_keepalives_and_a_tcp_user_timeout(pg_shared_url: str) -> None:
    db = Database(pg_shared_url)
    try:
        with db.transaction() as session:
            conn = session.connection().connection.dbapi_connection
            assert conn is not None
            assert session.execute(text("SELECT 1")).scalar() == 1
            sock = socket.socket(fileno=conn.fileno())
            try:
                options = {
                    "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                }
            finally:
                sock.detach()
        assert options["keepalive"] == 1
        # An idle connection whose peer is gone is given up within a minute or so.
        assert options["idle"] + options["interval"] * options["count"] <= 60, options
        assert options["user_timeout_ms"] == TCP_USER_TIMEOUT_SEC * 1000, options
    finally:
        db.dispose()


def test_the_database_url_overrides_the_connection_settings(pg_shared_url: str) -> None:
    db = Database(f"{pg_shared_url}?connect_timeout=3&tcp_user_timeout=7000")
    try:
        with db.transaction() as session:
            conn = session.connection().connection.dbapi_connection
            assert conn is not None
            params = conn.info.get_parameters()
        assert (params["connect_timeout"], params["tcp_user_timeout"]) == ("3", "7000")
        assert params["keepalives"] == "1"
    finally:
        db.dispose()
