"""The sandbox process: Starlette app, uvicorn server, and a background-thread handle for tests."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tollbooth.sandbox import API_VERSION
from tollbooth.sandbox.api import Api
from tollbooth.sandbox.config import SandboxConfig
from tollbooth.sandbox.delivery import Deliverer
from tollbooth.sandbox.engine import Engine
from tollbooth.sandbox.headers import HeadersMiddleware
from tollbooth.sandbox.pages import (
    FormNotUtf8,
    FormTooLarge,
    Pages,
    back,
    form_not_utf8,
    form_too_large,
    render,
)
from tollbooth.sandbox.paypage import PayPage
from tollbooth.sandbox.stalls import ApiStalls
from tollbooth.sandbox.store import Store

log = logging.getLogger("tollbooth.sandbox")

_STATIC = Path(__file__).parent / "static"


def create_app(config: SandboxConfig) -> Starlette:
    """The ASGI app. Its lifespan opens the SQLite store and runs the webhook worker."""
    store = Store(config.db_path)
    holder: dict[str, Deliverer] = {}
    engine = Engine(store, config, wake=lambda: holder["d"].wake() if "d" in holder else None)
    deliverer = Deliverer(store, engine, config)
    holder["d"] = deliverer
    api = Api(engine, config.max_body_bytes)
    pages = Pages(engine)
    pay_page = PayPage(engine)

    async def v1(request: Request) -> Response:
        return await api(request)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "sandbox": True, "api_version": API_VERSION})

    async def root(request: Request) -> Response:
        return RedirectResponse("/sandbox/", status_code=307)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with store.tx():
            engine.settle_interrupted_advances()
        deliverer.start()
        try:
            yield
        finally:
            deliverer.stop()
            store.close()

    routes = [
        Route("/", root),
        Route("/sandbox/", pages.index),
        Route("/sandbox/healthz", healthz),
        Route("/sandbox/back", back),
        Route("/sandbox/checkout/{session_id}", pages.checkout),
        Route("/sandbox/checkout/{session_id}/pay", pages.checkout_pay, methods=["POST"]),
        Route("/sandbox/portal/{portal_id}", pages.portal),
        Route(
            "/sandbox/portal/{portal_id}/subscriptions/{sub_id}/switch",
            pages.switch_page,
            methods=["GET"],
        ),
        Route(
            "/sandbox/portal/{portal_id}/subscriptions/{sub_id}/{action}",
            pages.portal_post,
            methods=["POST"],
        ),
        Route("/sandbox/portal/{portal_id}/{action}", pages.portal_post, methods=["POST"]),
        Route("/sandbox/invoices/{invoice_id}", pages.invoice),
        Route("/sandbox/pay/{pi_id}", pay_page.show),
        Route("/sandbox/pay/{pi_id}", pay_page.pay, methods=["POST"]),
        Mount("/sandbox/static", app=StaticFiles(directory=str(_STATIC)), name="static"),
        Route("/v1/{path:path}", v1, methods=["GET", "POST", "DELETE"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return render(
            "message.html", status=status, title="Not found", message="No such sandbox page."
        )

    app = Starlette(
        routes=routes,
        middleware=[Middleware(HeadersMiddleware)],
        lifespan=lifespan,
        exception_handlers={
            404: not_found,
            405: not_found,
            FormTooLarge: form_too_large,
            FormNotUtf8: form_not_utf8,
        },
    )
    app.state.engine = engine
    app.state.store = store
    app.state.deliverer = deliverer
    app.state.config = config
    app.state.stalls = api.stalls
    return app


def _uvicorn_config(app: Starlette, config: SandboxConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        log_config=None,  # uvicorn's records go to the process's JSON handler
        access_log=False,
        lifespan="on",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        limit_concurrency=200,
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
    )


def serve(config: SandboxConfig) -> None:
    """Serve in the foreground until SIGTERM/SIGINT (uvicorn drains in-flight requests)."""
    app = create_app(config)
    log.info(
        f"stripe sandbox: {config.base_url} (SANDBOX, API {API_VERSION}); "
        f"webhooks to {config.webhook_url or '(none)'}; state in {config.db_path}",
        extra={"event": "listening", "url": config.base_url},
    )
    # uvicorn drains, then re-raises the signal through the handlers it found; no-op handlers
    # make a requested stop exit 0 rather than die by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(_uvicorn_config(app, config)).run()
    log.info("stripe sandbox: stopped", extra={"event": "stopped"})


@dataclass
class SandboxHandle:
    """A sandbox running in a background thread (tests, scripts)."""

    url: str
    config: SandboxConfig
    app: Starlette
    _server: uvicorn.Server
    _thread: threading.Thread

    @property
    def engine(self) -> Engine:
        engine: Engine = self.app.state.engine
        return engine

    @property
    def deliverer(self) -> Deliverer:
        deliverer: Deliverer = self.app.state.deliverer
        return deliverer

    @property
    def stalls(self) -> ApiStalls:
        """Fault injection on the `/v1` API (tests): hold matching requests open."""
        stalls: ApiStalls = self.app.state.stalls
        return stalls

    def stop(self) -> None:
        self.stalls.clear()
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reserve_port(host: str = "127.0.0.1") -> socket.socket:
    """A listening-ready socket bound to a free port, held until `start_sandbox(sock=...)`
    serves on it: what must know the sandbox's address before it starts, without another
    process taking the port meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def start_sandbox(config: SandboxConfig, sock: socket.socket | None = None) -> SandboxHandle:
    """Start on `config.port` (0 = a free port), or on `sock` (from `reserve_port`), in a
    thread; returns once it answers."""
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
    port = sock.getsockname()[1]
    config = replace(config, port=port)
    app = create_app(config)
    server = uvicorn.Server(_uvicorn_config(app, config))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sandbox-http", daemon=True
    )
    thread.start()
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError("the sandbox failed to start")
        thread.join(timeout=0.02)
    return SandboxHandle(
        url=f"http://{config.host}:{port}", config=config, app=app, _server=server, _thread=thread
    )


@contextlib.contextmanager
def running_sandbox(config: SandboxConfig) -> Iterator[SandboxHandle]:
    handle = start_sandbox(config)
    try:
        yield handle
    finally:
        handle.stop()
