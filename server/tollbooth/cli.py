"""Command line: `run` (the whole stack, supervised), `migrate`, `serve-grpc`, `serve-sidecar`,
`serve-sandbox`, `gateway-config`, `catalog apply`, `webhooks replay`, `reconcile`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tollbooth.config import REPO_ROOT, ConfigError, Settings

log = logging.getLogger("tollbooth")

# Set by `run` for its children, so the start-up warnings are printed once, by the supervisor.
SUPERVISED_ENV = "TOLLBOOTH_SUPERVISED"
BACKOFF_FIRST_SEC = 0.5
BACKOFF_MAX_SEC = 10.0
# A child that stayed up this long is healthy again: its next failure restarts quickly.
STABLE_AFTER_SEC = 30.0


def _logging(name: str) -> None:
    logging.basicConfig(
        level=os.environ.get("BILLING_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def announce(settings: Settings) -> None:
    """What every serving command prints first: the warnings about generated credentials."""
    if os.environ.get(SUPERVISED_ENV) == "1":
        return
    for line in settings.warnings():
        print(line, file=sys.stderr, flush=True)


def cmd_migrate(settings: Settings) -> int:
    from tollbooth.db.migrate import upgrade

    upgrade(settings.database_url)
    print("database migrated to head", flush=True)
    return 0


def cmd_serve_grpc(settings: Settings) -> int:
    from tollbooth.app import build_deps, serve

    announce(settings)
    serve(build_deps(settings))
    return 0


def cmd_serve_sidecar(settings: Settings) -> int:
    from tollbooth.app import serve_sidecar

    announce(settings)
    serve_sidecar(settings)
    return 0


def sandbox_config(settings: Settings, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """The sandbox of this stack: its state in the data directory, its events signed with the
    server's webhook secret and delivered to the webhook path on Envoy."""
    from tollbooth.app import sandbox_config_from_env

    env = dict(os.environ if env is None else env)
    env.setdefault("BILLING_SANDBOX_DB", str(settings.data_dir / "sandbox.db"))
    env.setdefault("BILLING_SANDBOX_WEBHOOK_URL", settings.webhook_url)
    env["BILLING_SANDBOX_PORT"] = str(settings.sandbox_port)
    try:
        return sandbox_config_from_env(env, settings.webhook_secrets[0])
    except ValueError as exc:
        raise ConfigError(f"sandbox: {exc}") from exc


def cmd_serve_sandbox(settings: Settings) -> int:
    from tollbooth.app import serve_sandbox

    if not settings.sandbox:
        print("STRIPE_API_KEY is set: the sandbox is for running without Stripe", file=sys.stderr)
        return 2
    announce(settings)
    serve_sandbox(sandbox_config(settings))
    return 0


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


def cmd_run(settings: Settings) -> int:
    """Migrate, then run the gRPC replicas, the sidecar, Envoy and (without a Stripe key) the
    Stripe sandbox until SIGINT or SIGTERM.

    Any process that dies is restarted with backoff (0.5 s, doubling up to 10 s), and the
    restart is logged; Ctrl-C or SIGTERM stops all of them.
    """
    from tollbooth.gateway import envoy_binary, render

    for line in settings.warnings():
        print(line, file=sys.stderr, flush=True)
    print("tollbooth configuration:", flush=True)
    for name, value in settings.describe():
        print(f"  {name:<26} {value}", flush=True)
    cmd_migrate(settings)
    run_dir = Path(os.environ.get("BILLING_RUN_DIR") or settings.data_dir / "run")
    envoy_config = render(settings, run_dir)
    py = [sys.executable, "-m", "tollbooth.cli"]
    base_env = {**os.environ, SUPERVISED_ENV: "1"}
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
            sandbox_config(settings)  # refuse bad sandbox settings before announcing readiness
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


def cmd_gateway_config(settings: Settings, out: str) -> int:
    from tollbooth.gateway import render

    print(render(settings, Path(out)))
    return 0


def _print_report(report, verb: str) -> int:  # type: ignore[no-untyped-def]
    for line in report.changed:
        print(line, flush=True)
    for line in report.failed:
        print(f"FAILED {line}", file=sys.stderr, flush=True)
    print(
        f"{verb} {report.seen}: {len(report.changed)} change(s), {len(report.failed)} failure(s)",
        flush=True,
    )
    return 1 if report.failed else 0


def cmd_webhooks_replay(settings: Settings, since: str | None, event_id: str | None) -> int:
    """Re-apply stored events (all, those received since T, or one); harmless when applied."""
    import datetime as dt

    from tollbooth.app import replay

    when = None
    if since:
        try:
            when = dt.datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            print(f"--since: not an ISO 8601 time: {since[:40]!r}", file=sys.stderr)
            return 2
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    report = replay(settings, since=when, event_id=event_id)
    if event_id and report.seen == 0:
        print(f"no stored event {event_id[:100]!r}", file=sys.stderr)
        return 1
    return _print_report(report, "replayed")


def cmd_reconcile(settings: Settings) -> int:
    """Compare every subscription with Stripe, repair drift, print what changed."""
    from tollbooth.app import reconcile

    report = reconcile(settings)
    return _print_report(report, "reconciled")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["catalog"]:
        from tollbooth.app import catalog_main

        return catalog_main(argv[1:])
    parser = argparse.ArgumentParser(prog="tollbooth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="migrate, then run gRPC server(s), webhook sidecar and Envoy")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("serve-grpc", help="run the billing gRPC server only")
    sub.add_parser("serve-sidecar", help="run the webhook sidecar only")
    sub.add_parser("serve-sandbox", help="run the Stripe-compatible sandbox only")
    gw = sub.add_parser("gateway-config", help="render envoy.yaml for this environment")
    gw.add_argument("--out", default=str(REPO_ROOT / "var" / "run"))
    sub.add_parser("catalog", help="catalog as code: `catalog apply FILE [--dry-run]`")
    hooks = sub.add_parser("webhooks", help="the webhook inbox: `webhooks replay`")
    hooks_sub = hooks.add_subparsers(dest="webhooks_command", required=True)
    replay = hooks_sub.add_parser(
        "replay", help="re-apply stored events (harmless when they were applied already)"
    )
    which = replay.add_mutually_exclusive_group()
    which.add_argument("--since", metavar="T", help="events received at or after T (ISO 8601)")
    which.add_argument("--event-id", metavar="E", help="one event")
    sub.add_parser(
        "reconcile", help="compare every subscription with Stripe, repair drift, print changes"
    )
    args = parser.parse_args(argv)
    _logging(args.command)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("run", "serve-grpc", "serve-sidecar"):
        refusal = settings.exposure_error()
        if refusal:
            print(f"configuration error: {refusal}", file=sys.stderr)
            return 2
    if args.command == "run":
        return cmd_run(settings)
    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command == "serve-grpc":
        return cmd_serve_grpc(settings)
    if args.command == "serve-sidecar":
        try:
            return cmd_serve_sidecar(settings)
        except RuntimeError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    if args.command == "serve-sandbox":
        try:
            return cmd_serve_sandbox(settings)
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    if args.command == "webhooks":
        return cmd_webhooks_replay(settings, args.since, args.event_id)
    if args.command == "reconcile":
        return cmd_reconcile(settings)
    if args.command == "gateway-config":
        return cmd_gateway_config(settings, args.out)
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
