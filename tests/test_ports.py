"""Ports and start-up tell the truth: a taken port stops `run` before anything starts, a second
gRPC server or Envoy on a taken port fails instead of sharing it, and operator commands find
the running stack's ports in the data directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_env
from tests.devstack import HeldPorts, free_port
from tests.test_run_command import _alive, _children, _issue, is_ready
from tollbooth import stack
from tollbooth.app import build_deps, build_server
from tollbooth.config import Settings
from tollbooth.gateway import render, start_envoy
from tollbooth.supervisor import wait_envoy


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def _stack_env(tmp_path: Path) -> dict[str, str]:
    # Bound together, so five distinct ports (free_port() one after another may repeat one).
    with HeldPorts(5) as held:
        grpc_port, rest, sidecar, admin, sandbox = held.ports
    return {
        **os.environ,
        **make_env(f"sqlite:///{tmp_path / 'billing.db'}"),
        "BILLING_GRPC_PORT": str(grpc_port),
        "BILLING_REST_PORT": str(rest),
        "BILLING_SIDECAR_PORT": str(sidecar),
        "BILLING_ENVOY_ADMIN_PORT": str(admin),
        "BILLING_RUN_DIR": str(tmp_path / "run"),
        "BILLING_SANDBOX_PORT": str(sandbox),
        "BILLING_DATA_DIR": str(tmp_path),
    }


def test_port_problems_name_the_port_and_its_variable(tmp_path: Path) -> None:
    with _listening() as taken:
        port = taken.getsockname()[1]
        settings = Settings.from_env(
            make_env("sqlite://", BILLING_DATA_DIR=str(tmp_path), BILLING_SIDECAR_PORT=str(port))
        )
        problems = stack.port_problems(
            [stack.Port("BILLING_SIDECAR_PORT", "127.0.0.1", settings.sidecar_port)]
        )
    assert problems == [f"port {port} (BILLING_SIDECAR_PORT) is already in use"]
    same = stack.port_problems(
        [stack.Port("BILLING_REST_PORT", "127.0.0.1", 1), stack.Port("BILLING_X", "127.0.0.1", 1)]
    )
    assert same[0] == "port 1 is set for both BILLING_REST_PORT and BILLING_X"


def test_a_second_grpc_server_on_the_same_port_fails(tmp_path: Path) -> None:
    """grpcio turns SO_REUSEPORT on by default; ours is off, so the port is not shared."""
    settings = Settings.from_env(make_env("sqlite://", BILLING_DATA_DIR=str(tmp_path)))
    deps = build_deps(settings)
    first, port, _ = build_server(deps, "127.0.0.1:0")
    first.start()
    try:
        with pytest.raises(RuntimeError, match=f"could not bind 127.0.0.1:{port}"):
            build_server(deps, f"127.0.0.1:{port}")
    finally:
        first.stop(0)
        deps.db.dispose()


def test_the_processes_of_one_replica_share_its_port(tmp_path: Path) -> None:
    """What `run` starts (BILLING_GRPC_PROCESSES=2): a second process binds the same port."""
    settings = Settings.from_env(
        make_env("sqlite://", BILLING_DATA_DIR=str(tmp_path), BILLING_GRPC_PROCESSES="2")
    )
    deps = build_deps(settings)
    first, port, _ = build_server(deps, "127.0.0.1:0")
    first.start()
    try:
        second, second_port, _ = build_server(deps, f"127.0.0.1:{port}")
        assert second_port == port
        second.stop(0)
    finally:
        first.stop(0)
        deps.db.dispose()


def test_an_envoy_that_cannot_bind_is_reported_with_its_log(tmp_path: Path) -> None:
    with _listening() as taken:
        settings = Settings.from_env(
            make_env(
                "sqlite://",
                BILLING_DATA_DIR=str(tmp_path),
                BILLING_REST_PORT=str(taken.getsockname()[1]),
                BILLING_ENVOY_ADMIN_PORT=str(free_port()),
            )
        )
        log = tmp_path / "envoy.log"
        proc = start_envoy(render(settings, tmp_path), log)
        try:
            error = wait_envoy(proc, settings.envoy_admin_port, log, timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert error is not None and error.startswith("Envoy exited during startup"), error
    assert "already in use" in error or "cannot bind" in error, error


def _start_run(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tollbooth.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_a_second_run_on_the_same_ports_stops_and_the_first_keeps_serving(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    first = _start_run(env)
    children: list[int] = []
    second = None
    try:
        lines = []
        deadline = time.monotonic() + 90
        assert first.stdout is not None
        while time.monotonic() < deadline:
            line = first.stdout.readline()
            assert line, "run exited early:\n" + "".join(lines)
            lines.append(line)
            if is_ready(line):
                break
        children = _children(first.pid)
        recorded = json.loads((tmp_path / "run" / "stack.json").read_text())
        assert recorded["pid"] == first.pid

        started = time.monotonic()
        second = _start_run(env)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 1, out
        assert time.monotonic() - started < 30
        assert f"port {env['BILLING_GRPC_PORT']} (BILLING_GRPC_PORT) is already in use" in out
        assert f"port {env['BILLING_REST_PORT']} (BILLING_REST_PORT) is already in use" in out
        assert "database migrated" not in out  # stopped before starting anything

        status, body = _issue(int(env["BILLING_REST_PORT"]))
        assert status == 200, body
        assert [pid for pid in children if _alive(pid)] == children

        # An operator shell that names only the data directory finds the stack's ports.
        found = stack.operator_settings(
            {"BILLING_DATA_DIR": str(tmp_path), "BILLING_SANDBOX_PORT": ""}, quiet=True
        )
        assert found.sandbox_port == int(env["BILLING_SANDBOX_PORT"])
        assert found.rest_port == int(env["BILLING_REST_PORT"])
        assert found.database_url == env["BILLING_DATABASE_URL"]
        shell = stack.operator_settings(
            {"BILLING_DATA_DIR": str(tmp_path), "BILLING_SANDBOX_PORT": "1234"}, quiet=True
        )
        assert shell.sandbox_port == 1234  # the shell's variable wins

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        assert not (tmp_path / "run" / "stack.json").exists()
        assert stack.operator_settings({"BILLING_DATA_DIR": str(tmp_path)}).rest_port == 8080
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
