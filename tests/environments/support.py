"""Two environments in one deployment, on PostgreSQL: a test database and a live database (each
a throw-away database of its own), one billing server, sidecar and Envoy serving both, and one
Stripe sandbox that both environments' providers talk to.

The sandbox takes test-mode keys only, so the live environment's Stripe key here is a second
test-mode key with BILLING_LIVE_STRIPE_API_BASE naming the sandbox (the one case the settings
allow a test-mode live key); the environments' own state stays in their own databases.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from tests.conftest import PG_ENV, SERVICE_KEY, WEBHOOK_SECRET, make_env
from tests.devstack import Response, Stack, free_port, start_stack, throwaway_postgres
from tollbooth.db.migrate import upgrade
from tollbooth.sandbox.app import start_sandbox
from tollbooth.sandbox.config import SandboxConfig
from tollbooth.webhooks.signature import header

LIVE_SERVICE_KEY = "live-service-key-0123456789"
LIVE_JWT_KEYS = "L1:live-signing-key-one-0123456789abcdefghij"
LIVE_WEBHOOK_SECRET = "whsec_live_environment_secret"
# A test-mode key: the sandbox refuses live-mode ones (see the module's comment).
LIVE_STRIPE_KEY = "sk_test_live_environment_on_the_sandbox"


def live_variables(live_url: str, sandbox_port: int) -> dict[str, str]:
    return {
        "BILLING_LIVE_DATABASE_URL": live_url,
        "BILLING_LIVE_STRIPE_API_KEY": LIVE_STRIPE_KEY,
        "BILLING_LIVE_STRIPE_API_BASE": f"http://127.0.0.1:{sandbox_port}",
        "BILLING_LIVE_STRIPE_WEBHOOK_SECRET": LIVE_WEBHOOK_SECRET,
        "BILLING_LIVE_SERVICE_KEYS": LIVE_SERVICE_KEY,
        "BILLING_LIVE_JWT_KEYS": LIVE_JWT_KEYS,
    }


@dataclass(frozen=True)
class Environment:
    name: str
    service_key: str
    webhook_secret: str
    database_url: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.service_key),)


@dataclass
class Pair:
    """Both environments of one running stack."""

    stack: Stack
    channel: grpc.Channel
    test: Environment
    live: Environment
    sidecar_url: str

    def env(self, name: str) -> Environment:
        return self.test if name == "test" else self.live

    def rest(
        self,
        method: str,
        path: str,
        body: object | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return self.stack.request(method, path, body, headers)

    def send_event(self, secret: str, **fields: Any) -> tuple[int, dict[str, Any], str]:
        """POST a signed event to the sidecar: its status, answer and event id."""
        event_id = f"evt_{uuid.uuid4().hex}"
        body = json.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": "tollbooth.environment_probe",
                "api_version": "2024-06-20",
                "created": int(time.time()),
                "livemode": False,
                "data": {"object": {"id": f"obj_{uuid.uuid4().hex[:8]}", "object": "thing"}},
                **fields,
            }
        ).encode()
        reply = httpx.post(
            self.sidecar_url,
            content=body,
            headers={"Content-Type": "application/json", "Stripe-Signature": header(body, secret)},
            timeout=30,
        )
        return reply.status_code, reply.json(), event_id


def admin_url() -> str:
    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        import pytest

        if os.environ.get("BILLING_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_ENV} is required here")
        pytest.skip(f"the environments tests need {PG_ENV} (two PostgreSQL databases)")
    return url


@contextmanager
def two_environments(tmp: Path) -> Iterator[Pair]:
    admin = admin_url()
    with ExitStack() as stack:
        test_url = stack.enter_context(throwaway_postgres(admin, "tollbooth_env_test"))
        live_url = stack.enter_context(throwaway_postgres(admin, "tollbooth_env_live"))
        upgrade(live_url)  # start_stack migrates the test database
        sandbox_port = free_port()
        sandbox = start_sandbox(
            SandboxConfig(
                webhook_secret=WEBHOOK_SECRET,
                port=sandbox_port,
                db_path=tmp / "sandbox.db",
                webhook_url="",  # these tests send their own events
            )
        )
        stack.callback(sandbox.stop)
        env = make_env(
            test_url,
            BILLING_SANDBOX_PORT=str(sandbox_port),
            **live_variables(live_url, sandbox_port),
        )
        running = start_stack(test_url, env, tmp)
        stack.callback(running.close)
        assert running.deps.others, "the live environment is served"
        channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}"))
        grpc.channel_ready_future(channel).result(timeout=10)
        yield Pair(
            running,
            channel,
            Environment("test", SERVICE_KEY, WEBHOOK_SECRET, test_url),
            Environment("live", LIVE_SERVICE_KEY, LIVE_WEBHOOK_SECRET, live_url),
            f"http://127.0.0.1:{running.settings.sidecar_port}/v1/billing/webhooks",
        )
