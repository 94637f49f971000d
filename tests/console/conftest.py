"""The console's world: server, sidecar (with the console) and a real Envoy on SQLite, the
Stripe sandbox delivering through a gate that can be closed, and headless Chromium (Debian's
package). Screenshots land in var/test-artifacts/console-*.png."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.checkout.support import Gate, Shop, wait_for
from tests.conftest import WEBHOOK_SECRET, make_env
from tests.devstack import free_port, migrated_sqlite, start_stack
from tollbooth.sandbox.app import start_sandbox
from tollbooth.sandbox.config import SandboxConfig


class ConsoleWorld(Shop):
    gate: Gate

    def settled(self, timeout: float = 60.0) -> None:
        """Every event the sandbox emitted has been accepted (2xx) through Envoy."""

        def done() -> bool:
            store = self.sandbox.app.state.store
            with store.lock:
                return store.next_due_at() is None

        wait_for(done, timeout, "the sandbox to deliver every event")

    def close(self) -> None:
        self.sandbox.stop()
        self.gate.stop()
        self.stack.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleWorld]:
    tmp = tmp_path_factory.mktemp("console")
    url = migrated_sqlite(tmp / "billing.db")
    sandbox_port = free_port()
    stack = start_stack(url, make_env(url, BILLING_SANDBOX_PORT=str(sandbox_port)), tmp)
    gate = Gate(f"{stack.rest_url}/v1/billing/webhooks")
    try:
        sandbox = start_sandbox(
            SandboxConfig(
                webhook_secret=WEBHOOK_SECRET,
                port=sandbox_port,
                db_path=tmp / "sandbox.db",
                webhook_url=gate.url,
                retry_base_sec=0.05,
                retry_max_sec=0.5,
            )
        )
    except Exception:
        gate.stop()
        stack.close()
        raise
    client = stripe.StripeClient(
        "sk_test_console", base_addresses={"api": sandbox.url}, max_network_retries=0
    )
    w = ConsoleWorld(stack, sandbox, client)
    w.gate = gate
    yield w
    w.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any) -> Any:
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    return pg
