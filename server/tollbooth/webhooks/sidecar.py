"""The webhook sidecar: POST /v1/billing/webhooks, on Starlette and uvicorn.

It exists because the signature covers the raw bytes, which JSON transcoding would lose. It
checks the signature (a cheap refusal of anything unsigned), then hands the raw body and the
Stripe-Signature header to the billing server, which verifies them again and stores the
event (store first, then apply). It answers 2xx once the server has committed the event,
whatever its effects did (a failure there is recorded on the event and retried by the server
itself); 503 when it could not be stored, so Stripe retries; a permanent 400 for an event that
can never be stored.

With the live environment configured (`tollbooth.environments`), an event belongs to the
environment whose webhook secret verifies it: it is recorded with that environment's service
key, so the server stores and applies it in that environment's database only. Its `livemode`
must be that environment's (true with a live-mode Stripe key, false with a test-mode one),
else it is refused (400 WEBHOOK_LIVEMODE_MISMATCH) and stored nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from billing.v1 import webhook_pb2, webhook_pb2_grpc
from tollbooth import apidocs, environments, metrics, tracing
from tollbooth.config import Settings
from tollbooth.db import Database
from tollbooth.webhooks.signature import SignatureError, verify

log = logging.getLogger("tollbooth.sidecar")

WEBHOOK_PATH = "/v1/billing/webhooks"
BODY_READ_TIMEOUT_SEC = 10
RECORD_TIMEOUT_SEC = 15


def _error(status: int, reason: str, message: str) -> JSONResponse:
    """The sidecar's error shape: {"error": {"reason", "message"}}; messages never echo input."""
    return JSONResponse({"error": {"reason": reason, "message": message}}, status_code=status)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class _Route:
    """Where events verified by `secrets` go: recorded with the environment's service key."""

    environment: str
    secrets: tuple[str, ...]
    metadata: tuple[tuple[str, str], ...]
    livemode: bool  # of the events the environment's Stripe account sends


def _livemode(payload: bytes) -> bool | None:
    """The event's `livemode` (false when absent, as the inbox reads it); None when the body is
    no event at all (the server refuses that itself)."""
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict):
        return None
    livemode = event.get("livemode", False)
    return livemode if isinstance(livemode, bool) else None


def refusal(settings: Settings) -> str | None:
    """Why these settings cannot serve the sidecar (checked before anything else at start)."""
    if not settings.webhook_secrets:
        return "STRIPE_WEBHOOK_SECRET is not set: refusing to start"
    return None


def create_app(
    settings: Settings,
    target: str | None = None,
    extra: Sequence[BaseRoute] = (),
    on_close: Sequence[Callable[[], None]] = (),
) -> Starlette:
    """The sidecar application; `target` is the billing server (default: the configured one).

    `extra` are more routes the assembly serves here (the operator console), `on_close` what
    to release when the app stops."""
    problem = refusal(settings)
    if problem:
        raise RuntimeError(problem)
    state: dict[str, Any] = {}
    routes = [
        _Route(
            name,
            view.webhook_secrets,
            (("x-api-key", view.service_keys[0]),),
            environments.livemode(view),
        )
        for name, view in environments.of(settings).items()
    ]

    def route_of(payload: bytes, signature: str | None) -> _Route:
        """The environment whose secret verifies the event; SignatureError when none does."""
        refused: SignatureError | None = None
        for route in routes:
            try:
                verify(payload, signature, route.secrets, settings.webhook_tolerance_sec)
                return route
            except SignatureError as exc:
                refused = refused or exc
        assert refused is not None
        raise refused

    def stub() -> webhook_pb2_grpc.WebhookServiceStub:
        # The aio channel belongs to the serving event loop, so it is made on first use.
        if "stub" not in state:
            state["channel"] = grpc.aio.insecure_channel(
                target or settings.grpc_client_target,
                options=[("grpc.lb_policy_name", "round_robin")],
            )
            state["stub"] = webhook_pb2_grpc.WebhookServiceStub(state["channel"])
        return state["stub"]

    async def webhook(request: Request) -> JSONResponse:
        response = await answer(request)
        metrics.WEBHOOK_REQUESTS.labels(str(response.status_code)).inc()
        return response

    async def answer(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or len(declared) > 12):
            return _error(400, "INVALID_ARGUMENT", "Content-Length is not a number")
        if declared is not None and int(declared) > settings.max_body_bytes:
            return _error(413, "REQUEST_TOO_LARGE", "body too large")
        try:
            payload = await asyncio.wait_for(
                _read_body(request, settings.max_body_bytes), BODY_READ_TIMEOUT_SEC
            )
        except _TooLarge:
            return _error(413, "REQUEST_TOO_LARGE", "body too large")
        except (TimeoutError, ClientDisconnect):
            return _error(408, "INVALID_ARGUMENT", "the body did not arrive in time")
        signature = request.headers.get("stripe-signature")
        try:
            route = route_of(payload, signature)
        except SignatureError as exc:
            log.warning("webhook refused: %s", exc)
            return _error(400, "WEBHOOK_SIGNATURE_INVALID", str(exc))
        assert signature is not None
        if len(routes) > 1:
            livemode = _livemode(payload)
            if livemode is not None and livemode != route.livemode:
                log.warning(
                    "webhook refused: livemode %s under the %s secret", livemode, route.environment
                )
                return _error(
                    400,
                    "WEBHOOK_LIVEMODE_MISMATCH",
                    f"the event's livemode is {str(livemode).lower()}, but it was signed with "
                    f"the {route.environment} environment's webhook secret",
                )
        try:
            answer = await stub().RecordStripeEvent(
                webhook_pb2.RecordStripeEventRequest(payload=payload, stripe_signature=signature),
                metadata=route.metadata,
                timeout=RECORD_TIMEOUT_SEC,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            log.error("recording a webhook failed: %s", code)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                # Permanent: this event can never be stored, so redelivery would not help.
                return _error(400, "WEBHOOK_EVENT_INVALID", exc.details() or "invalid event")
            # Not stored: 5xx so the provider delivers it again.
            return _error(503, "SERVICE_UNAVAILABLE", "event not recorded; retry")
        return JSONResponse({"received": True, "duplicate": answer.duplicate})

    async def healthz(request: Request) -> JSONResponse:
        """Liveness: this process answers."""
        return JSONResponse({"ok": True})

    def database_reachable() -> bool:
        if "db" not in state:
            state["db"] = Database(settings.database_url)
        try:
            with state["db"].transaction(readonly=True) as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness: the database is unreachable", exc_info=True)
            return False

    async def readyz(request: Request) -> JSONResponse:
        """Readiness: the database answers and the billing server says SERVING."""
        try:
            database = await asyncio.wait_for(asyncio.to_thread(database_reachable), 5)
        except TimeoutError:
            database = False
        try:
            if "health" not in state:
                stub()
                state["health"] = health_pb2_grpc.HealthStub(state["channel"])
            reply = await state["health"].Check(health_pb2.HealthCheckRequest(), timeout=2)
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            serving = False
        ready = database and serving
        return JSONResponse(
            {
                "ready": ready,
                "database": "ok" if database else "unreachable",
                "grpc": "serving" if serving else "unavailable",
            },
            status_code=200 if ready else 503,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        channel = state.pop("channel", None)
        state.pop("stub", None)
        state.pop("health", None)
        if "db" in state:
            state.pop("db").dispose()
        if channel is not None:
            await channel.close()
        for close in on_close:
            close()

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return _error(404, "ROUTE_NOT_FOUND", "no such path")

    async def not_allowed(request: Request, exc: Exception) -> JSONResponse:
        response = _error(405, "ROUTE_NOT_FOUND", "method not allowed")
        allow = (getattr(exc, "headers", None) or {}).get("Allow")
        if allow:  # RFC 9110: a 405 says which methods the path takes
            response.headers["Allow"] = allow
        return response

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *apidocs.routes(),
            *extra,
        ],
        exception_handlers={404: not_found, 405: not_allowed},
        lifespan=lifespan,
    )


# Connections still sending their request headers, at most; a new one past this evicts the
# oldest (a slow-header flood cannot fill the connection limit that real webhooks need).
MAX_PENDING_HEADERS = 256


def protocol_class(headers_timeout: float, max_pending: int = MAX_PENDING_HEADERS) -> type:
    """uvicorn's h11 protocol, bounding the time a client may take to send its headers.

    uvicorn closes idle keep-alive connections but never a connection that opened and sends
    its headers slowly, so 1000 such connections made real webhooks answer 503. Each
    connection (and each next request on a kept-alive one) must complete its headers within
    `headers_timeout`, and at most `max_pending` may be at it at once.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol, h11

    pending: dict[int, Any] = {}  # id -> protocol, oldest first

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _await_headers(self) -> None:
            self._headers_done()
            pending[id(self)] = self
            while len(pending) > max_pending:
                oldest = pending.pop(next(iter(pending)))
                oldest._cut()
            self._header_timer = self.loop.call_later(headers_timeout, self._cut)

        def _headers_done(self) -> None:
            pending.pop(id(self), None)
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _cut(self) -> None:
            self._headers_done()
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            super().connection_made(transport)
            self._await_headers()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._headers_done()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_headers()

        def connection_lost(self, exc):  # type: ignore[no-untyped-def]
            self._headers_done()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def uvicorn_config(
    app: Starlette, host: str, port: int, headers_timeout: float = 10
) -> uvicorn.Config:
    """Timeouts and limits: the request headers must arrive within `headers_timeout` (at most
    MAX_PENDING_HEADERS connections at it), the body within BODY_READ_TIMEOUT_SEC, idle
    keep-alive closes after 5 s, at most 1000 open connections, 5 s graceful drain."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(headers_timeout),
        log_level="warning",
        log_config=None,  # uvicorn's records go to the process's JSON handler
        access_log=False,
        timeout_keep_alive=5,
        limit_concurrency=1000,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
    )


def serve(
    settings: Settings,
    extra: Sequence[BaseRoute] = (),
    on_close: Sequence[Callable[[], None]] = (),
) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn drains, then stops)."""
    app = create_app(settings, extra=extra, on_close=on_close)
    metrics.serve(settings.metrics_port)
    tracing.setup(settings.otel_endpoint, "tollbooth-sidecar")
    log.info("webhook sidecar listening on 127.0.0.1:%s%s", settings.sidecar_port, WEBHOOK_PATH)
    config = uvicorn_config(
        app, "127.0.0.1", settings.sidecar_port, settings.http_headers_timeout_sec
    )
    uvicorn.Server(config).run()
    log.info("webhook sidecar stopped")


@dataclass
class RunningSidecar:
    """A sidecar serving in a background thread (tests and the in-process stack)."""

    server: uvicorn.Server
    thread: threading.Thread
    port: int

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(
    settings: Settings,
    port: int,
    target: str | None = None,
    extra: Sequence[BaseRoute] = (),
    on_close: Sequence[Callable[[], None]] = (),
) -> RunningSidecar:
    app = create_app(settings, target, extra, on_close)
    server = uvicorn.Server(
        uvicorn_config(app, "127.0.0.1", port, settings.http_headers_timeout_sec)
    )
    thread = threading.Thread(target=server.run, name="sidecar", daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        if not thread.is_alive():
            raise RuntimeError("the sidecar did not start")
        threading.Event().wait(0.05)
    return RunningSidecar(server, thread, port)
