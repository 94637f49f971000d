"""Throughput of the whole stack against a no-op gRPC baseline: `make bench`.

Absolute calls/s say more about the machine than about the code, so every figure is also given
as a ratio to a call that does no work of ours (grpc.health.v1.Health/Check on the same
server), and each REST figure as a ratio to the same RPC over gRPC. A change that halves a
ratio is ours; one that moves every figure alike is the machine.

The stack runs in this process (server and sidecar) plus an Envoy subprocess, on a temporary
SQLite file and, when BILLING_BENCH_POSTGRES_URL names a PostgreSQL server, on a throw-away
database there. Client threads share the server's process and its GIL, so figures are lower
than with clients on another machine; ratios stay comparable from run to run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from billing.v1 import catalog_pb2, catalog_pb2_grpc, token_pb2, token_pb2_grpc
from tests.devstack import Stack, start_stack, throwaway_postgres
from tollbooth.config import REPO_ROOT

SERVICE_KEY = "bench-service-key"
PG_ENV = "BILLING_BENCH_POSTGRES_URL"
DEFAULT_OUT = REPO_ROOT / "bench" / "results.json"
CONCURRENCY = 16
DURATION = 3.5
MAX_CALLS = 100_000
PRICES = 10
BASELINE = "baseline"
BASELINE_NOTE = (
    "baseline = grpc.health.v1.Health/Check on the billing server: public, so it passes the "
    "logging and error interceptors but skips auth, and touches no database"
)


def bench_env(database_url: str) -> dict[str, str]:
    """The server's configuration for a bench run; nothing is read from the caller's env."""
    return {
        "BILLING_DATABASE_URL": database_url,
        "BILLING_SERVICE_KEYS": SERVICE_KEY,
        "BILLING_JWT_KEYS": "bench:bench-signing-key-0123456789abcdef0123",
        "STRIPE_WEBHOOK_SECRET": "whsec_bench_only",
        "BILLING_GRPC_WORKERS": "32",
        "BILLING_LOG_LEVEL": "WARNING",
    }


@dataclass
class Measurement:
    """One figure: successful calls per second of wall time, with latency and errors."""

    key: str
    label: str
    transport: str  # "grpc" or "rest"
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    first_error: str | None = None
    skipped: str | None = None  # why there is no figure, e.g. "not built"
    counterpart: str | None = None  # for REST: the key of the same RPC over gRPC

    @property
    def calls_per_s(self) -> float | None:
        if self.skipped or self.seconds <= 0:
            return None
        return self.calls / self.seconds

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


def measure(
    key: str,
    label: str,
    transport: str,
    make_call: Callable[[], Callable[[int], object]],
    *,
    concurrency: int = CONCURRENCY,
    duration: float = DURATION,
    max_calls: int = MAX_CALLS,
    counterpart: str | None = None,
) -> Measurement:
    """Keep `concurrency` calls in flight for `duration` seconds or `max_calls` calls.

    `make_call` runs once per thread (so each can own a connection) and returns the call,
    which receives a unique index (for unique principal ids). Each thread makes one untimed
    call first, so connection set-up is not measured.
    """
    result = Measurement(key, label, transport, counterpart=counterpart)
    counter = itertools.count()  # next() on it is atomic under the GIL
    lock = threading.Lock()
    ready = threading.Barrier(concurrency + 1)
    go = threading.Event()
    stop_at = [0.0]

    def worker() -> None:
        local: list[float] = []
        errors = 0
        first: str | None = None
        call: Callable[[int], object] | None = None
        try:
            call = make_call()
            call(next(counter))
        except Exception as exc:  # reported below, counted once
            errors, first = 1, f"{type(exc).__name__}: {exc}"[:300]
        ready.wait()
        go.wait()
        while call is not None:
            i = next(counter)
            if i >= max_calls or time.perf_counter() >= stop_at[0]:
                break
            started = time.perf_counter()
            try:
                call(i)
            except Exception as exc:
                errors += 1
                first = first or f"{type(exc).__name__}: {exc}"[:300]
                continue
            local.append((time.perf_counter() - started) * 1000)
        with lock:
            result.latencies_ms.extend(local)
            result.errors += errors
            result.first_error = result.first_error or first

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    stop_at[0] = started + duration
    go.set()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - started
    result.calls = len(result.latencies_ms)
    return result


# -- the calls ------------------------------------------------------------------------------


class RestCaller:
    """One keep-alive HTTP/1.1 connection to Envoy, owned by one thread."""

    def __init__(self, base_url: str) -> None:
        host_port = base_url.split("://", 1)[1]
        host, port = host_port.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def __call__(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> bytes:
        payload = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the next request reconnects
            raise
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        return data


def _catalog(channel: grpc.Channel, md: tuple[tuple[str, str], ...]) -> tuple[str | None, str]:
    """Create a product with PRICES prices; (product_id, "") or (None, why not)."""
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    try:
        product = stub.CreateProduct(
            catalog_pb2.CreateProductRequest(
                product=catalog_pb2.Product(name="Bench plan", description="bench"),
                request_id=str(uuid.uuid4()),
            ),
            metadata=md,
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
                metadata=md,
                timeout=10,
            )
        stub.ListPrices(
            catalog_pb2.ListPricesRequest(product_id=product.product_id), metadata=md, timeout=10
        )
    except grpc.RpcError as err:
        code = err.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return None, "not built"
        return None, f"setup failed: {code.name} {err.details()}"  # type: ignore[attr-defined]
    return product.product_id, ""


def run_suite(
    stack: Stack,
    *,
    concurrency: int = CONCURRENCY,
    duration: float = DURATION,
    max_calls: int = MAX_CALLS,
) -> list[Measurement]:
    """Every figure, in table order, against one running stack."""
    run = uuid.uuid4().hex[:8]
    svc = (("x-api-key", SERVICE_KEY),)
    rest_svc = {"x-api-key": SERVICE_KEY, "content-type": "application/json"}
    channel = grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        health = health_pb2_grpc.HealthStub(channel)
        tokens = token_pb2_grpc.TokenServiceStub(channel)
        catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        same = token_pb2.IssueTokenRequest(principal_id=f"bench-same-{run}")
        bearer = tokens.IssueToken(same, metadata=svc, timeout=10).access_token
        bearer_md = (("authorization", f"Bearer {bearer}"),)

        def timed(
            key: str,
            label: str,
            transport: str,
            make_call: Callable[[], Callable[[int], object]],
            counterpart: str | None = None,
        ) -> Measurement:
            return measure(
                key,
                label,
                transport,
                make_call,
                concurrency=concurrency,
                duration=duration,
                max_calls=max_calls,
                counterpart=counterpart,
            )

        def grpc_call(fn: Callable[[int], object]) -> Callable[[], Callable[[int], object]]:
            return lambda: fn

        def rest_call(
            fn: Callable[[RestCaller, int], object],
        ) -> Callable[[], Callable[[int], object]]:
            def make() -> Callable[[int], object]:
                caller = RestCaller(stack.rest_url)
                return lambda i: fn(caller, i)

            return make

        results = [
            timed(
                BASELINE,
                "no-op: Health/Check",
                "grpc",
                grpc_call(lambda i: health.Check(health_pb2.HealthCheckRequest(), timeout=10)),
            ),
            timed(
                "issue_token_same",
                "IssueToken, known principal",
                "grpc",
                grpc_call(lambda i: tokens.IssueToken(same, metadata=svc, timeout=10)),
            ),
            timed(
                "issue_token_new",
                "IssueToken, new principal",
                "grpc",
                grpc_call(
                    lambda i: tokens.IssueToken(
                        token_pb2.IssueTokenRequest(principal_id=f"bench-new-{run}-{i}"),
                        metadata=svc,
                        timeout=10,
                    )
                ),
            ),
            timed(
                "rest_issue_token_same",
                "IssueToken, known principal",
                "rest",
                rest_call(
                    lambda c, i: c(
                        "POST",
                        "/mgt/v1/token/issue",
                        rest_svc,
                        {"principal_id": same.principal_id},
                    )
                ),
                counterpart="issue_token_same",
            ),
            timed(
                "rest_issue_token_new",
                "IssueToken, new principal",
                "rest",
                rest_call(
                    lambda c, i: c(
                        "POST",
                        "/mgt/v1/token/issue",
                        rest_svc,
                        {"principal_id": f"bench-rest-{run}-{i}"},
                    )
                ),
                counterpart="issue_token_new",
            ),
        ]
        product_id, why_not = _catalog(channel, svc)
        list_label = f"ListPrices, {PRICES} prices, bearer"
        if product_id is None:
            results += [
                Measurement("list_prices", list_label, "grpc", skipped=why_not),
                Measurement(
                    "rest_list_prices",
                    list_label,
                    "rest",
                    skipped=why_not,
                    counterpart="list_prices",
                ),
            ]
        else:
            request = catalog_pb2.ListPricesRequest(product_id=product_id)
            rest_bearer = {"authorization": f"Bearer {bearer}"}
            results += [
                timed(
                    "list_prices",
                    list_label,
                    "grpc",
                    grpc_call(
                        lambda i: catalog.ListPrices(request, metadata=bearer_md, timeout=10)
                    ),
                ),
                timed(
                    "rest_list_prices",
                    list_label,
                    "rest",
                    rest_call(
                        lambda c, i: c(
                            "GET", f"/api/v1/catalog/prices?product_id={product_id}", rest_bearer
                        )
                    ),
                    counterpart="list_prices",
                ),
            ]
        return results
    finally:
        channel.close()


# -- databases ------------------------------------------------------------------------------


@contextmanager
def postgres_database(admin_url: str) -> Iterator[tuple[str, str]]:
    """A throw-away database on the server `admin_url` names; dropped afterwards.

    Yields (url, server version).
    """
    with throwaway_postgres(admin_url, "tollbooth_bench") as url:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                version = str(conn.execute(text("SHOW server_version")).scalar())
        finally:
            engine.dispose()
        yield url, version


def bench_database(
    database_url: str,
    *,
    concurrency: int = CONCURRENCY,
    duration: float = DURATION,
    max_calls: int = MAX_CALLS,
) -> list[Measurement]:
    """Start the stack on `database_url` (migrating it), measure, stop."""
    with tempfile.TemporaryDirectory(prefix="tollbooth-bench-") as tmp:
        stack = start_stack(database_url, bench_env(database_url), Path(tmp))
        try:
            return run_suite(stack, concurrency=concurrency, duration=duration, max_calls=max_calls)
        finally:
            stack.close()


# -- report ---------------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 3)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def results_document(
    runs: dict[str, list[Measurement]],
    *,
    concurrency: int,
    duration: float,
    max_calls: int,
    databases: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON written to bench/results.json: machine, settings, figures and ratios."""
    doc: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "grpcio": grpc.__version__,
            "sqlite": sqlite3.sqlite_version,
            **{f"{db}_server": v for db, v in (databases or {}).items()},
        },
        "settings": {
            "concurrency": concurrency,
            "duration_sec": duration,
            "max_calls": max_calls,
            "in_process": "server and client threads share one Python process; Envoy apart",
            "baseline": BASELINE_NOTE,
        },
        "databases": {},
    }
    for db, measurements in runs.items():
        by_key = {m.key: m for m in measurements}
        base = by_key[BASELINE].calls_per_s if BASELINE in by_key else None
        figures = {}
        for m in measurements:
            rate = m.calls_per_s
            twin = by_key.get(m.counterpart) if m.counterpart else None
            figures[m.key] = {
                "label": m.label,
                "transport": m.transport,
                "calls_per_s": _round(rate),
                "ratio_to_baseline": _ratio(rate, base),
                "ratio_to_grpc": _ratio(rate, twin.calls_per_s) if twin else None,
                "calls": m.calls,
                "errors": m.errors,
                "seconds": _round(m.seconds, 3),
                "p50_ms": _round(m.percentile(0.50), 2),
                "p99_ms": _round(m.percentile(0.99), 2),
                "first_error": m.first_error,
                "skipped": m.skipped,
            }
        doc["databases"][db] = figures
    return doc


def format_table(doc: dict[str, Any]) -> str:
    def num(value: float | None, width: int, digits: int) -> str:
        return "-".rjust(width) if value is None else f"{value:{width}.{digits}f}"

    m, s = doc["machine"], doc["settings"]
    lines = [
        f"tollbooth bench {doc['timestamp']}: {m['cpu_count']} CPUs, Python {m['python']}, "
        f"grpcio {m['grpcio']}; {s['concurrency']} calls in flight, "
        f"{s['duration_sec']} s or {s['max_calls']} calls per figure",
        f"note: {s['in_process']}; compare ratios, not absolutes",
        f"note: {s['baseline']}",
    ]
    header = (
        f"  {'figure':<38} {'via':<5} {'calls/s':>9} {'x base':>7} {'x gRPC':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    notes: list[str] = []
    for db, figures in doc["databases"].items():
        lines += ["", db, header]
        for key, f in figures.items():
            if f["skipped"]:
                lines.append(f"  {f['label']:<38} {f['transport']:<5} n/a ({f['skipped']})")
                continue
            lines.append(
                f"  {f['label']:<38} {f['transport']:<5} {num(f['calls_per_s'], 9, 1)} "
                f"{num(f['ratio_to_baseline'], 7, 2)} {num(f['ratio_to_grpc'], 7, 2)} "
                f"{num(f['p50_ms'], 7, 1)} {num(f['p99_ms'], 7, 1)} {f['errors']:>6}"
            )
            if f["first_error"]:
                notes.append(f"{db}/{key}: {f['errors']} error(s), first: {f['first_error']}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.core", description=__doc__)
    parser.add_argument("--duration", type=float, default=DURATION, help="seconds per figure")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="calls in flight")
    parser.add_argument("--max-calls", type=int, default=MAX_CALLS, help="calls per figure")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON path")
    args = parser.parse_args(argv)
    opts: dict[str, Any] = {
        "concurrency": args.concurrency,
        "duration": args.duration,
        "max_calls": args.max_calls,
    }

    runs: dict[str, list[Measurement]] = {}
    servers: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="tollbooth-bench-db-") as tmp:
        print("bench: sqlite ...", flush=True)
        runs["sqlite"] = bench_database(f"sqlite:///{Path(tmp) / 'billing.db'}", **opts)
    admin_url = os.environ.get(PG_ENV, "").strip()
    if admin_url:
        print("bench: postgresql (throw-away database) ...", flush=True)
        with postgres_database(admin_url) as (url, version):
            servers["postgresql"] = version
            runs["postgresql"] = bench_database(url, **opts)
    else:
        print(f"bench: PostgreSQL skipped ({PG_ENV} is not set)", flush=True)

    doc = results_document(runs, databases=servers, **opts)
    print()
    print(format_table(doc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
