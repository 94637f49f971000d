"""CPU per call of a hot read, for paired before/after runs on a shared machine (throughput
figures there move with other load; CPU time per call much less).

`python -m bench.cpu_per_check --feature calls`: seeds a throw-away database (as
bench.entitlements), starts one `serve-grpc` process, checks every account once (warm), then
makes `--calls` checks from `--threads` threads and reports the CPU seconds the server process
and the database's backends spent per call (Linux /proc, PostgreSQL on this machine).
`--call get_balance` (service key, by account id; every account has a `units` balance row),
`--call issue_token` (a known principal) or `--call health` (the gRPC health check: the
server's no-op, the baseline of the others) measure those calls instead of CheckEntitlement.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def bench_admin_url() -> str:
    """Where the throw-away databases are made ("" when unset, and said on stderr)."""
    url = os.environ.get("BILLING_BENCH_POSTGRES_URL", "").strip()
    if not url:
        print("set BILLING_BENCH_POSTGRES_URL", file=sys.stderr)
    return url


def server_pid() -> int:
    """The one `serve-grpc` process this process started."""
    me = os.getpid()
    (pid,) = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit()
        and Path(f"/proc/{p}/stat").exists()
        and _ppid(int(p)) == me
        and b"serve-grpc" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    return pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_per_check", description=__doc__)
    parser.add_argument(
        "--call", default="check", choices=("check", "get_balance", "issue_token", "health")
    )
    parser.add_argument("--feature", default="calls", help="pro (boolean) or calls (metered)")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    admin_url = bench_admin_url()
    if not admin_url:
        return 2
    import grpc
    from sqlalchemy import create_engine, text

    from bench.credits import SERVICE_KEY
    from bench.entitlements import seed, server, warm
    from tests.devstack import throwaway_postgres
    from tollbooth.db.migrate import upgrade

    with throwaway_postgres(admin_url, "tollbooth_bench_cpu") as url:
        upgrade(url)
        accounts = seed(url, args.accounts, args.events)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(_BALANCES))
            conn.execute(text("ANALYZE"))
        dbname = url.rsplit("/", 1)[1]
        with server(url) as ports:
            if args.call == "check":
                warm(ports[0], accounts, args.feature)

            def backends() -> list[int]:
                with engine.connect() as conn:
                    return [
                        r[0]
                        for r in conn.execute(
                            text(
                                "SELECT pid FROM pg_stat_activity WHERE datname = :d"
                                " AND pid <> pg_backend_pid()"
                            ),
                            {"d": dbname},
                        )
                    ]

            srv = server_pid()
            md = (("x-api-key", SERVICE_KEY),)
            per = args.calls // args.threads
            errors = [0]

            def load(t: int) -> None:
                with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as ch:
                    one = _caller(ch, args.call, args.feature, md)
                    for i in range(per):
                        if not one(t * per + i, accounts):
                            errors[0] += 1

            if args.call != "check":  # every account read once before the clock starts
                with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as ch:
                    first = _caller(ch, args.call, args.feature, md)
                    if not all(first(i, accounts) for i in range(len(accounts))):
                        raise RuntimeError(f"warm-up: unexpected answer to {args.call}")

            def pg_cpu(pids: list[int]) -> dict[int, float]:
                return {p: cpu_seconds(p) for p in pids if Path(f"/proc/{p}").exists()}

            before = pg_cpu(backends())
            s0, w0 = cpu_seconds(srv), time.monotonic()
            threads = [threading.Thread(target=load, args=(t,)) for t in range(args.threads)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            s1, w1 = cpu_seconds(srv), time.monotonic()
            after = pg_cpu(backends())
            pg = sum(after.values()) - sum(v for p, v in before.items() if p in after)
        engine.dispose()
    n = per * args.threads
    print(
        f"call={args.call} feature={args.feature} calls={n} errors={errors[0]} wall={w1 - w0:.1f}s "
        f"server_cpu_ms_per_call={1000 * (s1 - s0) / n:.3f} "
        f"pg_cpu_ms_per_call={1000 * pg / n:.3f} (backends {len(before)} -> {len(after)})"
    )
    return 0


# A `units` balance row for every account (GetBalance reads one).
_BALANCES = (
    "INSERT INTO credit_balances (billing_account_id, credit_type, balance, reserved, seq,"
    " next_event_at, depleted, depletions, updated_at, overage)"
    " SELECT id, 'units', 100, 0, 0, NULL, false, 0, now(), 0 FROM billing_accounts"
)


def _caller(ch: Any, call: str, feature: str, md: Any) -> Callable[[int, list[str]], bool]:
    """One call of `call` on `ch` for the i-th account (round robin): whether it answered as
    expected."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from billing.v1 import (
        credit_pb2,
        credit_pb2_grpc,
        entitlement_pb2,
        entitlement_pb2_grpc,
        token_pb2,
        token_pb2_grpc,
    )

    if call == "check":
        check = entitlement_pb2_grpc.EntitlementServiceStub(ch).CheckEntitlement

        def one(i: int, accounts: list[str]) -> bool:
            request = entitlement_pb2.CheckEntitlementRequest(
                account=accounts[i % len(accounts)], feature=feature
            )
            return bool(check(request, metadata=md, timeout=30).allowed)

    elif call == "get_balance":
        get = credit_pb2_grpc.CreditServiceStub(ch).GetBalance

        def one(i: int, accounts: list[str]) -> bool:
            request = credit_pb2.GetBalanceRequest(
                account=accounts[i % len(accounts)], type="units"
            )
            return get(request, metadata=md, timeout=30).balance == "100"

    elif call == "issue_token":
        issue = token_pb2_grpc.TokenServiceStub(ch).IssueToken

        def one(i: int, accounts: list[str]) -> bool:
            n = i % len(accounts)  # bench.entitlements.seed's principals, in order
            request = token_pb2.IssueTokenRequest(principal_id=f"bench-ent-{n}")
            got = issue(request, metadata=md, timeout=30)
            return got.billing_account_id == accounts[n] and not got.account_created

    else:
        health = health_pb2_grpc.HealthStub(ch).Check

        def one(i: int, accounts: list[str]) -> bool:
            got = health(health_pb2.HealthCheckRequest(), timeout=30)
            return got.status == health_pb2.HealthCheckResponse.SERVING

    return one


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


if __name__ == "__main__":
    raise SystemExit(main())
