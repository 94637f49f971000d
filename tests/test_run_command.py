"""`tollbooth run` (what `make run` calls): every process up (two gRPC server processes sharing
the replica's port, sidecar, notifications, Envoy, sandbox), a killed one restarted, then all
down on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import SERVICE_KEY, make_env
from tests.devstack import free_port


def is_ready(line: str) -> bool:
    """`run` logs one JSON object per line; the one with event "ready" says all is up."""
    return bool(json.loads(line).get("event") == "ready")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ")[-120:]
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return bool(stat.stdout.strip()) and not stat.stdout.strip().startswith("Z")


def _issue(rest: int) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{rest}/mgt/v1/token/issue",
        method="POST",
        data=json.dumps({"principal_id": "run-1"}).encode(),
        headers={"x-api-key": SERVICE_KEY, "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _reason(body: dict) -> str | None:
    for detail in body.get("details", []):
        if detail.get("@type", "").endswith("ErrorInfo"):
            return detail.get("reason")
    return None


def _start_run(tmp_path, processes: int) -> tuple[subprocess.Popen[str], int]:  # type: ignore[no-untyped-def]
    """`tollbooth run` on SQLite with free loopback ports, in its own process group (cleanup
    reaches every child), its output piped: (the process, Envoy's REST port)."""
    rest = free_port()
    env = {
        **os.environ,
        **make_env(f"sqlite:///{tmp_path / 'billing.db'}"),
        "BILLING_GRPC_PORT": str(free_port()),
        "BILLING_REST_PORT": str(rest),
        "BILLING_SIDECAR_PORT": str(free_port()),
        "BILLING_ENVOY_ADMIN_PORT": str(free_port()),
        "BILLING_RUN_DIR": str(tmp_path / "run"),
        "BILLING_SANDBOX_PORT": str(free_port()),
        "BILLING_DATA_DIR": str(tmp_path),
        "BILLING_GRPC_PROCESSES": str(processes),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollbooth.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, rest


def test_run_serves_restarts_a_killed_server_and_stops_all_on_sigterm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc, rest = _start_run(tmp_path, processes=2)
    children: list[int] = []
    try:
        lines = []
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "run exited early:\n" + "".join(lines)
            lines.append(line)
            if is_ready(line):
                break
        printed = "".join(lines)
        assert "BILLING_SERVICE_KEYS" in printed and SERVICE_KEY not in printed
        children = _children(proc.pid)
        assert len(children) == 6  # 2 servers, sidecar, notifications, Envoy, sandbox
        body = None
        for _ in range(100):
            try:
                status, body = _issue(rest)
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert body is not None and body["billing_account_id"].startswith("acct_")

        # kill -9 of the gRPC server: Envoy answers JSON 503 until the supervisor restarts it.
        grpc_pids = [
            pid
            for pid in children
            if "serve-grpc" in open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        ]
        assert len(grpc_pids) == 2  # both share the replica's port
        grpc_pid = grpc_pids[0]
        os.kill(grpc_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        seen = []
        while time.monotonic() - killed_at < 60:
            status, body = _issue(rest)
            seen.append(status)
            if status == 200:
                break
            assert status == 503 and _reason(body) == "SERVICE_UNAVAILABLE", body
            time.sleep(0.1)
        assert seen[-1] == 200, seen
        print(f"served again {time.monotonic() - killed_at:.1f}s after kill -9")
        # The other server process may have answered at once: wait for the restart itself.
        restarted: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not restarted:
            restarted = [pid for pid in _children(proc.pid) if pid not in children]
            time.sleep(0.1)
        assert len(restarted) == 1 and not _alive(grpc_pid)
        children = _children(proc.pid)
        assert len(children) == 6  # 2 servers, sidecar, notifications, Envoy, sandbox
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None
        output = "".join(lines) + proc.stdout.read()
        assert "restarting in" in output
        # Every line of every process (supervisor, server, sidecar, sandbox, libraries) is JSON.
        records = [json.loads(line) for line in output.splitlines() if line.strip()]
        rpcs = [r for r in records if r.get("event") == "rpc"]
        assert any(r["method"].endswith("/IssueToken") and r["request_id"] for r in rpcs), rpcs
        assert {r.get("process") for r in records} >= {
            "run",
            "serve-grpc",
            "serve-sandbox",
            "serve-notifications",
        }
        assert any(r.get("event") == "delivering" for r in records)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in children + _children(proc.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_killing_the_supervisor_takes_its_children_down(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Even kill -9 of `make run` leaves no server, sidecar or Envoy behind."""
    env = {
        **os.environ,
        **make_env(f"sqlite:///{tmp_path / 'billing.db'}"),
        "BILLING_GRPC_PORT": str(free_port()),
        "BILLING_REST_PORT": str(free_port()),
        "BILLING_SIDECAR_PORT": str(free_port()),
        "BILLING_ENVOY_ADMIN_PORT": str(free_port()),
        "BILLING_RUN_DIR": str(tmp_path / "run"),
        "BILLING_SANDBOX_PORT": str(free_port()),
        "BILLING_DATA_DIR": str(tmp_path),
        "BILLING_GRPC_PROCESSES": "2",
    }
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
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "run exited early"
            if is_ready(line):
                break
        children = _children(proc.pid)
        assert len(children) == 6  # 2 servers, sidecar, notifications, Envoy, sandbox
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_run_restarts_a_killed_sidecar_and_notification_deliverer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of the webhook sidecar and of the notification deliverer: each comes back, and a
    signed event posted through Envoy after the sidecar's restart is stored once."""
    import threading

    from tests.conftest import WEBHOOK_SECRET
    from tollbooth.webhooks.signature import header

    proc, rest = _start_run(tmp_path, processes=1)
    children: list[int] = []
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # the children log a lot: a full pipe would stall them
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not ready.is_set() and is_ready(line):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()

    def named(word: str) -> list[int]:
        found = []
        for pid in _children(proc.pid):
            try:
                cmdline = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
            except FileNotFoundError:
                continue
            if word in cmdline:
                found.append(pid)
        return found

    def post_event(event_id: str) -> int:
        body = json.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": "tollbooth.test.unknown",
                "livemode": False,
                "created": int(time.time()),
                "data": {"object": {"id": "x_1", "object": "thing"}},
            }
        ).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{rest}/v1/billing/webhooks",
            method="POST",
            data=body,
            headers={
                "content-type": "application/json",
                "stripe-signature": header(body, WEBHOOK_SECRET),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except (urllib.error.URLError, ConnectionError):
            return 0

    try:
        assert ready.wait(90), "run never became ready:\n" + "".join(lines)
        children = _children(proc.pid)
        assert post_event("evt_before_kill") == 200
        for word in ("serve-sidecar", "serve-notifications"):
            old = named(word)
            assert len(old) == 1, (word, old)
            os.kill(old[0], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not [p for p in named(word) if p != old[0]]:
                time.sleep(0.1)
            assert [p for p in named(word) if p != old[0]], (
                f"{word} was not restarted; supervisor exit code {proc.poll()}, children "
                f"{[(p, _cmdline(p)) for p in _children(proc.pid)]}; its last output:\n"
                + "".join(lines[-40:])
            )
            assert not _alive(old[0])
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline:
            status = post_event("evt_after_kill")
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200
        assert post_event("evt_after_kill") == 200  # a redelivery: stored once, answered 2xx
        from sqlalchemy import create_engine, text

        engine = create_engine(f"sqlite:///{tmp_path / 'billing.db'}")
        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT event_id FROM stripe_events ORDER BY event_id")
            ).scalars()
            assert list(stored) == ["evt_after_kill", "evt_before_kill"]
        engine.dispose()
        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in children + _children(proc.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_make_run_prints_nothing_of_its_own_before_the_json_lines(tmp_path):  # type: ignore[no-untyped-def]
    """`make run`'s output is the stack's log, one JSON object per line (README "Logs"), so
    `make run | jq` reads it whole: make's own echo of the recipe was a text first line. Here
    `run` stops at once on a bad setting (its one plain line goes to stderr)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if subprocess.run(["make", "-q", "setup"], cwd=repo).returncode != 0:
        pytest.skip("make setup is not up to date here (it would install first)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "STRIPE_"))}
    env.update(BILLING_DATA_DIR=str(tmp_path / "data"), BILLING_REST_PORT="not-a-port")
    done = subprocess.run(
        ["make", "--no-print-directory", "run"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "configuration error: BILLING_REST_PORT" in done.stderr
    assert done.stdout == "", done.stdout
