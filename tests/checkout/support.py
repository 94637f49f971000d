"""The checkout world for tests: a billing server, the webhook sidecar and the Stripe sandbox
delivering signed events to it (loopback, free ports), plus shortcuts through real stubs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import stripe
from sqlalchemy import func, select

from billing.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    checkout_pb2,
    checkout_pb2_grpc,
    credit_pb2,
    credit_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from tests.conftest import SERVICE_KEY, SERVICE_MD, WEBHOOK_SECRET, bearer_md, make_env
from tests.devstack import free_port
from tollbooth.app import Deps, build_server
from tollbooth.app import start_sidecar as start_in_thread
from tollbooth.config import Settings
from tollbooth.db import Database
from tollbooth.db.models import NotificationOutbox
from tollbooth.sandbox.app import SandboxHandle, reserve_port, start_sandbox
from tollbooth.sandbox.config import Faults, SandboxConfig

MONTHLY = catalog_pb2.Recurring(interval=catalog_pb2.RECURRING_INTERVAL_MONTH, interval_count=1)
SCOPES = ["checkout", "portal", "billing:read", "credits:read"]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def transactions_open(database_url: str) -> int:
    """PostgreSQL: how many other connections to this database sit inside a transaction (a
    provider call held meanwhile must leave none open)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(database_url)
    try:
        with admin.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )
    finally:
        admin.dispose()


def operator_command(
    world: World, monkeypatch: Any, capsys: Any, *argv: str, **extra: str
) -> tuple[int, str, str]:
    """Run `tollbooth ARGV` as an operator does, against the world (with `extra` settings):
    exit code, stdout, stderr."""
    from tollbooth import cli

    env = make_env(
        world.settings.database_url,
        BILLING_SANDBOX_PORT=str(world.settings.sandbox_port),
        **extra,
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class Gate:
    """A loopback relay between the sandbox and the sidecar that can be closed: while closed it
    answers 503, so the sandbox queues its events and retries them (later all at once, in the
    order its fault injection picks)."""

    def __init__(self, target: str) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import httpx

        self.open = threading.Event()
        self.open.set()
        self.forwarded: list[str] = []  # event ids passed on to the sidecar, in order
        gate = self
        client = httpx.Client(timeout=30)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = 503
                if gate.open.is_set():
                    gate.forwarded.append(str(json.loads(body).get("id")))
                    try:
                        status = client.post(
                            target,
                            content=body,
                            headers={
                                "Content-Type": "application/json",
                                "Stripe-Signature": self.headers.get("Stripe-Signature", ""),
                            },
                        ).status_code
                    except httpx.HTTPError:
                        status = 502
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._client = client
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1/billing/webhooks"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()


@dataclass
class World:
    """Server + sidecar + sandbox; `stop()` ends all three."""

    settings: Settings
    deps: Deps
    channel: grpc.Channel
    sandbox: SandboxHandle
    stripe: stripe.StripeClient
    sidecar_url: str
    gate: Gate
    _stops: list[Callable[[], None]] = field(default_factory=list)
    grpc_target: str = ""  # for tests that open clients of their own

    def stop(self) -> None:
        """Stops all parts at once (each takes a poll interval or two to wind down)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(self._stops) or 1) as pool:
            for done in [pool.submit(stop) for stop in reversed(self._stops)]:
                done.result()

    # -- stubs --------------------------------------------------------------------------

    @property
    def checkout(self) -> checkout_pb2_grpc.CheckoutServiceStub:
        return checkout_pb2_grpc.CheckoutServiceStub(self.channel)

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogServiceStub:
        return catalog_pb2_grpc.CatalogServiceStub(self.channel)

    @property
    def credits(self) -> credit_pb2_grpc.CreditServiceStub:
        return credit_pb2_grpc.CreditServiceStub(self.channel)

    def token(self, principal: str | None = None) -> tuple[str, str]:
        """A bearer token with every checkout scope, and its account id."""
        stub = token_pb2_grpc.TokenServiceStub(self.channel)
        reply = stub.IssueToken(
            token_pb2.IssueTokenRequest(
                principal_id=principal or f"user-{uuid.uuid4().hex[:8]}",
                user_id="u1",
                scopes=SCOPES,
                email="buyer@example.com",
            ),
            metadata=SERVICE_MD,
            timeout=10,
        )
        return reply.access_token, reply.billing_account_id

    def price(
        self,
        lookup_key: str,
        *,
        amount: int = 2900,
        recurring: bool = True,
        group: str = "plan",
        stackable: bool = False,
        grants: list[catalog_pb2.CreditGrantSpec] | None = None,
        entitlements: list[catalog_pb2.Entitlement] | None = None,
        product_id: str = "",
        currency: str = "usd",
    ) -> catalog_pb2.Price:
        if not product_id:
            product_id = self.catalog.CreateProduct(
                catalog_pb2.CreateProductRequest(
                    product=catalog_pb2.Product(name=f"Product {lookup_key}"),
                    request_id=f"product-{uuid.uuid4().hex}",
                ),
                metadata=SERVICE_MD,
                timeout=10,
            ).product_id
        return self.catalog.CreatePrice(
            catalog_pb2.CreatePriceRequest(
                price=catalog_pb2.Price(
                    product_id=product_id,
                    currency=currency,
                    unit_amount=amount,
                    type=catalog_pb2.PRICE_TYPE_RECURRING
                    if recurring
                    else catalog_pb2.PRICE_TYPE_ONE_TIME,
                    recurring=MONTHLY if recurring else None,
                    lookup_key=lookup_key,
                    stackable=stackable,
                    subscription_group=group if recurring else "",
                    credit_grants=grants or [],
                    entitlements=entitlements or [],
                ),
                request_id=f"price-{uuid.uuid4().hex}",
            ),
            metadata=SERVICE_MD,
            timeout=10,
        )

    def buy(
        self,
        token: str,
        lookup_key: str,
        *,
        quantity: int = 1,
        request_id: str = "",
        reference: str = "",
    ) -> checkout_pb2.CreateCheckoutSessionResponse:
        return self.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                items=[checkout_pb2.CheckoutItem(lookup_key=lookup_key, quantity=quantity)],
                success_url="https://app.example/ok?cs={CHECKOUT_SESSION_ID}",
                cancel_url="https://app.example/pricing",
                client_reference=reference,
                request_id=request_id,
            ),
            metadata=bearer_md(token),
            timeout=30,
        )

    def pay(self, stripe_session_id: str, card: str | None = None) -> dict[str, Any]:
        params = {"card": card} if card else {}
        response = self.stripe.raw_request(
            "post", f"/v1/test_helpers/checkout/sessions/{stripe_session_id}/complete", **params
        )
        return json.loads(response.body)  # type: ignore[attr-defined,no-any-return]

    def billed(self, token: str, lookup_key: str) -> None:
        """Buy and pay `lookup_key`, its events applied: the account has something billed,
        as CreatePortalSession requires (a provider customer alone is not enough)."""
        self.pay(self.buy(token, lookup_key).session.stripe_checkout_session_id)
        self.settled()

    def status(self, token: str) -> checkout_pb2.BillingStatus:
        return self.checkout.GetBillingStatus(
            checkout_pb2.GetBillingStatusRequest(), metadata=bearer_md(token), timeout=10
        )

    def balance(self, account_id: str, credit_type: str) -> str:
        return self.credits.GetBalance(
            credit_pb2.GetBalanceRequest(account=account_id, type=credit_type),
            metadata=SERVICE_MD,
            timeout=10,
        ).balance

    def advance(self, days: int) -> None:
        clock = self.stripe.v1.test_helpers.test_clocks.retrieve("clock_default")
        self.stripe.v1.test_helpers.test_clocks.advance(
            "clock_default", params={"frozen_time": clock.frozen_time + days * 86400}
        )

    def settled(self, timeout: float = 60.0) -> None:
        """Every event the sandbox emitted has been accepted (2xx) by the sidecar."""

        def done() -> bool:
            store = self.sandbox.app.state.store
            with store.lock:
                return store.next_due_at() is None

        wait_for(done, timeout, "the sandbox to deliver every event")

    def notifications(self, account_id: str) -> list[str]:
        """Types of the outbound notifications about an account, oldest first."""
        with self.deps.db.transaction(readonly=True) as session:
            return list(
                session.scalars(
                    select(NotificationOutbox.type)
                    .where(NotificationOutbox.billing_account_id == account_id)
                    .order_by(NotificationOutbox.created_at)
                )
            )

    def count(self, model: Any, *where: Any) -> int:
        with self.deps.db.transaction(readonly=True) as session:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def start_world(
    database_url: str,
    tmp: Path,
    *,
    faults: str = "",
    deliver: bool = True,
    retry_max_sec: float = 0.5,
    **env: str,
) -> World:
    held = reserve_port()  # the sandbox's port, held until it serves (nothing else takes it)
    sandbox_port, sidecar_port = held.getsockname()[1], free_port()
    settings = Settings.from_env(
        make_env(database_url, BILLING_SANDBOX_PORT=str(sandbox_port), **env)
    )
    deps = Deps.build(settings, Database(database_url))
    server, grpc_port, _ = build_server(deps, "127.0.0.1:0")
    server.start()
    stops: list[Callable[[], None]] = []

    def stop_server() -> None:
        server.stop(grace=None).wait()
        deps.db.dispose()

    stops.append(stop_server)
    sidecar = start_in_thread(settings, sidecar_port, target=f"127.0.0.1:{grpc_port}")
    stops.append(sidecar.stop)
    sidecar_url = f"http://127.0.0.1:{sidecar_port}/v1/billing/webhooks"
    gate = Gate(sidecar_url)
    stops.append(gate.stop)
    sandbox = start_sandbox(
        SandboxConfig(
            webhook_secret=WEBHOOK_SECRET,
            port=sandbox_port,
            db_path=tmp / f"sandbox-{uuid.uuid4().hex[:6]}.db",
            webhook_url=gate.url if deliver else "",
            faults=Faults.parse(faults),
            retry_base_sec=0.05,
            retry_max_sec=retry_max_sec,
        ),
        sock=held,
    )
    stops.append(sandbox.stop)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    stops.append(channel.close)
    client = stripe.StripeClient(
        "sk_test_checkout_tests", base_addresses={"api": sandbox.url}, max_network_retries=0
    )
    return World(
        settings, deps, channel, sandbox, client, sidecar_url, gate, stops, f"127.0.0.1:{grpc_port}"
    )


def signed_send(world: World, body: bytes) -> int:
    """POST a raw event body, signed with the webhook secret, to the sidecar; the status."""
    import httpx

    from tollbooth.webhooks.signature import header

    response = httpx.post(
        world.sidecar_url,
        content=body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": header(body, WEBHOOK_SECRET),
        },
        timeout=30,
    )
    return response.status_code


def events_of(world: World, event_type: str, object_id: str) -> list[dict[str, Any]]:
    """The sandbox's events of one type about one object, oldest first, as raw dicts."""
    response = world.stripe.raw_request("get", "/v1/events", type=event_type, limit=100)
    listed = json.loads(response.body)["data"]  # type: ignore[attr-defined]
    return [e for e in reversed(listed) if e["data"]["object"]["id"] == object_id]


@dataclass
class Shop:
    """The whole stack behind Envoy with the sandbox; REST helpers in the seed's shapes."""

    stack: Any
    sandbox: SandboxHandle
    stripe: stripe.StripeClient

    def close(self) -> None:
        self.sandbox.stop()
        self.stack.close()

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {"x-api-key": SERVICE_KEY}
        return self.stack.request(method, path, body, headers)

    def token(self, principal: str) -> str:
        resp = self.request(
            "POST",
            "/mgt/v1/token/issue",
            {"principal_id": principal, "user_id": "u1", "scopes": SCOPES},
        )
        assert resp.status == 200, resp.body
        return str(resp.json()["access_token"])

    def price(self, lookup_key: str, group: str = "plan", amount: int = 2900, **extra: Any) -> Any:
        product = self.request(
            "POST",
            f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
            {"name": f"Plan {lookup_key}"},
        )
        assert product.status == 200, product.body
        price = self.request(
            "POST",
            f"/mgt/v1/catalog/prices?request_id={uuid.uuid4().hex}",
            {
                "product_id": product.json()["product_id"],
                "currency": "usd",
                "unit_amount": amount,
                "type": "PRICE_TYPE_RECURRING",
                "recurring": {"interval": "RECURRING_INTERVAL_MONTH"},
                "lookup_key": lookup_key,
                "subscription_group": group,
                **extra,
            },
        )
        assert price.status == 200, price.body
        return price.json()

    def wait_billed(self, account_id: str) -> None:
        """Until the account has a subscription or a paid purchase recorded (its events
        applied): what CreatePortalSession requires."""
        from tollbooth.subscriptions.repository import ever_billed

        def billed() -> bool:
            with self.stack.deps.db.transaction(readonly=True) as session:
                return ever_billed(session, account_id)

        wait_for(billed, 60, "the payment to be recorded")

    def billing(self, token: str) -> dict[str, Any]:
        resp = self.request("GET", "/api/v1/billing", token=token)
        assert resp.status == 200, resp.body
        return resp.json()  # type: ignore[no-any-return]


def start_shop(
    tmp: Path, database_url: str | None = None, *, default_origins: bool = False, **extra_env: str
) -> Shop:
    """The shop on a migrated SQLite file, or on the database `database_url` names; the
    servers' environment plus `extra_env`. `default_origins`: BILLING_REDIRECT_ORIGINS unset,
    as `make run` has it (the CORS origins)."""
    from tests.devstack import migrated_sqlite, start_stack

    url = database_url or migrated_sqlite(tmp / "billing.db")
    held = reserve_port()  # held until the sandbox serves on it (the stack starts meanwhile)
    sandbox_port = held.getsockname()[1]
    # The browser test lands on the sandbox's own page after paying; `extra_env` may widen it.
    origins = f"https://app.example,http://127.0.0.1:{sandbox_port}"
    env = make_env(
        url,
        BILLING_SANDBOX_PORT=str(sandbox_port),
        **{"BILLING_REDIRECT_ORIGINS": origins, **extra_env},
    )
    if default_origins:
        del env["BILLING_REDIRECT_ORIGINS"]
    stack = start_stack(url, env, tmp)
    sandbox = start_sandbox(
        SandboxConfig(
            webhook_secret=WEBHOOK_SECRET,
            port=sandbox_port,
            db_path=tmp / "sandbox.db",
            webhook_url=f"{stack.rest_url}/v1/billing/webhooks",
            retry_base_sec=0.05,
            retry_max_sec=0.5,
        ),
        sock=held,
    )
    client = stripe.StripeClient(
        "sk_test_shop", base_addresses={"api": sandbox.url}, max_network_retries=0
    )
    return Shop(stack, sandbox, client)
