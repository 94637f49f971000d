"""OpenTelemetry: with tracing on, each gRPC call the server answers is a span; off by default.

Tracing instruments grpcio for the whole process, so the traced server runs in a process of
its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_env
from tollbooth import tracing

SCRIPT = """
import json, sys
import grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from billing.v1 import token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD
from tollbooth import tracing
from tollbooth.app import build_deps, build_server
from tollbooth.config import Settings
from tollbooth.db.migrate import upgrade

exporter = InMemorySpanExporter()
assert tracing.setup("", "tollbooth-test", exporter=exporter)
settings = Settings.from_env()
upgrade(settings.database_url)
deps = build_deps(settings)
server, port, _ = build_server(deps, "127.0.0.1:0")
server.start()
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    stub = token_pb2_grpc.TokenServiceStub(channel)
    stub.IssueToken(token_pb2.IssueTokenRequest(principal_id="traced"), metadata=SERVICE_MD)
server.stop(0)
print(json.dumps([(s.name, s.kind.name) for s in exporter.get_finished_spans()]))
"""


def test_tracing_is_off_without_an_endpoint() -> None:
    assert tracing.setup("", "tollbooth-test") is False


def test_a_traced_server_makes_a_span_per_call(tmp_path: Path) -> None:
    env = make_env(f"sqlite:///{tmp_path / 'b.db'}", BILLING_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    spans = json.loads(done.stdout.strip().splitlines()[-1])
    names = {(name, kind) for name, kind in spans}
    assert ("/billing.v1.TokenService/IssueToken", "SERVER") in names, spans
    assert ("/billing.v1.TokenService/IssueToken", "CLIENT") in names, spans
