"""A billing server whose payment provider is a running sandbox (the Stripe double): what a
test of a product or price linked to a Stripe object needs, since the link is checked there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
import stripe

from tests.conftest import WEBHOOK_SECRET, make_env
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.sandbox.app import SandboxHandle, reserve_port, start_sandbox
from tollbooth.sandbox.config import SandboxConfig


@dataclass
class Dashboard:
    """The sandbox called directly, as an operator does from Stripe's dashboard."""

    stripe: stripe.StripeClient

    def stripe_product(self) -> str:
        made = self.stripe.v1.products.create(params={"name": f"Dash {uuid.uuid4().hex[:6]}"})
        return str(made.id)

    def stripe_price(self, amount: int = 1000) -> str:
        made = self.stripe.v1.prices.create(
            params={"product": self.stripe_product(), "currency": "usd", "unit_amount": amount}
        )
        return str(made.id)


@dataclass
class Linked(Dashboard):
    channel: grpc.Channel
    sandbox: SandboxHandle
    deps: Deps


def dashboard_of(sandbox: SandboxHandle) -> Dashboard:
    return Dashboard(
        stripe.StripeClient(
            "sk_test_catalog_tests", base_addresses={"api": sandbox.url}, max_network_retries=0
        )
    )


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    held = reserve_port()
    handle = start_sandbox(
        SandboxConfig(
            webhook_secret=WEBHOOK_SECRET,
            port=held.getsockname()[1],
            db_path=tmp_path_factory.mktemp("sandbox") / "sandbox.db",
            webhook_url="",
        ),
        sock=held,
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def linked(shared_database_url: str, sandbox: SandboxHandle) -> Iterator[Linked]:
    """One billing server per module (and database) on the sandbox."""
    from tests.devstack import serving

    env = make_env(shared_database_url, BILLING_SANDBOX_PORT=str(sandbox.config.port))
    deps = Deps.build(Settings.from_env(env))
    try:
        with serving(deps) as channel:
            yield Linked(dashboard_of(sandbox).stripe, channel, sandbox, deps)
    finally:
        deps.db.dispose()


@pytest.fixture
def stalls(linked: Linked) -> Iterator[Linked]:
    """`linked`, its sandbox's fault rules cleared after the test."""
    yield linked
    linked.sandbox.stalls.clear()
