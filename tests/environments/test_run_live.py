"""`tollbooth run` with the live environment configured: both databases migrated, a second
notification deliverer for live, and one Envoy answering each environment's key from its own
database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import SERVICE_KEY, make_env
from tests.devstack import free_port
from tests.environments.test_settings import live
from tests.test_run_command import _alive, _children, is_ready

LIVE_KEY = "live-service-key-0123456789"


def issue(rest: int, key: str, principal: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    req = urllib.request.Request(
        f"http://127.0.0.1:{rest}/mgt/v1/token/issue",
        method="POST",
        data=json.dumps({"principal_id": principal}).encode(),
        headers={"x-api-key": key, "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def accounts(db: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT id FROM billing_accounts"))}
    finally:
        engine.dispose()


def test_run_serves_both_environments(tmp_path: Path) -> None:
    rest = free_port()
    test_db, live_db = tmp_path / "billing.db", tmp_path / "live.db"
    env = {
        **os.environ,
        **make_env(f"sqlite:///{test_db}", **live(live_db)),
        "BILLING_GRPC_PORT": str(free_port()),
        "BILLING_REST_PORT": str(rest),
        "BILLING_SIDECAR_PORT": str(free_port()),
        "BILLING_ENVOY_ADMIN_PORT": str(free_port()),
        "BILLING_RUN_DIR": str(tmp_path / "run"),
        "BILLING_SANDBOX_PORT": str(free_port()),
        "BILLING_DATA_DIR": str(tmp_path),
        "BILLING_GRPC_PROCESSES": "1",  # whatever the cores: one server process
    }
    env.pop("STRIPE_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollbooth.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    children: list[int] = []
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "run exited early:\n" + "".join(lines)
            lines.append(line)
            if is_ready(line):
                break
        children = _children(proc.pid)
        commands = [open(f"/proc/{p}/cmdline").read().replace("\0", " ") for p in children]
        assert len(children) == 6, commands  # server, sidecar, 2 deliverers, Envoy, sandbox
        assert sum("serve-notifications --environment live" in c for c in commands) == 1
        migrated = [json.loads(line) for line in lines if '"migrated"' in line]
        assert {r.get("environment") for r in migrated} == {"test", "live"}
        made = {}
        for name, key in (("test", SERVICE_KEY), ("live", LIVE_KEY)):
            for _ in range(100):
                try:
                    status, body = issue(rest, key, f"run-{name}")
                    if status == 200:
                        break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.1)
            assert status == 200, body
            made[name] = body["billing_account_id"]
        assert made["test"] in accounts(test_db) and made["test"] not in accounts(live_db)
        assert made["live"] in accounts(live_db) and made["live"] not in accounts(test_db)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in children + _children(proc.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
