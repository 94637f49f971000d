"""The running stack's ports: checked free before `run` starts anything, and recorded in the
data directory (`<data dir>/run/stack.json`) so operator commands run from another shell find
the stack `run` started (its ports, its sandbox, its database) without repeating its variables.

A variable set in the operator's shell always wins over the recorded one. The file is written
once `run` is ready, removed when it stops, and ignored when the process that wrote it is gone.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tollbooth.config import Settings

# What `run` records: the variables that say where the stack listens and what it talks to.
RECORDED = (
    "BILLING_DATABASE_URL",
    "BILLING_GRPC_HOST",
    "BILLING_GRPC_PORT",
    "BILLING_GRPC_REPLICAS",
    "BILLING_REST_HOST",
    "BILLING_REST_PORT",
    "BILLING_SIDECAR_PORT",
    "BILLING_ENVOY_ADMIN_PORT",
    "BILLING_SANDBOX_PORT",
    "BILLING_SANDBOX_HOST",
    "BILLING_METRICS_PORT",
    "STRIPE_API_BASE",
)


@dataclass(frozen=True)
class Port:
    """One port the stack listens on, and the variable that sets it."""

    variable: str
    host: str
    port: int


def planned_ports(settings: Settings) -> list[Port]:
    """Every port `run` will listen on: gRPC replicas, Envoy (REST and admin), the sidecar,
    the sandbox (without a Stripe key) and the metrics endpoints."""
    ports = [
        Port("BILLING_GRPC_PORT" if i == 0 else f"BILLING_GRPC_PORT+{i}", settings.grpc_host, p)
        for i, p in enumerate(settings.grpc_ports)
    ]
    ports += [
        Port("BILLING_REST_PORT", settings.rest_host, settings.rest_port),
        Port("BILLING_ENVOY_ADMIN_PORT", "127.0.0.1", settings.envoy_admin_port),
        Port("BILLING_SIDECAR_PORT", "127.0.0.1", settings.sidecar_port),
    ]
    if settings.sandbox:
        ports.append(Port("BILLING_SANDBOX_PORT", settings.sandbox_host, settings.sandbox_port))
    ports += [Port(variable, "127.0.0.1", port) for _, variable, port in metrics_ports(settings)]
    return ports


def grpc_process_names(settings: Settings) -> list[str]:
    """The gRPC server processes `run` starts: `grpc-<replica>`, with `.<process>` when a
    replica runs several (BILLING_GRPC_PROCESSES)."""
    procs = settings.grpc_process_count
    return [
        f"grpc-{i}" + (f".{j}" if procs > 1 else "")
        for i in range(settings.grpc_replicas)
        for j in range(procs)
    ]


def metrics_ports(settings: Settings) -> list[tuple[str, str, int]]:
    """(process, variable, port) of each process's metrics endpoint, none when
    BILLING_METRICS_PORT is 0: the gRPC server processes from BILLING_METRICS_PORT upwards, then the
    sidecar, (without a Stripe key) the sandbox, then the notification delivery process."""
    base = settings.metrics_port
    if not base:
        return []
    names = [*grpc_process_names(settings), "sidecar"]
    if settings.sandbox:
        names.append("sandbox")
    names.append("notifications")
    return [
        (name, "BILLING_METRICS_PORT" if i == 0 else f"BILLING_METRICS_PORT+{i}", base + i)
        for i, name in enumerate(names)
    ]


def _bind_error(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on now, or None. SO_REUSEADDR as the servers set
    it, so connections of a stopped stack in TIME_WAIT do not count as use."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        return f"its host {host!r} does not resolve ({exc.strerror})"
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "is already in use"
            if exc.errno == errno.EACCES:
                return "cannot be bound: permission denied"
            return f"cannot be bound on {host}: {exc.strerror}"
    return None


def port_problems(ports: list[Port]) -> list[str]:
    """One line per port that is taken, unusable or given to two listeners."""
    problems: list[str] = []
    seen: dict[int, str] = {}
    for p in ports:
        if p.port in seen:
            problems.append(f"port {p.port} is set for both {seen[p.port]} and {p.variable}")
            continue
        seen[p.port] = p.variable
        why = _bind_error(p.host, p.port)
        if why:
            problems.append(f"port {p.port} ({p.variable}) {why}")
    return problems


# -- the run-state file ------------------------------------------------------------------------


def state_path(data_dir: Path) -> Path:
    return data_dir / "run" / "stack.json"


def write_state(settings: Settings, environ: Mapping[str, str]) -> Path:
    """Record the running stack (mode 0600: the database URL may hold a password)."""
    variables = {
        "BILLING_DATABASE_URL": settings.database_url,
        "BILLING_GRPC_HOST": settings.grpc_host,
        "BILLING_GRPC_PORT": str(settings.grpc_port),
        "BILLING_GRPC_REPLICAS": str(settings.grpc_replicas),
        "BILLING_REST_HOST": settings.rest_host,
        "BILLING_REST_PORT": str(settings.rest_port),
        "BILLING_SIDECAR_PORT": str(settings.sidecar_port),
        "BILLING_ENVOY_ADMIN_PORT": str(settings.envoy_admin_port),
        "BILLING_SANDBOX_PORT": str(settings.sandbox_port),
        "BILLING_SANDBOX_HOST": settings.sandbox_host,
        "BILLING_METRICS_PORT": str(settings.metrics_port),
    }
    if environ.get("STRIPE_API_BASE", "").strip():
        variables["STRIPE_API_BASE"] = settings.stripe_api_base
    path = state_path(settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".stack.{os.getpid()}.json")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), "variables": variables}, fh, indent=2)
    os.replace(tmp, path)
    return path


def remove_state(data_dir: Path) -> None:
    """Remove the record if it is this process's own (a later `run` may have replaced it)."""
    path = state_path(data_dir)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(data_dir: Path) -> dict[str, str] | None:
    """The variables of the stack running on this data directory, or None."""
    try:
        state = json.loads(state_path(data_dir).read_text())
        pid = int(state["pid"])
        variables = state["variables"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid <= 0 or not _alive(pid) or not isinstance(variables, dict):
        return None
    return {k: str(v) for k, v in variables.items() if k in RECORDED}


def operator_settings(environ: Mapping[str, str] | None = None, *, quiet: bool = False) -> Settings:
    """The settings of an operator command: the environment, over the running stack's recorded
    variables (a variable set in the shell wins). Raises ConfigError as Settings.from_env."""
    given = dict(os.environ if environ is None else environ)
    settings: Settings = Settings.from_env(given)
    recorded = read_state(settings.data_dir)
    if not recorded:
        return settings
    merged = {**recorded, **{k: v for k, v in given.items() if v.strip()}}
    used = sorted(k for k in recorded if not given.get(k, "").strip())
    if used and not quiet:
        print(
            f"using the running stack's {', '.join(used)} from {state_path(settings.data_dir)}",
            file=sys.stderr,
            flush=True,
        )
    result: Settings = Settings.from_env(merged)
    return result
