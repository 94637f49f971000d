"""`tollbooth run`: the whole stack as supervised child processes.

Migrate, then run the gRPC replicas, the webhook sidecar, Envoy and (without a Stripe key) the
Stripe sandbox; any process that dies is restarted with backoff, and SIGINT or SIGTERM stops
all of them. The children are `python -m tollbooth.cli serve-*` processes given this
process's environment (marked supervised, so they leave the start-up warnings to `run`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tollbooth import environments, stack
from tollbooth.config import Settings, dial_url, redact_url
from tollbooth.configvalues import dialable

log = logging.getLogger("tollbooth.run")

BACKOFF_FIRST_SEC = 0.5
BACKOFF_MAX_SEC = 10.0
# A child that stayed up this long is healthy again: its next failure restarts quickly.
STABLE_AFTER_SEC = 30.0


def migrate(settings: Settings) -> None:
    """Every environment's database to head (the live one's too, when it is configured)."""
    for name, view in environments.of(settings).items():
        migrate_database(view.database_url, name)


def migrate_database(url: str, environment: str) -> None:
    from tollbooth.db.migrate import SchemaMismatch, upgrade

    try:
        upgrade(url)
    except SchemaMismatch as exc:  # a newer release migrated it: say which database
        raise SchemaMismatch(f"{environment} database {redact_url(url)}: {exc}") from None
    log.info(
        f"{environment} database migrated to head",
        extra={"event": "migrated", "environment": environment},
    )


def wait_serving(target: str, timeout: float = 120.0, alive: Callable[[], bool] = bool) -> bool:
    """The gRPC server at `target` answers SERVING (False at once when `alive()` turns False).
    A live server gets two minutes: on a loaded machine (two cores, every process importing
    at once) a first start has taken over 30 s; one that dies is reported at once."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and alive():
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                time.sleep(0.2)
    return False


def wait_envoy(
    proc: subprocess.Popen[bytes], admin_port: int, log_path: Path, timeout: float = 60.0
) -> str | None:
    """Wait until Envoy's admin says LIVE; otherwise why not, with the end of its log (an
    Envoy that cannot bind a port exits at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"Envoy exited during startup with code {proc.returncode}" + _tail(log_path)
        try:
            url = f"http://127.0.0.1:{admin_port}/ready"
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return None
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    return f"Envoy did not become ready within {timeout:.0f}s" + _tail(log_path)


def wait_listening(
    proc: subprocess.Popen[bytes], host: str, port: int, timeout: float = 30.0
) -> bool:
    """A child's port accepts connections while the child is alive."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((dialable(host), port), timeout=1):
                return proc.poll() is None
        except OSError:
            time.sleep(0.1)
    return False


def _tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"; the end of {path}:\n" + "\n".join(f"  {line}" for line in text) if text else ""


# How a child starts: a small Python program that makes the process die with the supervisor,
# then execs the child's own command line (the same process, so its pid is the child's).
#
# Not `preexec_fn`: that makes `subprocess` fork() (not vfork), which runs grpcio's
# pthread_atfork handlers in the child; once this process has used a gRPC channel (the
# health waits), those handlers restart a poller thread in the child that can abort it
# (SIGABRT, nothing printed) before it reaches exec (grpc/grpc#43055; seen here as a
# sidecar that "did not start listening (exit code -6)"). Without it the child is spawned
# by vfork and no fork handler runs.
#
# Linux: PR_SET_PDEATHSIG gives the child SIGTERM when the supervisor dies, even by kill -9,
# so no process of the stack outlives `make run` (the setting survives exec); if the
# supervisor died before it was set, the child exits at once. SIGINT is ignored (that too
# survives exec): Ctrl-C reaches the whole process group and the supervisor alone handles it
# (it stops the children with SIGTERM), so a child still starting never dies mid-import
# with a traceback.
_LAUNCHER = """
import ctypes, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a SIGINT that came meanwhile is dropped,
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked till here (start)
for ignored in (signal.SIGPIPE, signal.SIGXFSZ):  # ignored by Python at startup; an ignored
    signal.signal(ignored, signal.SIG_DFL)  # signal stays so across exec (restore_signals)
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
# LC_CTYPE as given ("-": none): Python's start-up may have set it (PEP 538, a C locale).
if sys.argv[2] == "-":
    os.environ.pop("LC_CTYPE", None)
else:
    os.environ["LC_CTYPE"] = sys.argv[2][1:]
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as exc:
    print(f"cannot run {sys.argv[3]}: {exc}", file=sys.stderr, flush=True)
    sys.exit(127)
"""


def launch_argv(
    argv: list[str], parent: int | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """`argv` started through `_LAUNCHER`, as a child of `parent` (this process), in `env`
    (this process's environment by default; the child gets exactly it)."""
    given = os.environ if env is None else env
    return [
        sys.executable,
        "-S",
        "-c",
        _LAUNCHER,
        str(os.getpid() if parent is None else parent),
        "=" + given["LC_CTYPE"] if "LC_CTYPE" in given else "-",
        *argv,
    ]


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
        # SIGINT blocked across the spawn: the child starts with it blocked (a mask survives
        # exec), so a Ctrl-C during the launcher's own start-up (before it ignores SIGINT)
        # does not kill it; here it is only delayed until the mask is restored.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.proc = subprocess.Popen(
                launch_argv(self.argv, env=self.env),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if out is not None:
            out.close()
        self.started_at = time.monotonic()
        self.restart_at = None

    def tend(self, now: float) -> None:
        """Notice a death and schedule the restart; start it when its time has come."""
        if self.proc is not None and self.proc.poll() is not None and self.restart_at is None:
            if now - self.started_at >= STABLE_AFTER_SEC:
                self.backoff = BACKOFF_FIRST_SEC
            log.warning(
                f"{self.name} (pid {self.proc.pid}) exited with {self.proc.returncode}; "
                f"restarting in {self.backoff:.1f}s",
                extra={
                    "event": "exited",
                    "child": self.name,
                    "pid": self.proc.pid,
                    "exit_code": self.proc.returncode,
                },
            )
            self.restart_at = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_SEC)
        if self.restart_at is not None and now >= self.restart_at:
            self.restarts += 1
            self.start()
            assert self.proc is not None
            log.info(
                f"{self.name} restarted (pid {self.proc.pid})",
                extra={"event": "restarted", "child": self.name, "pid": self.proc.pid},
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
        log.warning(line, extra={"event": "generated_credential"})
    log.info(
        "tollbooth configuration",
        extra={"event": "configuration", "settings": dict(settings.describe())},
    )
    # Every port is checked before anything starts: a taken one stops `run` at once.
    problems = stack.port_problems(stack.planned_ports(settings))
    if problems:
        for line in problems:
            log.error(f"cannot start: {line}", extra={"event": "port_unavailable"})
        if stack.read_state(settings.data_dir) is not None:
            log.error(
                f"a Tollbooth stack already runs on this data directory: "
                f"{stack.state_path(settings.data_dir)}",
                extra={"event": "already_running"},
            )
        return 1
    from sqlalchemy.exc import OperationalError

    from tollbooth.db.migrate import SchemaMismatch

    for variable, (name, view) in zip(
        ("BILLING_DATABASE_URL", "BILLING_LIVE_DATABASE_URL"),
        environments.of(settings).items(),
        strict=False,
    ):
        try:
            migrate_database(view.database_url, name)
        except OperationalError as exc:
            log.error(
                f"cannot start: the database of {variable} ({redact_url(view.database_url)}) "
                f"does not answer: {str(exc.orig or exc)[:300]}",
                extra={"event": "database_unreachable"},
            )
            return 1
        except SchemaMismatch as exc:
            log.error(f"cannot start: {exc}", extra={"event": "schema_mismatch"})
            return 1
    run_dir = settings.run_dir or settings.data_dir / "run"
    envoy_config = render(settings, run_dir)
    py = [sys.executable, "-m", "tollbooth.cli"]
    # The children's environment: this one, marked as supervised.
    base_env = {**os.environ, Settings.SUPERVISED_VARIABLE: "1"}
    # Children must see the same data directory (and so the same generated credentials).
    base_env["BILLING_DATA_DIR"] = str(settings.data_dir)
    # Each child's own metrics port (0: none).
    metrics_port = {name: port for name, _, port in stack.metrics_ports(settings)}
    # Each replica: BILLING_GRPC_PROCESSES server processes sharing its port (SO_REUSEPORT),
    # so every core serves; each process serves its own metrics port.
    processes = settings.grpc_process_count
    servers = [
        Child(
            (f"grpc-{i}" if settings.grpc_replicas > 1 else "grpc")
            + (f".{j}" if processes > 1 else ""),
            [*py, "serve-grpc"],
            {
                **base_env,
                "BILLING_GRPC_PORT": str(port),
                "BILLING_GRPC_REPLICAS": "1",
                "BILLING_GRPC_PROCESSES": str(processes),
                "BILLING_METRICS_PORT": str(
                    metrics_port.get(f"grpc-{i}" + (f".{j}" if processes > 1 else ""), 0)
                ),
            },
        )
        for i, port in enumerate(settings.grpc_ports)
        for j in range(processes)
    ]
    server_ports = [port for port in settings.grpc_ports for _ in range(processes)]
    sidecar = Child(
        "sidecar",
        [*py, "serve-sidecar"],
        {**base_env, "BILLING_METRICS_PORT": str(metrics_port.get("sidecar", 0))},
    )
    envoy = Child(
        "envoy",
        [envoy_binary(), "-c", str(envoy_config), "--disable-hot-restart", "--log-level", "warn"],
        base_env,
        log_path=run_dir / "envoy.log",
    )
    sandbox = (
        Child(
            "sandbox",
            [*py, "serve-sandbox"],
            {**base_env, "BILLING_METRICS_PORT": str(metrics_port.get("sandbox", 0))},
        )
        if settings.sandbox
        else None
    )
    # Outbound notifications: the delivery process (any number may run; see
    # tollbooth.notifications.delivery).
    notifier = Child(
        "notifications",
        [*py, "serve-notifications"],
        {**base_env, "BILLING_METRICS_PORT": str(metrics_port.get("notifications", 0))},
    )
    # The live environment's deliveries, from its own database (no metrics port of its own).
    live_notifier = (
        Child(
            "notifications-live",
            [*py, "serve-notifications", "--environment", environments.LIVE],
            {**base_env, "BILLING_METRICS_PORT": "0"},
        )
        if settings.live_configured
        else None
    )
    notifiers = [notifier, *([live_notifier] if live_notifier else [])]
    children = [*servers, sidecar, envoy, *notifiers, *([sandbox] if sandbox else [])]
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
        for port, child in zip(server_ports, servers, strict=True):
            if not wait_serving(f"{host}:{port}", alive=child.alive):
                log.error(
                    f"gRPC server on port {port} did not become healthy",
                    extra={"event": "start_failed", "child": child.name},
                )
                return 1
        sidecar.start()
        for child in notifiers:
            child.start()
        envoy.start()
        if sandbox is not None:
            check_sandbox(settings)  # refuse bad sandbox settings before announcing readiness
            sandbox.start()
        assert envoy.proc is not None and envoy.log_path is not None
        envoy_error = wait_envoy(envoy.proc, settings.envoy_admin_port, envoy.log_path)
        if envoy_error:
            log.error(envoy_error, extra={"event": "start_failed", "child": "envoy"})
            return 1
        for child, where, port in (
            (sidecar, "127.0.0.1", settings.sidecar_port),
            *([(sandbox, settings.sandbox_host, settings.sandbox_port)] if sandbox else []),
        ):
            assert child.proc is not None
            if not wait_listening(child.proc, where, port):
                log.error(
                    f"{child.name} did not start listening on port {port} "
                    f"(exit code {child.proc.poll()})",
                    extra={"event": "start_failed", "child": child.name},
                )
                return 1
        state = stack.write_state(settings, os.environ)
        rest = f"http://{settings.rest_host}:{settings.rest_port}"
        urls = {
            "grpc": [f"{host}:{p}" for p in settings.grpc_ports],
            "rest": f"{rest}/api/v1 and {rest}/mgt/v1",
            "webhooks": f"{rest}/v1/billing/webhooks",
            "health": f"{rest}/healthz, {rest}/readyz and {rest}/v1/health",
            "console": f"{rest}/console/",
            "sidecar": f"http://127.0.0.1:{settings.sidecar_port}",
            "envoy_admin": f"http://127.0.0.1:{settings.envoy_admin_port}",
            **(
                {"sandbox": dial_url(settings.sandbox_host, settings.sandbox_port) + "/sandbox/"}
                if settings.sandbox
                else {}
            ),
            "metrics": [
                f"{name} http://127.0.0.1:{port}/metrics"
                for name, _, port in stack.metrics_ports(settings)
            ],
            "envoy_log": str(run_dir / "envoy.log"),
            "state": str(state),
        }
        log.info(
            f"ready: REST {rest}, gRPC {', '.join(urls['grpc'])}, console {rest}/console/"
            + (" (Stripe SANDBOX: STRIPE_API_KEY is unset)" if settings.sandbox else "")
            + "; a process that dies is restarted; Ctrl-C stops all",
            extra={"event": "ready", **urls},
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
        stack.remove_state(settings.data_dir)
        log.info("stopped", extra={"event": "stopped"})
