"""CPU per hot read (ListPrices, ListProducts, GetBillingStatus with a bearer token), for paired
before/after runs on a shared machine, as `bench.cpu_per_check` does for CheckEntitlement.

`python -m bench.cpu_per_read --call list_prices`: a throw-away database, one `serve-grpc`
process, bench.core's fixture (a known principal with a bearer token, a product with 10
prices); every call once (warm: the catalog snapshot loaded, the account resolved and its
holdings kept), then `--calls` calls from `--threads` threads over gRPC; reports the CPU seconds
the server process spent per call (Linux /proc). `--call health` is the gRPC no-op's baseline.
`--profile FILE` also records the server with `py-spy record -f raw` during the load.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cpu_per_check import bench_admin_url, cpu_seconds, server_pid

CALLS = ("health", "list_prices", "list_products", "billing_status")


def _caller(channel: Any, call: str, fixture: dict[str, str]) -> Callable[[], object]:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from billing.v1 import catalog_pb2, catalog_pb2_grpc, checkout_pb2, checkout_pb2_grpc

    bearer = (("authorization", f"Bearer {fixture['bearer']}"),)
    if call == "health":
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()
        return lambda: health.Check(check, timeout=30)
    if call == "billing_status":
        checkout = checkout_pb2_grpc.CheckoutServiceStub(channel)
        status = checkout_pb2.GetBillingStatusRequest()
        return lambda: checkout.GetBillingStatus(status, metadata=bearer, timeout=30)
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
    if call == "list_products":
        products = catalog_pb2.ListProductsRequest()
        return lambda: catalog.ListProducts(products, metadata=bearer, timeout=30)
    prices = catalog_pb2.ListPricesRequest(product_id=fixture["product_id"])
    return lambda: catalog.ListPrices(prices, metadata=bearer, timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_per_read", description=__doc__)
    parser.add_argument("--call", choices=CALLS, default="list_prices")
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--profile", default="", help="py-spy raw output file (optional)")
    parser.add_argument(
        "--gil", action="store_true", help="profile only the thread holding the GIL (py-spy --gil)"
    )
    args = parser.parse_args(argv)
    admin_url = bench_admin_url()
    if not admin_url:
        return 2
    import grpc

    from bench.core import prepare
    from bench.entitlements import server
    from tests.devstack import throwaway_postgres
    from tollbooth.db.migrate import upgrade

    with throwaway_postgres(admin_url, "tollbooth_bench_read") as url:
        upgrade(url)
        # As bench.core: the per-account ceiling (1200/minute) is not what is measured.
        limits = {"BILLING_RATE_LIMIT_ACCOUNT": "100000000/minute"}
        limits["BILLING_RATE_LIMIT_KEY"] = limits["BILLING_RATE_LIMIT_ACCOUNT"]
        with server(url, **limits) as ports:
            fixture = prepare(ports[0])
            target = f"127.0.0.1:{ports[0]}"
            with grpc.insecure_channel(target) as channel:
                _caller(channel, args.call, fixture)()  # warm
            srv = server_pid()
            per = args.calls // args.threads
            errors = [0]

            def load() -> None:
                with grpc.insecure_channel(
                    target, options=[("grpc.use_local_subchannel_pool", 1)]
                ) as channel:
                    call = _caller(channel, args.call, fixture)
                    for _ in range(per):
                        try:
                            call()
                        except grpc.RpcError:
                            errors[0] += 1

            spy = _profile(srv, args.profile, args.gil) if args.profile else None
            s0, w0 = cpu_seconds(srv), time.monotonic()
            threads = [threading.Thread(target=load) for _ in range(args.threads)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            s1, w1 = cpu_seconds(srv), time.monotonic()
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
                spy.wait(timeout=30)
    n = per * args.threads
    print(
        f"call={args.call} calls={n} errors={errors[0]} wall={w1 - w0:.1f}s "
        f"server_cpu_ms_per_call={1000 * (s1 - s0) / n:.3f}"
    )
    return 0


def _profile(pid: int, out: str, gil: bool) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [exe, "record", "-p", str(pid), "-f", "raw", "-o", out, "-r", "200", "--nonblocking"]
    return subprocess.Popen(
        command + (["--gil"] if gil else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    raise SystemExit(main())
