"""The billing gRPC server: the contract services it is given, health and reflection."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2

from tollbooth import errors
from tollbooth.config import REPO_ROOT
from tollbooth.deps import Deps
from tollbooth.rpc import edge, reflection, routing
from tollbooth.rpc.interceptors import (
    AuthInterceptor,
    Chain,
    ErrorInterceptor,
    LoggingInterceptor,
)
from tollbooth.rpc.ratelimit import AccountNames, RateLimiter, RateLimitInterceptor
from tollbooth.rpc.replays import Replays
from tollbooth.rpc.rules import load_requirements
from tollbooth.rpc.servicer import Servicer
from tollbooth.rpc.streams import StreamGuard

log = logging.getLogger("tollbooth.server")
# The cyclic collector's thresholds while serving (CPython's default is 700, 10, 10). Every call
# allocates hundreds of short-lived objects; at 700 the youngest generation is collected every
# few calls and the oldest, which holds the process's in-memory views, often enough to show in
# the tail. Measured with `bench.entitlements` (four alternated pairs, 32 in flight): p99 of a
# boolean CheckEntitlement 105-135 -> 35-55 ms, of a metered one 110-181 -> 79-95 ms.
GC_THRESHOLDS = (20_000, 50, 100)
# The contract with its comments (built by `make proto`), which reflection serves.
DESCRIPTOR_SET = REPO_ROOT / "gateway" / "billing.binpb"


def unbuilt_methods(servicers: Sequence[type[Servicer]]) -> list[str]:
    """Full names of the RPCs that answer UNIMPLEMENTED (the README lists them)."""
    return [
        f"{cls.service_descriptor.full_name}.{name}"
        for cls in servicers
        for name in cls.unbuilt_methods
    ]


class HealthServicer(health.HealthServicer):
    """grpcio's health service; a service it does not know is NOT_FOUND with the error shape
    every other refusal has (reason NOT_FOUND, the name), not a bare empty answer."""

    def Check(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        answer = super().Check(request, context)
        if context.code() == grpc.StatusCode.NOT_FOUND:
            raise errors.not_found("service", request.service)
        return answer


def build_server(
    deps: Deps, address: str, servicers: Sequence[Servicer | routing.EnvironmentRouter]
) -> tuple[grpc.Server, int, HealthServicer]:
    """A started-ready server of `servicers` bound to `address` (port 0 picks one). Returns
    the bound port. The servicers are built at assembly (`tollbooth.app`)."""
    settings = deps.settings
    authenticator = routing.authenticator(deps)  # every environment's keys and tokens
    limiter = RateLimiter.from_settings(settings, deps.db)
    databases = {name: d.db for name, d in deps.environments.items()}
    streams = StreamGuard(
        min(settings.grpc_max_streams, max(1, settings.grpc_workers - 4)),
        settings.grpc_max_streams_per_key,
        settings.grpc_stream_idle_sec,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_workers),
        # Outermost first; `Chain` runs them once per method (a unary method's wrapped
        # handler is kept), not once per call.
        interceptors=[
            Chain(
                [
                    LoggingInterceptor(),
                    ErrorInterceptor(settings.stripe_rpc_budget_sec),
                    AuthInterceptor(authenticator, load_requirements()),
                    streams,
                    RateLimitInterceptor(limiter, AccountNames(databases), Replays(databases)),
                ]
            )
        ],
        options=[
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            # Room for long REST paths Envoy forwards as metadata; the edge bounds the fields.
            ("grpc.max_metadata_size", 64 * 1024),
            # The processes `run` starts for a replica (it sets BILLING_GRPC_PROCESSES) share
            # its port, the kernel splitting connections between them; a server started on
            # its own (the variable unset) refuses a port already taken.
            ("grpc.so_reuseport", 1 if settings.grpc_processes > 1 else 0),
        ],
    )
    names = []
    for servicer in servicers:
        service = servicer.service_descriptor
        edge.register(server, service, servicer)
        names.append(service.full_name)
    health_servicer = HealthServicer()
    # Through the edge like the contract: a request that does not parse (a `service` that is
    # not UTF-8, from GET /v1/health?service=%ff) is MALFORMED_REQUEST, not grpcio's INTERNAL.
    health_service = health_pb2.DESCRIPTOR.services_by_name["Health"]
    edge.register(server, health_service, health_servicer)
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable([*names, health_service.full_name], server, DESCRIPTOR_SET)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where it used to return 0
        port = 0
    if port == 0:
        raise RuntimeError(f"could not bind {address}: in use, or not an address of this host")
    return server, port, health_servicer


def settle_memory() -> None:
    """Before serving: what start-up built (modules, descriptors, settings, the servicers) is
    moved out of the collector's reach (`gc.freeze`), so full collections walk only what
    serving creates, and the collector runs less often (`GC_THRESHOLDS`). Cycles are still
    collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(deps: Deps, servicers: Sequence[Servicer | routing.EnvironmentRouter]) -> None:
    """Serve until SIGTERM or SIGINT, then drain for up to 5 s."""
    address = f"{deps.settings.grpc_host}:{deps.settings.grpc_port}"
    server, port, health_servicer = build_server(deps, address, servicers)
    settle_memory()
    server.start()
    log.info("gRPC server listening on %s:%s", deps.settings.grpc_host, port)
    stop = threading.Event()

    def _stop(signum, _frame):  # type: ignore[no-untyped-def]
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=5).wait()
    deps.dispose()
    log.info("gRPC server stopped")
