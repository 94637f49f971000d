"""The hot read calls of the whole stack as `make run` runs it, beside their baselines:
`make bench` (or `python -m bench.core`).

The stack is the real one: `python -m tollbooth.cli run` in its own process group (every
server process of the replica, sidecar, Envoy), on a throw-away PostgreSQL database when
BILLING_BENCH_POSTGRES_URL names a server, else on a temporary SQLite file. The load comes from
separate processes (bench.credits' load generator), `concurrency` calls in flight in all.

Every figure is a ratio to a baseline of the same run and transport:

- REST through Envoy: ratio to the REST no-op, `GET /v1/health` (issue 18's "REST no-op route
  through Envoy to the server"): the server's grpc.health.v1 Check, transcoded by Envoy as
  every REST call is, so the ratio leaves out the transport (HTTP/1 to Envoy, JSON transcoding,
  HTTP/2 and grpcio's per-call cost) and shows the work a call does beyond it; target >= 0.5 x
  and p99 <= 25 ms (issue 18). `GET /healthz` (Envoy to the webhook sidecar, a trivial
  Starlette answer, no transcoding, no gRPC) is printed beside it as a reference, each REST
  figure with its ratio to that as well (the `x sidecar` column), not judged;
- gRPC straight to the replica: ratio to the gRPC no-op, grpc.health.v1.Health/Check.

The debit and ingest figures, with PostgreSQL's raw commit and `executemany` as their
baselines, are bench.credits and bench.usage in the same `make bench` run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.credits import _run_threads
from bench.credits import measure as measure_in_processes
from tollbooth.config import REPO_ROOT

SERVICE_KEY = "bench-service-key"
PG_ENV = "BILLING_BENCH_POSTGRES_URL"
DEFAULT_OUT = REPO_ROOT / "bench" / "results.json"
CONCURRENCY = 32
DURATION = 4.0
PRICES = 10
TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
REST_BASE = "rest_noop"
REST_SIDECAR = "rest_sidecar"
GRPC_BASE = "grpc_noop"
BASELINES = (REST_BASE, REST_SIDECAR, GRPC_BASE)


def stack_env(database_url: str, tmp: Path) -> dict[str, str]:
    """`run`'s environment: free loopback ports, bench credentials, limits out of the way
    (still counted, so their cost is measured)."""
    from tests.devstack import free_port

    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "STRIPE_"))},
        "BILLING_DATABASE_URL": database_url,
        "BILLING_SERVICE_KEYS": SERVICE_KEY,
        "BILLING_JWT_KEYS": "bench:bench-signing-key-0123456789abcdef0123",
        "STRIPE_WEBHOOK_SECRET": "whsec_bench_only",
        "BILLING_LOG_LEVEL": "WARNING",
        "BILLING_RATE_LIMIT_ACCOUNT": "100000000/minute",
        "BILLING_RATE_LIMIT_KEY": "100000000/minute",
        "BILLING_GRPC_PORT": str(free_port()),
        "BILLING_REST_PORT": str(free_port()),
        "BILLING_SIDECAR_PORT": str(free_port()),
        "BILLING_ENVOY_ADMIN_PORT": str(free_port()),
        "BILLING_SANDBOX_PORT": str(free_port()),
        "BILLING_METRICS_PORT": "0",
        "BILLING_DATA_DIR": str(tmp),
        "BILLING_RUN_DIR": str(tmp / "run"),
    }


@contextmanager
def running_stack(database_url: str) -> Iterator[dict[str, Any]]:
    """`tollbooth run` until the block ends; yields its ports and its server processes."""
    with tempfile.TemporaryDirectory(prefix="tollbooth-bench-") as name:
        tmp = Path(name)
        env = stack_env(database_url, tmp)
        log_path = tmp / "run.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tollbooth.cli", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cleanup reaches every child
            )
        try:
            deadline = time.monotonic() + 120
            while not _ready(int(env["BILLING_REST_PORT"])):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("run did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.2)
            yield {
                "rest_port": int(env["BILLING_REST_PORT"]),
                "grpc_port": int(env["BILLING_GRPC_PORT"]),
                "pid": proc.pid,
            }
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _ready(rest_port: int) -> bool:
    """Envoy answers /readyz with 200: the database and the billing server are up."""
    conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=5)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


# -- set-up (in this process) ---------------------------------------------------------------


def prepare(grpc_port: int) -> dict[str, str]:
    """A known principal with a bearer token; a product with PRICES prices."""
    import grpc

    from billing.v1 import catalog_pb2, catalog_pb2_grpc, token_pb2, token_pb2_grpc

    svc = (("x-api-key", SERVICE_KEY),)
    principal = f"bench-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        issued = token_pb2_grpc.TokenServiceStub(channel).IssueToken(
            token_pb2.IssueTokenRequest(principal_id=principal), metadata=svc, timeout=10
        )
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        product = stub.CreateProduct(
            catalog_pb2.CreateProductRequest(
                product=catalog_pb2.Product(name="Bench plan", description="bench"),
                request_id=str(uuid.uuid4()),
            ),
            metadata=svc,
            timeout=10,
        )
        for i in range(PRICES):
            stub.CreatePrice(
                catalog_pb2.CreatePriceRequest(
                    price=catalog_pb2.Price(
                        product_id=product.product_id,
                        currency="usd",
                        unit_amount=1000 + 100 * i,
                        type=catalog_pb2.PRICE_TYPE_RECURRING,
                        recurring=catalog_pb2.Recurring(
                            interval=catalog_pb2.RECURRING_INTERVAL_MONTH
                        ),
                        lookup_key=f"bench-{i}",
                        nickname=f"Tier {i}",
                        position=i,
                    ),
                    request_id=str(uuid.uuid4()),
                ),
                metadata=svc,
                timeout=10,
            )
    return {
        "principal": principal,
        "bearer": issued.access_token,
        "product_id": product.product_id,
    }


# -- the calls (in the load processes) ------------------------------------------------------

# key -> (label, transport, REST method and path or gRPC method, auth)
FIGURES: dict[str, tuple[str, str, str, str]] = {
    REST_BASE: ("no-op: GET /v1/health (server)", "rest", "GET /v1/health", "none"),
    REST_SIDECAR: ("reference: GET /healthz (sidecar)", "rest", "GET /healthz", "none"),
    GRPC_BASE: ("no-op: Health/Check", "grpc", "Health/Check", "none"),
    "refused": ("refused by auth (no database)", "rest", "GET /api/v1/credits/balance", "none"),
    "get_balance": (
        "GetBalance, bearer",
        "rest",
        "GET /api/v1/credits/balance?type=units",
        "bearer",
    ),
    "issue_token": ("IssueToken, known principal", "rest", "POST /mgt/v1/token/issue", "key"),
    "list_products": ("ListProducts, bearer", "rest", "GET /api/v1/catalog/products", "bearer"),
    "billing_status": ("GetBillingStatus, bearer", "rest", "GET /api/v1/billing", "bearer"),
    "list_prices": (
        f"ListPrices, {PRICES} prices, bearer",
        "rest",
        "GET /api/v1/catalog/prices?product_id={product_id}",
        "bearer",
    ),
    "grpc_issue_token": ("IssueToken, known principal", "grpc", "IssueToken", "key"),
    "grpc_list_prices": (f"ListPrices, {PRICES} prices, bearer", "grpc", "ListPrices", "bearer"),
}
# REST figures whose answer is an error on purpose: (status expected).
EXPECTED_STATUS = {"refused": 401}


def _rest_call(args: dict[str, Any]) -> Callable[[int], Callable[[int], object]]:
    method, path = FIGURES[args["key"]][2].split(" ", 1)
    path = path.format(**args["fixture"])
    auth = FIGURES[args["key"]][3]
    headers = {"content-type": "application/json"}
    if auth == "bearer":
        headers["authorization"] = f"Bearer {args['fixture']['bearer']}"
    elif auth == "key":
        headers["x-api-key"] = SERVICE_KEY
    body = (
        json.dumps({"principal_id": args["fixture"]["principal"]}).encode()
        if method == "POST"
        else None
    )
    expected = EXPECTED_STATUS.get(args["key"], 200)

    def make_call(t: int) -> Callable[[int], object]:
        conn = http.client.HTTPConnection("127.0.0.1", args["rest_port"], timeout=30)

        def call(i: int) -> object:
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()  # the next request reconnects
                raise
            if resp.status != expected:
                raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
            return data

        return call

    return make_call


def _grpc_call(args: dict[str, Any]) -> Callable[[int], Callable[[int], object]]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from billing.v1 import catalog_pb2, catalog_pb2_grpc, token_pb2, token_pb2_grpc

    fixture = args["fixture"]
    name = FIGURES[args["key"]][2]
    svc = (("x-api-key", SERVICE_KEY),)
    bearer = (("authorization", f"Bearer {fixture['bearer']}"),)

    def make_call(t: int) -> Callable[[int], object]:
        # Its own connection per thread (no shared subchannel), as separate clients would
        # have: the kernel spreads connections over the replica's server processes.
        channel = grpc.insecure_channel(
            f"127.0.0.1:{args['grpc_port']}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        if name == "Health/Check":
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            return lambda i: health.Check(request, timeout=30)
        if name == "IssueToken":
            tokens = token_pb2_grpc.TokenServiceStub(channel)
            issue = token_pb2.IssueTokenRequest(principal_id=fixture["principal"])
            return lambda i: tokens.IssueToken(issue, metadata=svc, timeout=30)
        catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        prices = catalog_pb2.ListPricesRequest(product_id=fixture["product_id"])
        return lambda i: catalog.ListPrices(prices, metadata=bearer, timeout=30)

    return make_call


def load(args: dict[str, Any], out: Any) -> None:
    """One load process: `threads` client threads of figure `args["key"]`."""
    maker = _rest_call if FIGURES[args["key"]][1] == "rest" else _grpc_call
    out.put(_run_threads(args["threads"], maker(args), args["gate"]))


# -- the run --------------------------------------------------------------------------------


def bench_stack(
    database_url: str, concurrency: int, duration: float, keys: list[str]
) -> dict[str, Any]:
    figures: dict[str, dict[str, Any]] = {}
    with running_stack(database_url) as stack:
        fixture = prepare(stack["grpc_port"])
        for key in keys:
            label, transport = FIGURES[key][:2]
            print(f"bench.core: {label} ({transport}) ...", flush=True)
            got = measure_in_processes(
                load, {**stack, "key": key, "fixture": fixture}, concurrency, duration
            )
            figures[key] = {"label": label, "transport": transport, **got}
    sidecar = figures.get(REST_SIDECAR, {}).get("calls_per_s")
    for key, f in figures.items():
        rest = f["transport"] == "rest"
        base = figures[REST_BASE if rest else GRPC_BASE]
        f["ratio_to_baseline"] = _ratio(f["calls_per_s"], base["calls_per_s"])
        f["ratio_to_sidecar"] = _ratio(f["calls_per_s"], sidecar) if rest else None
        f["target"] = _target(key, f)
    return figures


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if not value or not base else round(value / base, 3)


def _target(key: str, f: dict[str, Any]) -> str | None:
    """Issue 18: each read through Envoy >= 0.5 x the REST no-op, p99 <= 25 ms."""
    if f["transport"] != "rest" or key in (REST_BASE, REST_SIDECAR, "refused"):
        return None
    ok = (
        (f["ratio_to_baseline"] or 0) >= TARGET_RATIO
        and (f["p99_ms"] or 1e9) <= TARGET_P99_MS
        and not f["errors"]
    )
    return "met" if ok else "missed"


def format_table(doc: dict[str, Any]) -> str:
    def num(value: float | None, width: int, digits: int) -> str:
        return "-".rjust(width) if value is None else f"{value:{width}.{digits}f}"

    m, s = doc["machine"], doc["settings"]
    lines = [
        f"tollbooth bench.core {doc['timestamp']}: {m['cpu_count']} CPUs, Python {m['python']}; "
        f"`tollbooth run` with {s['server_processes']} server processes; {s['concurrency']} "
        f"calls in flight from {s['load_processes']} load processes, {s['duration_sec']} s "
        "per figure",
        "note: x base = REST figures over GET /v1/health through Envoy (the server's health "
        "check, transcoded), gRPC figures over Health/Check; x sidecar = REST figures over "
        "GET /healthz (Envoy to the sidecar), a reference; target: REST reads >= 0.5 x base "
        "and p99 <= 25 ms",
    ]
    header = (
        f"  {'figure':<36} {'via':<5} {'calls/s':>9} {'x base':>7} {'x sidecar':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  target"
    )
    notes: list[str] = []
    for db, figures in doc["databases"].items():
        lines += ["", db, header]
        for key, f in figures.items():
            lines.append(
                f"  {f['label']:<36} {f['transport']:<5} {num(f['calls_per_s'], 9, 1)} "
                f"{num(f['ratio_to_baseline'], 7, 2)} {num(f.get('ratio_to_sidecar'), 9, 2)} "
                f"{num(f['p50_ms'], 7, 1)} "
                f"{num(f['p99_ms'], 7, 1)} {f['errors']:>6}  {f['target'] or ''}"
            )
            if f["first_error"]:
                notes.append(f"{db}/{key}: {f['errors']} error(s), first: {f['first_error']}")
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    from bench.credits import LOAD_PROCS

    parser = argparse.ArgumentParser(prog="python -m bench.core", description=__doc__)
    parser.add_argument("--duration", type=float, default=DURATION, help="seconds per figure")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="calls in flight")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON path")
    parser.add_argument("--sqlite", action="store_true", help="SQLite even with PostgreSQL")
    parser.add_argument(
        "--figures", default="", help="comma-separated figure keys (default: every one)"
    )
    args = parser.parse_args(argv)
    keys = [k for k in args.figures.split(",") if k] or list(FIGURES)
    unknown = sorted(set(keys) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figures {unknown}; known: {', '.join(FIGURES)}")
    keys = [*dict.fromkeys([*BASELINES, *keys])]  # the baselines always

    databases: dict[str, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    admin_url = "" if args.sqlite else os.environ.get(PG_ENV, "").strip()
    if admin_url:
        from sqlalchemy import create_engine, text

        from tests.devstack import throwaway_postgres

        print("bench.core: PostgreSQL (throw-away database) ...", flush=True)
        with throwaway_postgres(admin_url, "tollbooth_bench") as url:
            engine = create_engine(url)
            with engine.connect() as conn:
                versions["postgresql_server"] = str(
                    conn.execute(text("SHOW server_version")).scalar()
                )
            engine.dispose()
            databases["postgresql"] = bench_stack(url, args.concurrency, args.duration, keys)
    else:
        print(f"bench.core: SQLite ({PG_ENV} is not set)", flush=True)
        with tempfile.TemporaryDirectory(prefix="tollbooth-bench-db-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'billing.db'}"
            databases["sqlite"] = bench_stack(url, args.concurrency, args.duration, keys)
    doc = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            **versions,
        },
        "settings": {
            "concurrency": args.concurrency,
            "load_processes": min(LOAD_PROCS, args.concurrency),
            "duration_sec": args.duration,
            "server_processes": os.cpu_count() or 1,  # BILLING_GRPC_PROCESSES' default
        },
        "databases": databases,
    }
    print()
    print(format_table(doc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
