"""The delivery process (`serve-notifications`) serves Prometheus metrics on its loopback port:
delivery attempts by outcome and their latency, counted from real POSTs to a real endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_env
from tests.devstack import free_port
from tests.notifications.support import Receiver, ReceiverServer, enqueue
from tollbooth.db import Database
from tollbooth.db.types import utcnow
from tollbooth.notifications import endpoints


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _attempts(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], outcome: str) -> float:
    return samples.get(("tollbooth_notification_attempts_total", (("outcome", outcome),)), 0.0)


@pytest.mark.timeout(300)
def test_serve_notifications_counts_attempts_by_outcome(
    db: Database, pg_url: str, tmp_path: Path
) -> None:
    receiver = Receiver(fail_first=1)  # each message: 500 first, then 204
    server = ReceiverServer(receiver)
    port = free_port()
    env = {
        **os.environ,
        **make_env(
            pg_url,
            BILLING_DATA_DIR=str(tmp_path),
            BILLING_METRICS_PORT=str(port),
            BILLING_NOTIFY_RETRY_FIRST_MS="100",
            BILLING_NOTIFY_POLL_MS="50",
        ),
    }
    proc = None
    try:
        with db.transaction() as s:
            _, receiver.secret = endpoints.create(s, endpoints.Fields(url=receiver.url), utcnow())
        sent = [enqueue(db, "credits.granted", "acct_m", {"amount": str(n)}) for n in range(2)]
        with open(tmp_path / "notifications.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tollbooth.cli", "serve-notifications"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        receiver.wait_for(len(sent), timeout=150)
        assert receiver.ids() == sent
        deadline = time.monotonic() + 30
        samples = {}
        while time.monotonic() < deadline:  # the process records after the receiver answers
            samples = _samples(port)
            if _attempts(samples, "delivered") >= 2:
                break
            time.sleep(0.1)
        assert _attempts(samples, "rejected") == 2
        assert _attempts(samples, "delivered") == 2
        assert _attempts(samples, "unreachable") == 0
        count = ("tollbooth_notification_attempt_duration_seconds_count",)
        assert samples[(*count, (("outcome", "delivered"),))] == 2
        assert samples[(*count, (("outcome", "rejected"),))] == 2
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        server.close()
