"""Command line: `run` (all three processes), `migrate`, `serve-grpc`, `serve-sidecar`,
`gateway-config`, `catalog apply`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tollbooth.config import REPO_ROOT, ConfigError, Settings

log = logging.getLogger("tollbooth")


def _logging(name: str) -> None:
    logging.basicConfig(
        level=os.environ.get("BILLING_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_migrate(settings: Settings) -> int:
    from tollbooth.db.migrate import upgrade

    upgrade(settings.database_url)
    print("database migrated to head", flush=True)
    return 0


def cmd_serve_grpc(settings: Settings) -> int:
    from tollbooth.deps import Deps
    from tollbooth.rpc.server import serve

    serve(Deps.build(settings))
    return 0


def cmd_serve_sidecar(settings: Settings) -> int:
    from tollbooth.webhooks.sidecar import serve

    serve(settings)
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


def cmd_run(settings: Settings) -> int:
    """Migrate, then run server, sidecar and Envoy in the foreground until a signal."""
    from tollbooth.gateway import render, start_envoy

    print("tollbooth configuration:", flush=True)
    for name, value in settings.describe():
        print(f"  {name:<26} {value}", flush=True)
    cmd_migrate(settings)
    run_dir = Path(os.environ.get("BILLING_RUN_DIR") or REPO_ROOT / "var" / "run")
    envoy_config = render(settings, run_dir)
    py = [sys.executable, "-m", "tollbooth.cli"]
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop_all(signum: int | None = None, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        children["grpc"] = subprocess.Popen([*py, "serve-grpc"])
        if not wait_serving(settings.grpc_target):
            print("gRPC server did not become healthy", file=sys.stderr)
            return 1
        children["sidecar"] = subprocess.Popen([*py, "serve-sidecar"])
        children["envoy"] = start_envoy(envoy_config, run_dir / "envoy.log")
        print(
            f"\nready:\n  gRPC      {settings.grpc_target} (reflection on; try: grpcurl -plaintext "
            f"{settings.grpc_target} list)\n"
            f"  REST      http://127.0.0.1:{settings.rest_port}/api/v1 and /mgt/v1 (Envoy)\n"
            f"  webhooks  http://127.0.0.1:{settings.rest_port}/v1/billing/webhooks "
            f"(sidecar on 127.0.0.1:{settings.sidecar_port})\n"
            f"  admin     http://127.0.0.1:{settings.envoy_admin_port} (Envoy, loopback only)\n"
            f"  Envoy log {run_dir / 'envoy.log'}\nCtrl-C stops all three.",
            flush=True,
        )
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print("stopped", flush=True)


def cmd_gateway_config(settings: Settings, out: str) -> int:
    from tollbooth.gateway import render

    print(render(settings, Path(out)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["catalog"]:
        from tollbooth.catalog.as_code import main as catalog_main

        return int(catalog_main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(prog="tollbooth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="migrate, then run gRPC server, webhook sidecar and Envoy")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("serve-grpc", help="run the billing gRPC server only")
    sub.add_parser("serve-sidecar", help="run the webhook sidecar only")
    gw = sub.add_parser("gateway-config", help="render envoy.yaml for this environment")
    gw.add_argument("--out", default=str(REPO_ROOT / "var" / "run"))
    sub.add_parser("catalog", help="catalog as code: `catalog apply FILE [--dry-run]`")
    args = parser.parse_args(argv)
    _logging(args.command)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
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
    if args.command == "gateway-config":
        return cmd_gateway_config(settings, args.out)
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
