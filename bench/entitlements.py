"""CheckEntitlement against the no-op gRPC call of the same run: `python -m bench.entitlements`.

Figures (each with `--concurrency` calls in flight, default 32, from load-generator processes
separate from the server process):

- baseline: grpc.health.v1.Health/Check on the same server (no auth, no database);
- CheckEntitlement of a boolean feature, service key, across `--accounts` accounts that each
  hold a live subscription (each account checked once before the clock starts: the steady
  state of a backend checking on every request);
- CheckEntitlement of a metered feature (a count metric over the billing period), same
  accounts, each with `--events` usage events in the period;
- the same with the replica's answer cache on (BILLING_ENTITLEMENT_CACHE_MS=`--cache-ms`),
  over 32 hot accounts (the few users a backend serves at one moment).

Target (issue 16): each CheckEntitlement figure at least 0.5x the baseline, p99 under 10 ms.
Needs a PostgreSQL server: BILLING_BENCH_POSTGRES_URL (or BILLING_TEST_POSTGRES_URL); a
throw-away database is created and dropped. Writes bench/results-entitlements.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.credits import SERVICE_KEY, _run_threads, measure, ratio, server_env

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results-entitlements.json"
ACCOUNTS = 1000
EVENTS = 100
CONCURRENCY = 32
DURATION = 5.0
TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0


# -- load generators (run in their own processes) ------------------------------------------


def health_load(args: dict[str, Any], out: Any) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    def make_call(t: int) -> Callable[[int], object]:
        channel = grpc.insecure_channel(f"127.0.0.1:{args['ports'][0]}")
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        return lambda i: stub.Check(request, timeout=30)

    out.put(_run_threads(args["threads"], make_call, args["gate"]))


def check_load(args: dict[str, Any], out: Any) -> None:
    """CheckEntitlement of `feature` for accounts in turn; a wrong answer counts as an error."""
    import grpc

    from billing.v1 import entitlement_pb2, entitlement_pb2_grpc

    md = (("x-api-key", SERVICE_KEY),)
    accounts: list[str] = args["accounts"]
    rng = random.Random(args["seed"])

    def make_call(t: int) -> Callable[[int], object]:
        channel = grpc.insecure_channel(f"127.0.0.1:{args['ports'][0]}")
        stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
        offset = rng.randrange(len(accounts))

        def call(i: int) -> object:
            got = stub.CheckEntitlement(
                entitlement_pb2.CheckEntitlementRequest(
                    account=accounts[(offset + i) % len(accounts)], feature=args["feature"]
                ),
                metadata=md,
                timeout=30,
            )
            if not got.allowed or (args["used"] and got.used != args["used"]):
                raise RuntimeError(f"unexpected answer: {got}")
            return got

        return call

    out.put(_run_threads(args["threads"], make_call, args["gate"]))


def warm(port: int, accounts: list[str], feature: str) -> None:
    """Check `feature` once for every account before the clock starts: the steady state of a
    backend that checks on every request (the server has resolved each account and read its
    holdings once). A wrong or failed answer stops the bench."""
    import grpc

    from billing.v1 import entitlement_pb2, entitlement_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
        for account in accounts:
            got = stub.CheckEntitlement(
                entitlement_pb2.CheckEntitlementRequest(account=account, feature=feature),
                metadata=(("x-api-key", SERVICE_KEY),),
                timeout=30,
            )
            if not got.allowed:
                raise RuntimeError(f"warm-up: unexpected answer: {got}")


def _ready(proc: subprocess.Popen[bytes], port: int, grpc: Any) -> bool:
    """Whether the server answers on `port` within two minutes; False as soon as it exits."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        ready = grpc.channel_ready_future(ch)
        for _ in range(120):
            if proc.poll() is not None:
                return False
            try:
                ready.result(timeout=1)
                return True
            except grpc.FutureTimeoutError:
                continue
    return False


@contextmanager
def server(url: str, **extra: str) -> Iterator[list[int]]:
    """One `tollbooth serve-grpc` process (its own GIL), stopped by its pid."""
    import grpc

    from tests.devstack import free_port

    for _attempt in range(3):  # a port another process took meanwhile: the server exits
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tollbooth.cli", "serve-grpc"],
            env={**server_env(url, port), **extra},
            stdout=subprocess.DEVNULL,
        )
        if _ready(proc, port, grpc):
            break
        proc.kill()
        proc.wait()
    else:
        raise RuntimeError("the bench's server did not start (three ports tried)")
    try:
        yield [port]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- set-up ---------------------------------------------------------------------------------


def seed(url: str, accounts: int, events: int) -> list[str]:
    """A plan whose price grants `pro` (boolean) and `calls` (metered, limit 1,000,000), one
    live subscription to it per account, and `events` usage events per account this period.
    Set up in-process through the models (not measured)."""
    from sqlalchemy import insert

    from tollbooth.accounts.service import ensure_account
    from tollbooth.db import Database
    from tollbooth.db.models import BillableMetric, Price, Product, Subscription, UsageEvent
    from tollbooth.db.subscription_items import SubscriptionItem
    from tollbooth.db.types import utcnow
    from tollbooth.ids import new_id

    now = utcnow()
    db = Database(url)
    ids: list[str] = []
    try:
        with db.transaction() as s:
            s.add(Product(id="prod_bench", name="Bench", position=1, seq=1, entitlements=[]))
            s.flush()
            s.add(
                Price(
                    id="price_bench",
                    product_id="prod_bench",
                    currency="usd",
                    unit_amount=2900,
                    type="recurring",
                    interval="month",
                    interval_count=1,
                    lookup_key="bench-pro",
                    position=1,
                    seq=1,
                    entitlements=[
                        {"feature": "pro", "value": ""},
                        {"feature": "calls", "value": "", "metric": "calls", "limit": "1000000"},
                    ],
                )
            )
            s.add(
                BillableMetric(
                    code="calls", name="calls", event_name="api.call", aggregation="count"
                )
            )
        for start in range(0, accounts, 200):
            with db.transaction() as s:
                rows = []
                for i in range(start, min(accounts, start + 200)):
                    account, _ = ensure_account(s, f"bench-ent-{i}")
                    ids.append(account.id)
                    sub_id = new_id("sub")
                    s.add(
                        Subscription(
                            id=sub_id,
                            billing_account_id=account.id,
                            stripe_subscription_id=f"sub_bench_{i}",
                            price_id="price_bench",
                            state="active",
                            quantity=1,
                            current_period_start=now - dt.timedelta(days=3),
                            current_period_end=now + dt.timedelta(days=27),
                        )
                    )
                    s.flush()
                    # Holdings are read from the subscription's recorded items.
                    s.add(
                        SubscriptionItem(
                            subscription_id=sub_id,
                            position=0,
                            price_id="price_bench",
                            lookup_key="bench-pro",
                            quantity=1,
                        )
                    )
                    rows += [
                        {
                            "unique_id": f"bench-{i}-{j}",
                            "billing_account_id": account.id,
                            "event_name": "api.call",
                            "occurred_at": now - dt.timedelta(minutes=j + 1),
                            "properties": {},
                            "received_at": now,
                        }
                        for j in range(events)
                    ]
                if rows:
                    s.execute(insert(UsageEvent), rows)
    finally:
        db.dispose()
    return ids


# -- report ---------------------------------------------------------------------------------


def format_table(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = [
        f"tollbooth entitlements bench {doc['timestamp']}: {doc['machine']['cpu_count']} CPUs, "
        f"PostgreSQL {doc['machine']['postgresql_server']}; {s['concurrency']} in flight from "
        f"{s['load_processes']} load processes, {s['duration_sec']} s per figure",
        "",
        f"  {'figure':<44} {'calls/s':>9} {'x no-op':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}",
    ]
    for f in doc["figures"].values():
        x = "-" if f["ratio_to_baseline"] is None else f"{f['ratio_to_baseline']:.2f}"
        lines.append(
            f"  {f['label']:<44} {f['calls_per_s']:>9.1f} {x:>8} "
            f"{f['p50_ms'] or 0:>7.2f} {f['p99_ms'] or 0:>7.2f} {f['errors']:>6}"
        )
    lines += ["", f"target (>= {TARGET_RATIO}x no-op, p99 < {TARGET_P99_MS} ms):"]
    lines += [f"  {k}: {v}" for k, v in doc["targets"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.entitlements", description=__doc__)
    parser.add_argument("--duration", type=float, default=DURATION, help="seconds per figure")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="calls in flight")
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--events", type=int, default=EVENTS, help="usage events per account")
    parser.add_argument("--cache-ms", type=int, default=1000, help="the cached figure's cache")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--only",
        choices=["boolean", "metered", "metered_cached"],
        action="append",
        help="measure only these figures (repeatable; the baseline is always measured)",
    )
    args = parser.parse_args(argv)
    admin_url = (
        os.environ.get("BILLING_BENCH_POSTGRES_URL", "").strip()
        or os.environ.get("BILLING_TEST_POSTGRES_URL", "").strip()
    )
    if not admin_url:
        print("bench.entitlements: set BILLING_BENCH_POSTGRES_URL (PostgreSQL)", file=sys.stderr)
        return 2

    from sqlalchemy import create_engine, text

    from bench.credits import LOAD_PROCS
    from tests.devstack import throwaway_postgres
    from tollbooth.db.migrate import upgrade

    figures: dict[str, dict[str, Any]] = {}
    with throwaway_postgres(admin_url, "tollbooth_bench_entitle") as url:
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
        print(f"bench.entitlements: seeding {args.accounts} accounts ...", flush=True)
        accounts = seed(url, args.accounts, args.events)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        engine.dispose()
        metered = {"feature": "calls", "used": str(args.events)}
        plan: list[tuple[str, str, Any, dict[str, Any], dict[str, str]]] = [
            ("baseline", "no-op: Health/Check", health_load, {}, {}),
            ("check_boolean", "CheckEntitlement, boolean", check_load, {"feature": "pro"}, {}),
            (
                "check_metered",
                f"CheckEntitlement, metered ({args.events} events)",
                check_load,
                metered,
                {},
            ),
            (
                "check_metered_cached",
                f"CheckEntitlement, metered, cache {args.cache_ms} ms, 32 hot",
                check_load,
                {**metered, "hot": 32},
                {"BILLING_ENTITLEMENT_CACHE_MS": str(args.cache_ms)},
            ),
        ]
        if args.only:
            wanted = {"baseline", *(f"check_{name}" for name in args.only)}
            plan = [step for step in plan if step[0] in wanted]
        for key, label, target, extra, env in plan:
            with server(url, **env) as ports:
                print(f"bench.entitlements: {label} ...", flush=True)
                hot = int(extra.get("hot", 0)) or len(accounts)
                base = {"ports": ports, "accounts": accounts[:hot], "used": "", **extra}
                if key != "baseline":
                    warm(ports[0], accounts[:hot], extra["feature"])
                got = measure(target, base, args.concurrency, args.duration)
                got["label"] = label
                got["ratio_to_baseline"] = (
                    None
                    if key == "baseline"
                    else ratio(got["calls_per_s"], figures["baseline"]["calls_per_s"])
                )
                figures[key] = got

    def meets(key: str) -> str:
        f = figures.get(key)
        if f is None:
            return "not measured"
        ok = (
            (f["ratio_to_baseline"] or 0) >= TARGET_RATIO
            and (f["p99_ms"] or 1e9) < TARGET_P99_MS
            and not f["errors"]
        )
        return "met" if ok else "NOT met"

    doc = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgresql_server": version,
        },
        "settings": {
            "concurrency": args.concurrency,
            "load_processes": LOAD_PROCS,
            "duration_sec": args.duration,
            "accounts": args.accounts,
            "events_per_account": args.events,
            "server": "one `tollbooth serve-grpc` process per figure; direct gRPC, service key",
            "cache_ms": args.cache_ms,
        },
        "figures": figures,
        "targets": {
            "boolean": meets("check_boolean"),
            "metered": meets("check_metered"),
            "metered_cached": meets("check_metered_cached"),
        },
    }
    print()
    print(format_table(doc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
