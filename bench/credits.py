"""Credit debits against PostgreSQL's own durable commit rate: `python -m bench.credits`.

Figures (each with `--concurrency` calls in flight, default 32, from load-generator
processes separate from the servers):

- raw PostgreSQL: one durable single-row UPDATE ... COMMIT per transaction, across 1,000 rows
  and on one hot row: the ceiling a debit (which must commit at least one row) can approach;
- DebitCredits over gRPC across 1,000 accounts and on one hot account, with one server
  process and with two (replicas against the same database, clients alternating between them),
  each given as a ratio to the raw figure of the same shape measured in this run.

Needs a PostgreSQL server: BILLING_BENCH_POSTGRES_URL (or BILLING_TEST_POSTGRES_URL); a
throw-away database is created and dropped. Writes bench/results-credits.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results-credits.json"
SERVICE_KEY = "bench-service-key"
ACCOUNTS = 1000
CONCURRENCY = 32
LOAD_PROCS = 4
# Longest wait for every load thread to be connected before the clock starts.
READY_TIMEOUT_SEC = 180.0
DURATION = 5.0
STARTING_BALANCE = "1000000000"
# --rpc: the RPC's name and the figures' key prefix.
RPCS = {
    "debit": ("DebitCredits", "debits"),
    "grant": ("GrantCredits", "grants"),
    "reserve": ("Reserve+Commit", "reserves"),
}


def server_env(url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "BILLING_DATABASE_URL": url,
        "BILLING_GRPC_HOST": "127.0.0.1",
        "BILLING_GRPC_PORT": str(port),
        "BILLING_SERVICE_KEYS": SERVICE_KEY,
        "BILLING_JWT_KEYS": "bench:bench-signing-key-0123456789abcdef0123",
        "STRIPE_WEBHOOK_SECRET": "whsec_bench_only",
        "BILLING_GRPC_WORKERS": "32",
        "BILLING_METRICS_PORT": "0",  # several servers at once: no shared metrics port
        "BILLING_LOG_LEVEL": "WARNING",
    }


# -- load generators (run in their own processes) ------------------------------------------


class Gate:
    """The start of a measurement, shared by the load processes: each thread says it is ready
    (connected, or failed to) and waits; the parent opens the gate once every thread is ready,
    so a slow start on a loaded machine delays the clock instead of eating into the figure."""

    def __init__(self, ctx: Any, duration: float) -> None:
        self.ready = ctx.Semaphore(0)
        self.go = ctx.Event()
        self.start = ctx.Value("d", 0.0)
        self.duration = duration

    def arrive(self) -> tuple[float, float]:
        """Say this thread is ready, wait for the gate; (start, stop) wall-clock instants."""
        self.ready.release()
        self.go.wait()
        start = float(self.start.value)
        return start, start + self.duration

    def open(self, threads: int) -> None:
        """Wait (bounded) for `threads` arrivals, then start the clock for everyone."""
        deadline = time.monotonic() + READY_TIMEOUT_SEC
        for _ in range(threads):
            if not self.ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break
        self.start.value = time.time() + 0.2
        self.go.set()


def _run_threads(
    threads: int,
    make_call: Callable[[int], Callable[[int], object]],
    gate: Gate,
) -> tuple[list[float], int, str | None]:
    latencies: list[float] = []
    errors = [0]
    first: list[str | None] = [None]
    lock = threading.Lock()

    def worker(t: int) -> None:
        mine: list[float] = []
        errs = 0
        try:
            call = make_call(t)
            call(-1)  # untimed: connection set-up
        except Exception as exc:  # counted, never a silent thread death (a figure of 0 calls)
            with lock:
                errors[0] += 1
                first[0] = first[0] or f"set-up: {type(exc).__name__}: {exc}"[:300]
            gate.arrive()
            return
        i = 0
        start_at, stop_at = gate.arrive()
        while time.time() < start_at:
            time.sleep(0.001)
        while True:
            began = time.perf_counter()
            if time.time() >= stop_at:
                break
            try:
                call(i)
            except Exception as exc:
                errs += 1
                with lock:
                    first[0] = first[0] or f"{type(exc).__name__}: {exc}"[:300]
            else:
                mine.append((time.perf_counter() - began) * 1000)
            i += 1
        with lock:
            latencies.extend(mine)
            errors[0] += errs

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return latencies, errors[0], first[0]


def grpc_load(args: dict[str, Any], out: Any) -> None:
    """Calls from `threads` client threads, each with its own channel: `rpc` is "debit"
    (DebitCredits of 1), "grant" (GrantCredits of 1) or "reserve" (ReserveCredits of 2 then
    CommitReservation of 1 of it: one timed call is the pair)."""
    import grpc

    from billing.v1 import credit_pb2, credit_pb2_grpc

    md = (("x-api-key", SERVICE_KEY),)
    accounts: list[str] = args["accounts"]
    ports: list[int] = args["ports"]
    rng = random.Random(args["seed"])

    def make_call(t: int) -> Callable[[int], object]:
        index = args["proc"] * args["threads"] + t
        channel = grpc.insecure_channel(f"127.0.0.1:{ports[index % len(ports)]}")
        stub = credit_pb2_grpc.CreditServiceStub(channel)
        offset = rng.randrange(len(accounts))

        def call(i: int) -> object:
            return stub.DebitCredits(
                credit_pb2.DebitCreditsRequest(
                    account=accounts[(offset + i) % len(accounts)],
                    credit_type="units",
                    amount="1",
                    request_id=uuid.uuid4().hex,
                ),
                metadata=md,
                timeout=30,
            )

        def grant(i: int) -> object:
            return stub.GrantCredits(
                credit_pb2.GrantCreditsRequest(
                    account=accounts[(offset + i) % len(accounts)],
                    credit_type="units",
                    amount="1",
                    request_id=uuid.uuid4().hex,
                ),
                metadata=md,
                timeout=30,
            )

        def reserve_commit(i: int) -> object:
            account = accounts[(offset + i) % len(accounts)]
            held = stub.ReserveCredits(
                credit_pb2.ReserveCreditsRequest(
                    account=account, credit_type="units", amount="2", request_id=uuid.uuid4().hex
                ),
                metadata=md,
                timeout=30,
            )
            return stub.CommitReservation(
                credit_pb2.CommitReservationRequest(
                    account=account,
                    reservation_id=held.reservation_id,
                    amount="1",
                    request_id=uuid.uuid4().hex,
                ),
                metadata=md,
                timeout=30,
            )

        return {"debit": call, "grant": grant, "reserve": reserve_commit}[args["rpc"]]

    out.put(_run_threads(args["threads"], make_call, args["gate"]))


def raw_load(args: dict[str, Any], out: Any) -> None:
    """One durable single-row UPDATE and COMMIT per transaction, one connection per thread."""
    import psycopg

    rows: int = args["rows"]
    rng = random.Random(args["seed"])

    def make_call(t: int) -> Callable[[int], object]:
        conn = psycopg.connect(args["dsn"])
        offset = rng.randrange(rows)

        def call(i: int) -> object:
            with conn.transaction():
                conn.execute(
                    "UPDATE bench_raw SET balance = balance - 1 WHERE id = %s",
                    ((offset + i) % rows,),
                )
            return None

        return call

    out.put(_run_threads(args["threads"], make_call, args["gate"]))


def measure(
    target: Callable[[dict[str, Any], Any], None],
    base: dict[str, Any],
    concurrency: int,
    duration: float,
) -> dict[str, Any]:
    """Run `target` in LOAD_PROCS processes sharing `concurrency` threads; combine the results."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = min(LOAD_PROCS, concurrency)
    per = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    # The clock starts once every thread has connected (spawned interpreters import grpc and
    # the stubs: a fixed lead of 4, then 8 s was sometimes too short on a loaded machine and
    # left a figure empty).
    gate = Gate(ctx, duration)
    workers = [
        ctx.Process(
            target=target,
            args=(
                {
                    **base,
                    "proc": i,
                    "threads": n,
                    "seed": i,
                    "gate": gate,
                },
                out,
            ),
        )
        for i, n in enumerate(per)
    ]
    for w in workers:
        w.start()
    gate.open(sum(per))
    latencies: list[float] = []
    errors = 0
    first = None
    for _ in workers:
        lat, err, f = out.get(timeout=duration + 120)
        latencies += lat
        errors += err
        first = first or f
    for w in workers:
        w.join(timeout=30)
    latencies.sort()

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * (len(latencies) - 1)))], 2)

    return {
        "calls": len(latencies),
        "calls_per_s": round(len(latencies) / duration, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
        "first_error": first,
    }


# -- set-up ---------------------------------------------------------------------------------


def seed_accounts(url: str, n: int) -> list[str]:
    """n accounts with a large units balance each (set up in-process, not measured)."""
    from tollbooth.accounts.service import ensure_account
    from tollbooth.auth.caller import SERVICE
    from tollbooth.credit import grants
    from tollbooth.db import Database
    from tollbooth.db.types import utcnow

    db = Database(url)
    ids = []
    try:
        for start in range(0, n, 200):
            with db.transaction() as s:
                for i in range(start, min(n, start + 200)):
                    account, _ = ensure_account(s, f"bench-{i}")
                    grants.grant(
                        s,
                        SERVICE,
                        account.id,
                        credit_type="units",
                        amount=STARTING_BALANCE,
                        reason="bench",
                        priority=0,
                        expire_at=None,
                        request_id="",
                        metadata={},
                        clock=utcnow,
                    )
                    ids.append(account.id)
    finally:
        db.dispose()
    return ids


def seed_raw(url: str, rows: int) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE bench_raw (id integer PRIMARY KEY, balance numeric(38, 18))")
        )
        conn.execute(
            text("INSERT INTO bench_raw SELECT g, :b FROM generate_series(0, :n - 1) g"),
            {"b": int(STARTING_BALANCE), "n": rows},
        )
    engine.dispose()


@contextmanager
def servers(url: str, count: int) -> Iterator[list[int]]:
    import grpc

    from tests.devstack import free_port

    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tollbooth.cli", "serve-grpc"],
                    env=server_env(url, port),
                    stdout=subprocess.DEVNULL,
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


# -- report ---------------------------------------------------------------------------------


def ratio(value: float | None, base: float | None) -> float | None:
    return None if not value or not base else round(value / base, 3)


def format_table(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = [
        f"tollbooth credits bench {doc['timestamp']}: {doc['machine']['cpu_count']} CPUs, "
        f"PostgreSQL {doc['machine']['postgresql_server']}; {s['concurrency']} in flight from "
        f"{s['load_processes']} load processes, {s['duration_sec']} s per figure",
        "note: x raw = debits/s over PostgreSQL's durable single-row commits/s of the same shape, "
        "same run, same concurrency; compare ratios, not absolutes",
        "",
        f"  {'figure':<44} {'calls/s':>9} {'x raw':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}",
    ]
    for f in doc["figures"].values():

        def num(v: float | None, w: int, d: int) -> str:
            return "-".rjust(w) if v is None else f"{v:{w}.{d}f}"

        lines.append(
            f"  {f['label']:<44} {num(f['calls_per_s'], 9, 1)} {num(f['ratio_to_raw'], 7, 2)} "
            f"{num(f['p50_ms'], 7, 1)} {num(f['p99_ms'], 7, 1)} {f['errors']:>6}"
        )
    for key, f in doc["figures"].items():
        if f["first_error"]:
            lines.append(f"{key}: first error: {f['first_error']}")
    t = doc["targets"]
    lines += [
        "",
        f"target: across accounts >= 0.5 x raw and p99 < 25 ms -> one replica "
        f"{t['one_replica']}, two replicas {t['two_replicas']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.credits", description=__doc__)
    parser.add_argument("--duration", type=float, default=DURATION, help="seconds per figure")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="calls in flight")
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--rpc",
        choices=sorted(RPCS),
        default="debit",
        help="what a call is: DebitCredits (the default), GrantCredits, or ReserveCredits then "
        "CommitReservation (one timed call is the pair)",
    )
    parser.add_argument(
        "--replicas", default="1,2", help="server processes of each figure, comma-separated"
    )
    args = parser.parse_args(argv)
    admin_url = (
        os.environ.get("BILLING_BENCH_POSTGRES_URL", "").strip()
        or os.environ.get("BILLING_TEST_POSTGRES_URL", "").strip()
    )
    if not admin_url:
        print(
            "bench.credits: set BILLING_BENCH_POSTGRES_URL (a PostgreSQL server)", file=sys.stderr
        )
        return 2

    from sqlalchemy import create_engine, text

    from tests.devstack import throwaway_postgres
    from tollbooth.db.migrate import upgrade

    figures: dict[str, dict[str, Any]] = {}
    with throwaway_postgres(admin_url, "tollbooth_bench_credits") as url:
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
            sync = str(conn.execute(text("SHOW synchronous_commit")).scalar())
            fsync = str(conn.execute(text("SHOW fsync")).scalar())
        engine.dispose()
        print(f"bench.credits: seeding {args.accounts} accounts ...", flush=True)
        accounts = seed_accounts(url, args.accounts)
        seed_raw(url, args.accounts)
        dsn = url.replace("postgresql+psycopg://", "postgresql://")

        def run(key: str, label: str, target, base, raw_key: str | None = None) -> None:  # type: ignore[no-untyped-def]
            print(f"bench.credits: {label} ...", flush=True)
            got = measure(target, base, args.concurrency, args.duration)
            got["label"] = label
            got["ratio_to_raw"] = (
                ratio(got["calls_per_s"], figures[raw_key]["calls_per_s"]) if raw_key else None
            )
            figures[key] = got

        run(
            "raw_across",
            f"raw PG commit, {args.accounts} rows",
            raw_load,
            {"dsn": dsn, "rows": args.accounts},
        )
        run("raw_hot", "raw PG commit, one hot row", raw_load, {"dsn": dsn, "rows": 1})
        name, figure = RPCS[args.rpc]
        for replicas in [int(n) for n in args.replicas.split(",")]:
            with servers(url, replicas) as ports:
                tag = f"{replicas} replica{'s' if replicas > 1 else ''}"
                run(
                    f"{figure}_across_{replicas}",
                    f"{name}, {args.accounts} accounts, {tag}",
                    grpc_load,
                    {"ports": ports, "accounts": accounts, "rpc": args.rpc},
                    "raw_across",
                )
                run(
                    f"{figure}_hot_{replicas}",
                    f"{name}, one hot account, {tag}",
                    grpc_load,
                    {"ports": ports, "accounts": accounts[:1], "rpc": args.rpc},
                    "raw_hot",
                )

    def meets(key: str) -> str:
        f = figures.get(key)
        if f is None:
            return "not measured"
        ok = (f["ratio_to_raw"] or 0) >= 0.5 and (f["p99_ms"] or 1e9) < 25 and not f["errors"]
        return "met" if ok else "NOT met"

    doc = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgresql_server": version,
            "postgresql_fsync": fsync,
            "postgresql_synchronous_commit": sync,
        },
        "settings": {
            "concurrency": args.concurrency,
            "load_processes": LOAD_PROCS,
            "duration_sec": args.duration,
            "accounts": args.accounts,
            "rpc": args.rpc,
            "debit": "DebitCredits of 1 unit, a new request_id per call, service key, direct gRPC "
            "to the replicas (clients alternate between them)",
            "raw": "UPDATE bench_raw SET balance = balance - 1 WHERE id = $1; COMMIT (one "
            "psycopg connection per in-flight call)",
        },
        "figures": figures,
        "targets": {
            "one_replica": meets(f"{figure}_across_1"),
            "two_replicas": meets(f"{figure}_across_2"),
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
