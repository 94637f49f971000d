"""Sandbox fixtures: one sandbox and one receiver per module, loopback only, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from tests.sandbox.support import WEBHOOK_SECRET, Receiver, client_for
from tollbooth.sandbox.app import SandboxHandle, start_sandbox
from tollbooth.sandbox.config import Faults, SandboxConfig


def sandbox_config(db_path: Path, webhook_url: str, faults: str = "") -> SandboxConfig:
    return SandboxConfig(
        webhook_secret=WEBHOOK_SECRET,
        port=0,
        db_path=db_path,
        webhook_url=webhook_url,
        faults=Faults.parse(faults),
        retry_base_sec=0.05,
        retry_max_sec=0.2,
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def sandbox(
    receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxHandle]:
    db = tmp_path_factory.mktemp("sandbox") / "sandbox.db"
    handle = start_sandbox(sandbox_config(db, receiver.url))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(sandbox: SandboxHandle) -> stripe.StripeClient:
    return client_for(sandbox.url)
