"""The whole stack in one process, for tests and benchmarks: billing server, webhook sidecar
and a real Envoy subprocess on free loopback ports."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1.health import HealthServicer
from sqlalchemy import create_engine, text

from tollbooth.app import Deps, build_server
from tollbooth.app import start_sidecar as start_in_thread
from tollbooth.config import Settings
from tollbooth.db import Database, normalize_url
from tollbooth.db.migrate import upgrade
from tollbooth.gateway import render, start_envoy
from tollbooth.rpc import server as rpc_server


@contextmanager
def throwaway_postgres(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server `admin_url` names; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield normalize_url(admin_url).rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


_template_lock = threading.Lock()
_template: Path | None = None


def migrated_sqlite(path: Path) -> str:
    """A migrated, empty SQLite database at `path`, copied from one migrated once per process
    (running the migrations for every test cost half a second each); its URL."""
    global _template
    with _template_lock:
        if _template is None:
            template = Path(tempfile.mkdtemp(prefix="tollbooth-template-")) / "billing.db"
            atexit.register(shutil.rmtree, template.parent, ignore_errors=True)
            upgrade(f"sqlite:///{template}")
            _template = template
    source = sqlite3.connect(str(_template))
    target = sqlite3.connect(str(path))
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return f"sqlite:///{path}"


@contextmanager
def grpc_server(deps: Deps, servicers: Sequence[object] | None = None) -> Iterator[int]:
    """A billing server of `deps` (every room, or only `servicers`) on a free loopback port
    while the block runs: its port. Stopped at once when the block ends."""
    if servicers is None:
        server, port, _ = build_server(deps, "127.0.0.1:0")
    else:
        server, port, _ = rpc_server.build_server(deps, "127.0.0.1:0", servicers)  # type: ignore[arg-type]
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait()


@contextmanager
def serving(deps: Deps) -> Iterator[grpc.Channel]:
    """A billing server of `deps` while the block runs, and a ready channel to it."""
    with grpc_server(deps) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


_handed: set[int] = set()  # ports this process has handed out: never twice


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range (see `free_run`): a
    process of ours binds it later, and meanwhile no outgoing connection and no socket bound
    to port 0 can be given it. (Where a port must be kept from everyone until the very
    moment a process binds it, `HeldPorts` holds it.)"""
    return free_run(1)


def free_run(n: int, avoid: Collection[int] = ()) -> int:
    """A loopback port p with p..p+n-1 free now and none of them in `avoid` (nor handed out
    before by this process), chosen below the kernel's ephemeral range: `run` binds
    BILLING_METRICS_PORT+i itself, later, and a port of the ephemeral range may meanwhile
    become the local end of any outgoing connection (a PostgreSQL client's, a test's), which
    port 0's hand-out cannot foresee."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    # The whole run lies in this worker's share (its slice does not depend on n).
    first, last = _worker_share(10_000, max(10_001, low))
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(first, max(first + 1, last - n + 1))
        run = set(range(base, base + n))
        if run & set(avoid) or run & _handed:
            continue
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        _handed.update(run)
        return base
    raise RuntimeError(f"no run of {n} free ports below {low}")


def _worker_share(first: int, last: int) -> tuple[int, int]:
    """This test process's own part of the ports [first, last): under pytest-xdist (`make
    test` runs several workers) each worker draws from its own slice, so two workers never
    hand out the same port (`_handed` is per process)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    except ValueError:
        return first, last
    if count <= 1 or not 0 <= index < count:
        return first, last
    size = (last - first) // count
    return first + index * size, first + (index + 1) * size


class HeldPorts:
    """Loopback ports bound, not listening, until released: meanwhile no socket bound to port
    0 (the in-process gRPC server's, anyone's) is handed one of them, and a connection to one
    is refused. Release a port just before the process that listens on it binds it; keep a
    port that must stay dead (an upstream that is down) until the end of the block."""

    def __init__(self, count: int) -> None:
        socks: list[socket.socket] = []
        try:
            for _ in range(count):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", 0))
        except BaseException:
            for s in socks:
                s.close()
            raise
        self._held = {int(s.getsockname()[1]): s for s in socks}
        self.ports = list(self._held)

    def release(self, *ports: int) -> None:
        """Close the sockets of `ports` (of every port still held when none are named)."""
        for port in ports or list(self._held):
            self._held.pop(port).close()

    def __enter__(self) -> HeldPorts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.body)

    @property
    def reason(self) -> str | None:
        """ErrorInfo.reason of a transcoded error, or the sidecar's error reason."""
        data = self.json()
        if "error" in data:
            return data["error"].get("reason")
        for detail in data.get("details", []):
            if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
                return detail.get("reason")
        return None


@dataclass
class Stack:
    settings: Settings
    deps: Deps
    rest_url: str
    grpc_port: int
    tmp: Path
    server: grpc.Server | None = None
    health: HealthServicer | None = None  # the server's grpc.health.v1 servicer
    _stops: list = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        body: object | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.rest_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, dict(err.headers), err.read())

    def close(self) -> None:
        for stop in reversed(self._stops):
            stop()


def start_stack(database_url: str, env: dict[str, str], tmp: Path) -> Stack:
    upgrade(database_url)
    # The three ports stay held until the gRPC server has taken its own port 0: otherwise the
    # kernel may hand it one of them (seen: Envoy's admin port answered by the gRPC server).
    with HeldPorts(3) as held:
        rest, admin, sidecar_port = held.ports
        settings = Settings.from_env(
            {
                **env,
                "BILLING_REST_PORT": str(rest),
                "BILLING_ENVOY_ADMIN_PORT": str(admin),
                "BILLING_SIDECAR_PORT": str(sidecar_port),
            }
        )
        deps = Deps.build(settings, Database(database_url))
        server, grpc_port, health = build_server(deps, "127.0.0.1:0")
        server.start()
    stack = Stack(settings, deps, f"http://127.0.0.1:{rest}", grpc_port, tmp, server, health)

    def stop_server() -> None:
        server.stop(grace=None).wait()
        deps.dispose()  # every environment's database

    stack._stops.append(stop_server)
    sidecar = start_in_thread(settings, sidecar_port, target=f"127.0.0.1:{grpc_port}")
    stack._stops.append(sidecar.stop)
    config = render(settings, tmp, grpc_ports=[grpc_port], sidecar_port=sidecar_port)
    envoy = start_envoy(config, tmp / "envoy.log")

    def stop_envoy() -> None:
        envoy.terminate()
        try:
            envoy.wait(timeout=10)
        except Exception:
            envoy.kill()
            envoy.wait()

    stack._stops.append(stop_envoy)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if envoy.poll() is not None:
            stack.close()
            raise RuntimeError(f"envoy exited: {(tmp / 'envoy.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                if r.status == 200:
                    return stack
        except OSError:
            time.sleep(0.1)
    stack.close()
    raise RuntimeError("envoy did not become ready")


@contextmanager
def grpc_replicas(env: dict[str, str], count: int = 2) -> Iterator[list[int]]:
    """`count` `serve-grpc` processes (replicas, as `run` starts them) on free loopback ports,
    all with `env` (make_env's: one database), while the block runs: their ports. Each is
    stopped by its own pid when the block ends."""
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tollbooth.cli", "serve-grpc"],
                    env={
                        **os.environ,
                        "BILLING_LOG_LEVEL": "WARNING",
                        **env,
                        "BILLING_GRPC_PORT": str(port),
                        "BILLING_GRPC_HOST": "127.0.0.1",
                    },
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            ports.append(port)
        for port in ports:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                grpc.channel_ready_future(ch).result(timeout=60)
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
