"""`tollbooth run`: the whole stack as supervised child processes.

Migrate, then run the gRPC replicas, the webhook sidecar, Envoy and (without a Stripe key) the
Stripe sandbox; any process that dies is restarted with backoff, and SIGINT or SIGTERM stops
all of them. The children are `python -m tollbooth.cli serve-*` processes given this
process's environment (marked supervised, so they leave the start-up warnings to `run`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tollbooth.config import Settings

BACKOFF_FIRST_SEC = 0.5
BACKOFF_MAX_SEC = 10.0
# A child that stayed up this long is healthy again: its next failure restarts quickly.
STABLE_AFTER_SEC = 30.0


def migrate(settings: Settings) -> None:
    from tollbooth.db.migrate import upgrade

    upgrade(settings.database_url)
    print("database migrated to head", flush=True)


def wait_serving(target: str, timeout: float = 30.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                time.sleep(0.2)
    return False


def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM when the supervisor dies, even by kill -9, so no process
    of the stack outlives `make run`."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    """One supervised process: restarted with backoff whenever it dies."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST_SEC
    restart_at: float | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            preexec_fn=_die_with_parent,
        )
        if out is not None:
            out.close()
        self.started_at = time.monotonic()
        self.restart_at = None

    def tend(self, now: float) -> None:
        """Notice a death and schedule the restart; start it when its time has come."""
        if self.proc is not None and self.proc.poll() is not None and self.restart_at is None:
            if now - self.started_at >= STABLE_AFTER_SEC:
                self.backoff = BACKOFF_FIRST_SEC
            print(
                f"{self.name} (pid {self.proc.pid}) exited with {self.proc.returncode}; "
                f"restarting in {self.backoff:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            self.restart_at = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_SEC)
        if self.restart_at is not None and now >= self.restart_at:
            self.restarts += 1
            self.start()
            assert self.proc is not None
            print(f"{self.name} restarted (pid {self.proc.pid})", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def reap(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run(settings: Settings, check_sandbox: Callable[[Settings], object]) -> int:
    """Migrate, then run the gRPC replicas, the sidecar, Envoy and (without a Stripe key) the
    Stripe sandbox until SIGINT or SIGTERM.

    Any process that dies is restarted with backoff (0.5 s, doubling up to 10 s), and the
    restart is logged; Ctrl-C or SIGTERM stops all of them. `check_sandbox` raises on
    unusable sandbox settings (checked before readiness is announced).
    """
    from tollbooth.gateway import envoy_binary, render

    for line in settings.warnings():
        print(line, file=sys.stderr, flush=True)
    print("tollbooth configuration:", flush=True)
    for name, value in settings.describe():
        print(f"  {name:<26} {value}", flush=True)
    migrate(settings)
    run_dir = settings.run_dir or settings.data_dir / "run"
    envoy_config = render(settings, run_dir)
    py = [sys.executable, "-m", "tollbooth.cli"]
    # The children's environment: this one, marked as supervised.
    base_env = {**os.environ, Settings.SUPERVISED_VARIABLE: "1"}
    # Children must see the same data directory (and so the same generated credentials).
    base_env["BILLING_DATA_DIR"] = str(settings.data_dir)
    servers = [
        Child(
            f"grpc-{i}" if settings.grpc_replicas > 1 else "grpc",
            [*py, "serve-grpc"],
            {**base_env, "BILLING_GRPC_PORT": str(port), "BILLING_GRPC_REPLICAS": "1"},
        )
        for i, port in enumerate(settings.grpc_ports)
    ]
    sidecar = Child("sidecar", [*py, "serve-sidecar"], base_env)
    envoy = Child(
        "envoy",
        [envoy_binary(), "-c", str(envoy_config), "--disable-hot-restart", "--log-level", "warn"],
        base_env,
        log_path=run_dir / "envoy.log",
    )
    sandbox = Child("sandbox", [*py, "serve-sandbox"], base_env) if settings.sandbox else None
    children = [*servers, sidecar, envoy, *([sandbox] if sandbox else [])]
    stopping = False

    def stop_all(signum: int | None = None, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        for child in servers:
            child.start()
        host = settings.grpc_target.rsplit(":", 1)[0]
        for port in settings.grpc_ports:
            if not wait_serving(f"{host}:{port}"):
                print(f"gRPC server on port {port} did not become healthy", file=sys.stderr)
                return 1
        sidecar.start()
        envoy.start()
        if sandbox is not None:
            check_sandbox(settings)  # refuse bad sandbox settings before announcing readiness
            sandbox.start()
        grpc_list = ", ".join(f"{host}:{p}" for p in settings.grpc_ports)
        print(
            f"\nready:\n  gRPC      {grpc_list} (reflection on; try: grpcurl -plaintext "
            f"{settings.grpc_target} list)\n"
            f"  REST      http://{settings.rest_host}:{settings.rest_port}/api/v1 and /mgt/v1 "
            f"(Envoy)\n"
            f"  webhooks  http://{settings.rest_host}:{settings.rest_port}/v1/billing/webhooks "
            f"(sidecar on 127.0.0.1:{settings.sidecar_port})\n"
            f"  admin     http://127.0.0.1:{settings.envoy_admin_port} (Envoy, loopback only)\n"
            + (
                f"  sandbox   http://127.0.0.1:{settings.sandbox_port} (Stripe-compatible SANDBOX: "
                f"STRIPE_API_KEY is unset; pages at /sandbox/)\n"
                if settings.sandbox
                else ""
            )
            + f"  Envoy log {run_dir / 'envoy.log'}\n"
            "A process that dies is restarted. Ctrl-C stops all.",
            flush=True,
        )
        while not stopping:
            now = time.monotonic()
            for child in children:
                child.tend(now)
            time.sleep(0.1)
        return 0
    finally:
        for child in children:
            child.stop()
        deadline = time.monotonic() + 10
        for child in children:
            child.reap(deadline)
        print("stopped", flush=True)
