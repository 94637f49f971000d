"""Observability of `run`: each process's metrics endpoint on loopback shows the RPCs just
made, and /healthz, /readyz and /v1/health answer JSON through Envoy."""

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

from tests.devstack import free_run
from tests.test_ports import _stack_env
from tests.test_run_command import _alive, _children, _issue, is_ready


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _get_or_none(url: str) -> tuple[int, bytes] | None:
    try:
        return _get(url)
    except OSError:
        return None


def test_metrics_show_the_rpcs_just_made_and_health_answers_through_envoy(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    # Two server processes, the sidecar, the sandbox, the notification delivery.
    taken = {int(v) for k, v in env.items() if k.startswith("BILLING_") and k.endswith("_PORT")}
    base = free_run(5, avoid=taken)
    env["BILLING_METRICS_PORT"] = str(base)
    env["BILLING_GRPC_PROCESSES"] = "2"
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
        assert proc.stdout is not None
        ready = None
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "run exited early:\n" + "".join(seen[-30:])
            seen.append(line)
            if is_ready(line):
                ready = json.loads(line)
                break
        assert ready is not None
        assert ready["metrics"] == [
            f"grpc-0.0 http://127.0.0.1:{base}/metrics",
            f"grpc-0.1 http://127.0.0.1:{base + 1}/metrics",
            f"sidecar http://127.0.0.1:{base + 2}/metrics",
            f"sandbox http://127.0.0.1:{base + 3}/metrics",
            f"notifications http://127.0.0.1:{base + 4}/metrics",
        ]
        children = _children(proc.pid)
        rest = int(env["BILLING_REST_PORT"])
        status, body = _issue(rest)
        assert status == 200, body

        # The call went to one of the replica's two processes: each serves its own metrics.
        pages = []
        for port in (base, base + 1):
            status, text = _get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            pages.append(text.decode())
        page = "\n".join(pages)
        issued = [
            float(line.rsplit(" ", 1)[1])
            for line in page.splitlines()
            if line.startswith("tollbooth_rpc_total{")
            and 'method="/billing.v1.TokenService/IssueToken"' in line
            and 'code="OK"' in line
        ]
        assert sum(issued) >= 1, page
        # The process that served the call has its latency; the other may have served none.
        assert any("tollbooth_rpc_duration_seconds_bucket{" in p for p in pages)
        assert all('tollbooth_webhook_inbox_events{status="pending"} 0.0' in p for p in pages)
        for port in (base + 2, base + 3):
            assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        deadline = time.monotonic() + 60  # the delivery process starts beside the others
        while _get_or_none(f"http://127.0.0.1:{base + 4}/metrics") is None:
            assert time.monotonic() < deadline, "the delivery process serves no metrics"
            time.sleep(0.2)
        status, text = _get(f"http://127.0.0.1:{base + 4}/metrics")
        assert status == 200
        assert "# TYPE tollbooth_notification_attempts_total counter" in text.decode()

        status, text = _get(f"http://127.0.0.1:{rest}/healthz")
        assert (status, json.loads(text)) == (200, {"ok": True})
        status, text = _get(f"http://127.0.0.1:{rest}/readyz")
        assert (status, json.loads(text)) == (
            200,
            {"ready": True, "database": "ok", "grpc": "serving"},
        )
        status, text = _get(f"http://127.0.0.1:{rest}/v1/health")  # the billing server's own
        assert (status, json.loads(text)) == (200, {"status": "SERVING"})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
