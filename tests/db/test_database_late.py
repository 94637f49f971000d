"""A database that is not there when the serving processes start, and comes up later (README,
Configuration: `serve-grpc` and `serve-sidecar` only warn about a database that does not answer
yet, and answer UNAVAILABLE until it does): real `serve-grpc` and `serve-sidecar` processes
started against a port where nothing listens answer UNAVAILABLE `SERVICE_UNAVAILABLE` and
/readyz 503; once PostgreSQL answers on that port (a TCP proxy to it, started late), the same
processes, never restarted, serve every call (writes, reads, a metric created then burning
through usage ingest) and /readyz answers 200. Likewise `serve-notifications`: it keeps
running while the database is away and delivers the outbox once it answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import make_url

from billing.v1 import token_pb2, token_pb2_grpc, usage_pb2
from tests.conftest import SERVICE_MD, make_env
from tests.credit.support import grant
from tests.devstack import free_port
from tests.helpers import error_reason
from tests.notifications.support import Receiver, ReceiverServer, enqueue
from tests.tcpproxy import Proxy
from tests.usage.burn_support import balance, burning_metric
from tests.usage.support import ACCEPTED, event, usage_stub
from tollbooth.db import Database, normalize_url
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints

pytestmark = pytest.mark.postgres


def _on_port(url: str, port: int) -> str:
    """Database `url` reached on loopback `port` (plain messages: what the proxy forwards)."""
    return (
        make_url(normalize_url(url))
        .set(host="127.0.0.1", port=port)
        .update_query_dict({"sslmode": "disable", "gssencmode": "disable"})
        .render_as_string(hide_password=False)
    )


def _wait(what: str, done: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.1)  # poll (bounded)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def _readyz(port: int) -> tuple[int, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return None  # not listening yet


def _serving(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _issue(channel: grpc.Channel, principal: str) -> Any:
    """IssueToken's answer, or its RpcError."""
    try:
        return token_pb2_grpc.TokenServiceStub(channel).IssueToken(
            token_pb2.IssueTokenRequest(principal_id=principal, scopes=["credits:read"]),
            metadata=SERVICE_MD,
            timeout=15,
        )
    except grpc.RpcError as err:
        return err


@pytest.fixture
def processes() -> Iterator[Callable[[dict[str, str], str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], command: str) -> subprocess.Popen[bytes]:
        procs.append(subprocess.Popen([sys.executable, "-m", "tollbooth.cli", command], env=env))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_processes_started_before_the_database_serve_once_it_answers_without_a_restart(
    pg_shared_url: str, processes: Callable[[dict[str, str], str], subprocess.Popen[bytes]]
) -> None:
    db_port, grpc_port, sidecar_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        **make_env(_on_port(pg_shared_url, db_port)),
        "BILLING_GRPC_PORT": str(grpc_port),
        "BILLING_SIDECAR_PORT": str(sidecar_port),
        "BILLING_LOG_LEVEL": "WARNING",
    }
    processes(env, "serve-grpc")
    processes(env, "serve-sidecar")
    proxy: Proxy | None = None
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        try:
            _wait("serve-grpc serving", lambda: _serving(channel), 60)
            _wait("serve-sidecar answering", lambda: _readyz(sidecar_port) is not None, 60)
            principal = f"late-{uuid.uuid4().hex[:8]}"
            err = _issue(channel, principal)
            assert isinstance(err, grpc.RpcError), err
            assert (err.code(), error_reason(err)) == (
                grpc.StatusCode.UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
            )
            assert _readyz(sidecar_port) == (
                503,
                {"ready": False, "database": "unreachable", "grpc": "serving"},
            )

            proxy = Proxy.to(pg_shared_url, listen_port=db_port)  # the database comes up

            _wait("a call to answer", lambda: not isinstance(_issue(channel, principal), Exception))
            acct = _issue(channel, principal).billing_account_id
            grant(channel, acct, "10")
            code = f"late{uuid.uuid4().hex[:8]}"
            # An event name of its own: the shared database holds other tests' metrics.
            burning_metric(channel, code, "1", event_name=code)
            reply = usage_stub(channel).IngestEvents(
                usage_pb2.IngestEventsRequest(events=[event(f"{code}-1", acct, name=code)]),
                metadata=SERVICE_MD,
                timeout=15,
            )
            assert [r.status for r in reply.results] == [ACCEPTED]
            assert balance(channel, acct) == ("9", "0")
            _wait("/readyz 200", lambda: (_readyz(sidecar_port) or (0,))[0] == 200)
            assert _readyz(sidecar_port) == (
                200,
                {"ready": True, "database": "ok", "grpc": "serving"},
            )
        finally:
            if proxy is not None:
                proxy.close()


def test_a_delivery_process_started_before_the_database_delivers_once_it_answers(
    pg_url: str, processes: Callable[[dict[str, str], str], subprocess.Popen[bytes]]
) -> None:
    """`serve-notifications` started against a port where nothing listens keeps running; once
    PostgreSQL answers there, it delivers what the outbox holds, without a restart."""
    db_port = free_port()
    env = {
        **os.environ,
        **make_env(
            _on_port(pg_url, db_port),
            BILLING_NOTIFY_POLL_MS="50",
            BILLING_NOTIFY_TIMEOUT_SEC="2",
            BILLING_LOG_LEVEL="WARNING",
        ),
    }
    receiver = Receiver()
    server = ReceiverServer(receiver)
    db = Database(pg_url)
    proxy: Proxy | None = None
    try:
        with db.transaction() as s:
            _, receiver.secret = endpoints.create(s, endpoints.Fields(url=receiver.url), utcnow())
        sent = enqueue(db, "credits.granted", "acct_late", {"amount": "1"})
        started = processes(env, "serve-notifications")
        time.sleep(2)  # let it run its passes (each failing) while the database is away
        assert started.poll() is None and receiver.accepted == []
        proxy = Proxy.to(pg_url, listen_port=db_port)  # the database comes up
        (got,) = receiver.wait_for(1, timeout=30)
        assert got["id"] == sent
        assert started.poll() is None  # the same process, never restarted
    finally:
        if proxy is not None:
            proxy.close()
        server.close()
        db.dispose()
