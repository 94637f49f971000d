"""Shortcuts for the account tests: stubs, the rich error's metadata, a PostgreSQL shop."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import stripe
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from billing.v1 import account_pb2, account_pb2_grpc
from tests.checkout.support import Shop
from tests.conftest import SERVICE_MD, WEBHOOK_SECRET, make_env
from tests.devstack import free_port, start_stack
from tollbooth.sandbox.app import start_sandbox
from tollbooth.sandbox.config import SandboxConfig


def error_metadata(err: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return dict(info.metadata)
    return {}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create(
    channel: grpc.Channel, *, alias: str = "", email: str = "", name: str = "", **extra: object
) -> account_pb2.Account:
    return account_pb2_grpc.AccountServiceStub(channel).CreateAccount(
        account_pb2.CreateAccountRequest(alias=alias, email=email, name=name, **extra),  # type: ignore[arg-type]
        metadata=SERVICE_MD,
        timeout=10,
    )


def start_pg_shop(database_url: str, tmp: Path) -> Shop:
    """Server, sidecar, Envoy and the sandbox (delivering events to Envoy) on `database_url`."""
    sandbox_port = free_port()
    stack = start_stack(
        database_url, make_env(database_url, BILLING_SANDBOX_PORT=str(sandbox_port)), tmp
    )
    sandbox = start_sandbox(
        SandboxConfig(
            webhook_secret=WEBHOOK_SECRET,
            port=sandbox_port,
            db_path=tmp / "sandbox.db",
            webhook_url=f"{stack.rest_url}/v1/billing/webhooks",
            retry_base_sec=0.05,
            retry_max_sec=0.5,
        )
    )
    client = stripe.StripeClient(
        "sk_test_accounts", base_addresses={"api": sandbox.url}, max_network_retries=0
    )
    return Shop(stack, sandbox, client)
