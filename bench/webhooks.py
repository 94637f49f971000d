"""Webhook finalisation throughput on PostgreSQL: `python -m bench.webhooks`.

The events are real: the Stripe sandbox (its own process, deliveries off) records what
`--accounts` customers do through the billing server (a checkout of a price with credit grants,
paid with the sandbox's test helper, then one renewal by its clock), a realistic mix of
Stripe's event types (checkout, subscriptions, invoices, payment intents, charges, customers;
most of them unhandled, as in a real Stripe account). Load-generator processes, separate from
the server, then hand every event, signed, to `WebhookService.RecordStripeEvent` over gRPC,
`--concurrency` calls in flight, each event once:

- baseline, "inbox only": the same events under another type and id (no handler runs), so
  each is verified, parsed, inserted and marked processed: the inbox's own cost;
- "applied": the events as they are: the handlers run in the same transaction (subscriptions
  re-read from the sandbox under a row lock, fulfilment, renewal grants, the outbox).

Both are measured in this run, against one `serve-grpc` process on a throw-away PostgreSQL
database; the figure is applied events/s and its ratio to the inbox-only rate.
Needs BILLING_BENCH_POSTGRES_URL (or BILLING_TEST_POSTGRES_URL). Writes
bench/results-webhooks.json.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results-webhooks.json"
SERVICE_KEY = "bench-service-key"
SECRET = "whsec_bench_webhooks_only"
ACCOUNTS = 60
CONCURRENCY = 16
LOAD_PROCS = 4
HANDLED = (
    "checkout.session.completed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
)


def _env(url: str, grpc_port: int, sandbox_port: int, data: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BILLING_DATABASE_URL": url,
        "BILLING_GRPC_HOST": "127.0.0.1",
        "BILLING_GRPC_PORT": str(grpc_port),
        "BILLING_SERVICE_KEYS": SERVICE_KEY,
        "BILLING_JWT_KEYS": "bench:bench-signing-key-0123456789abcdef0123",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "BILLING_GRPC_WORKERS": "32",
        "BILLING_METRICS_PORT": "0",  # several servers at once: no shared metrics port
        "BILLING_LOG_LEVEL": "WARNING",
        "BILLING_SANDBOX_PORT": str(sandbox_port),
        "BILLING_SANDBOX_DB": str(data / "sandbox.db"),
        "BILLING_SANDBOX_WEBHOOK_URL": "",
        "BILLING_DATA_DIR": str(data),
        "BILLING_REDIRECT_ORIGINS": "https://app.example",
    }


# -- load generator (its own process) --------------------------------------------------------


def sender(args: dict[str, Any], out: Any) -> None:
    """Send this process's share of the events, `threads` at a time, each once."""
    import grpc

    from billing.v1 import webhook_pb2, webhook_pb2_grpc
    from tollbooth.webhooks.signature import header

    bodies: list[bytes] = args["bodies"]
    md = (("x-api-key", SERVICE_KEY),)
    lock = threading.Lock()
    cursor = [0]
    latencies: list[float] = []
    errors: list[str] = []
    while time.time() < args["start_at"]:
        time.sleep(0.001)
    began = time.perf_counter()

    def worker() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{args['port']}") as channel:
            stub = webhook_pb2_grpc.WebhookServiceStub(channel)
            while True:
                with lock:
                    i = cursor[0]
                    cursor[0] += 1
                if i >= len(bodies):
                    return
                body = bodies[i]
                t0 = time.perf_counter()
                try:
                    stub.RecordStripeEvent(
                        webhook_pb2.RecordStripeEventRequest(
                            payload=body, stripe_signature=header(body, SECRET)
                        ),
                        metadata=md,
                        timeout=60,
                    )
                except grpc.RpcError as exc:
                    with lock:
                        errors.append(f"{exc.code()}: {exc.details()}"[:200])
                    continue
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=worker) for _ in range(args["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, errors, time.perf_counter() - began))


def measure(port: int, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = min(LOAD_PROCS, concurrency)
    per = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    shares = [bodies[i::procs] for i in range(procs)]  # creation order kept within a share
    start_at = time.time() + 4.0
    workers = [
        ctx.Process(
            target=sender,
            args=(
                {"port": port, "bodies": shares[i], "threads": n, "start_at": start_at},
                out,
            ),
        )
        for i, n in enumerate(per)
    ]
    for w in workers:
        w.start()
    latencies: list[float] = []
    errors: list[str] = []
    elapsed = 0.0
    for _ in workers:
        lat, errs, took = out.get(timeout=1800)
        latencies += lat
        errors += errs
        elapsed = max(elapsed, took)
    for w in workers:
        w.join(timeout=30)
    latencies.sort()

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * (len(latencies) - 1)))], 2)

    return {
        "events": len(bodies),
        "ok": len(latencies),
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(latencies) / elapsed, 1) if elapsed else None,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


# -- set-up (not measured) --------------------------------------------------------------------


@contextmanager
def processes(url: str, data: Path) -> Iterator[tuple[int, int]]:
    import grpc
    import httpx

    from tests.devstack import free_port

    grpc_port, sandbox_port = free_port(), free_port()
    env = _env(url, grpc_port, sandbox_port, data)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tollbooth.sandbox"], env=env, stdout=subprocess.DEVNULL
        ),
        subprocess.Popen(
            [sys.executable, "-m", "tollbooth.cli", "serve-grpc"],
            env=env,
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            grpc.channel_ready_future(ch).result(timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{sandbox_port}/sandbox/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.1)
        yield grpc_port, sandbox_port
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def make_events(grpc_port: int, sandbox_port: int, accounts: int) -> list[dict[str, Any]]:
    """Customers buy through the billing server and pay in the sandbox; one renewal follows."""
    import grpc
    import stripe

    from billing.v1 import (
        catalog_pb2,
        catalog_pb2_grpc,
        checkout_pb2,
        checkout_pb2_grpc,
        token_pb2,
        token_pb2_grpc,
    )

    md = (("x-api-key", SERVICE_KEY),)
    client = stripe.StripeClient(
        "sk_test_bench", base_addresses={"api": f"http://127.0.0.1:{sandbox_port}"}
    )
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        catalog = catalog_pb2_grpc.CatalogServiceStub(ch)
        tokens = token_pb2_grpc.TokenServiceStub(ch)
        checkout = checkout_pb2_grpc.CheckoutServiceStub(ch)
        product = catalog.CreateProduct(
            catalog_pb2.CreateProductRequest(
                product=catalog_pb2.Product(name="Pro"), request_id="bench-product"
            ),
            metadata=md,
        )
        catalog.CreatePrice(
            catalog_pb2.CreatePriceRequest(
                price=catalog_pb2.Price(
                    product_id=product.product_id,
                    currency="usd",
                    unit_amount=2900,
                    type=catalog_pb2.PRICE_TYPE_RECURRING,
                    recurring=catalog_pb2.Recurring(interval=catalog_pb2.RECURRING_INTERVAL_MONTH),
                    lookup_key="pro",
                    subscription_group="plan",
                    credit_grants=[
                        catalog_pb2.CreditGrantSpec(
                            credit_type="api_calls",
                            amount="1000",
                            on_purchase=True,
                            on_renewal=True,
                        )
                    ],
                ),
                request_id="bench-price",
            ),
            metadata=md,
        )
        for i in range(accounts):
            token = tokens.IssueToken(
                token_pb2.IssueTokenRequest(
                    principal_id=f"bench-{i}", scopes=["checkout"], email=f"b{i}@example.com"
                ),
                metadata=md,
            ).access_token
            answer = checkout.CreateCheckoutSession(
                checkout_pb2.CreateCheckoutSessionRequest(
                    items=[checkout_pb2.CheckoutItem(lookup_key="pro")],
                    success_url="https://app.example/ok",
                ),
                metadata=(("authorization", f"Bearer {token}"),),
            )
            client.raw_request(
                "post",
                f"/v1/test_helpers/checkout/sessions/{answer.session.stripe_checkout_session_id}"
                "/complete",
            )
    clock = client.v1.test_helpers.test_clocks.retrieve("clock_default")
    client.v1.test_helpers.test_clocks.advance(
        "clock_default", params={"frozen_time": clock.frozen_time + 31 * 86400}
    )
    events: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if after:
            params["starting_after"] = after
        page = json.loads(client.raw_request("get", "/v1/events", **params).body)
        events.extend(page["data"])
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    events.reverse()  # oldest first, as Stripe sends them (give or take)
    return events


def inbox_only(events: list[dict[str, Any]]) -> list[bytes]:
    """The same bodies under an unhandled type and a new id: the inbox's own work only."""
    return [
        json.dumps({**e, "id": e["id"] + "_inbox", "type": "bench.inbox_only"}).encode()
        for e in events
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    admin_url = (
        os.environ.get("BILLING_BENCH_POSTGRES_URL", "").strip()
        or os.environ.get("BILLING_TEST_POSTGRES_URL", "").strip()
    )
    if not admin_url:
        print(
            "bench.webhooks: set BILLING_BENCH_POSTGRES_URL (a PostgreSQL server)", file=sys.stderr
        )
        return 2

    from sqlalchemy import create_engine, func, select, text

    from tests.devstack import throwaway_postgres
    from tollbooth.db.migrate import upgrade
    from tollbooth.db.models import BillingEffect, CreditGrant, StripeEvent

    with (
        throwaway_postgres(admin_url, "tollbooth_bench_webhooks") as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
        with processes(url, Path(tmp)) as (grpc_port, sandbox_port):
            print(f"bench.webhooks: {args.accounts} customers buy and renew ...", flush=True)
            events = make_events(grpc_port, sandbox_port, args.accounts)
            mix = collections.Counter(e["type"] for e in events)
            handled = sum(n for t, n in mix.items() if t in HANDLED)
            print(
                f"bench.webhooks: {len(events)} events, {handled} of a handled type; "
                "inbox only ...",
                flush=True,
            )
            baseline = measure(grpc_port, inbox_only(events), args.concurrency)
            print("bench.webhooks: applied ...", flush=True)
            applied = measure(grpc_port, [json.dumps(e).encode() for e in events], args.concurrency)
        with engine.connect() as conn:
            processed = conn.scalar(
                select(func.count())
                .select_from(StripeEvent)
                .where(StripeEvent.processed_at.is_not(None))
            )
            grants = conn.scalar(select(func.count()).select_from(CreditGrant))
            guards = conn.scalar(select(func.count()).select_from(BillingEffect))
        engine.dispose()
    ratio = (
        round(applied["events_per_s"] / baseline["events_per_s"], 3)
        if applied["events_per_s"] and baseline["events_per_s"]
        else None
    )
    doc = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "postgresql_server": version,
        },
        "settings": {
            "accounts": args.accounts,
            "concurrency": args.concurrency,
            "load_processes": LOAD_PROCS,
            "server": "one serve-grpc process; the sandbox in its own process",
        },
        "mix": dict(mix.most_common()),
        "figures": {
            "inbox_only": {"label": "inbox only (no handler runs)", **baseline},
            "applied": {"label": "applied (handlers in the same transaction)", **applied},
        },
        "applied_over_inbox_only": ratio,
        "check": {
            "events_processed": processed,
            "credit_grants": grants,
            "expected_grants": 2 * args.accounts,
            "effect_guards": guards,
        },
    }
    print()
    print(
        f"tollbooth webhooks bench {doc['timestamp']}: {os.cpu_count()} CPUs, PostgreSQL "
        f"{version}; {args.concurrency} in flight from {LOAD_PROCS} load processes"
    )
    print(
        f"  mix: {len(events)} events ({handled} handled): "
        + ", ".join(f"{t} {n}" for t, n in mix.most_common(8))
    )
    for f in doc["figures"].values():
        print(
            f"  {f['label']:<44} {f['events_per_s']:>8} events/s  p50 {f['p50_ms']} ms  "
            f"p99 {f['p99_ms']} ms  errors {f['errors']}"
        )
    print(f"  applied / inbox only = {ratio}")
    print(f"  check: {doc['check']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    bad = applied["errors"] or baseline["errors"] or grants != 2 * args.accounts
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
