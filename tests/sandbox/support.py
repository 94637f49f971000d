"""Helpers for sandbox tests: a webhook receiver, a waiting loop and purchase shortcuts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import stripe

WEBHOOK_SECRET = "whsec_sandbox_tests_0123456789"
TEST_KEY = "sk_test_sandbox_tests"


@dataclass
class Received:
    event_id: str
    type: str
    body: dict[str, Any]
    signature: str
    at: float
    raw: bytes


@dataclass
class Receiver:
    """A loopback webhook endpoint that verifies every request with the stripe library."""

    secret: str = WEBHOOK_SECRET
    # Status codes to answer, in order, before answering 200 to everything.
    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    rejected: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1/billing/webhooks"

    @property
    def base(self) -> str:
        return self.url.removesuffix("/v1/billing/webhooks")

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - landing page for success/cancel/return URLs
                body = f"<html><body><h1 id='landing'>landed {self.path}</h1></body></html>"
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sig = self.headers.get("Stripe-Signature", "")
                with receiver.lock:
                    receiver.requests += 1
                    status = receiver.script.pop(0) if receiver.script else 200
                    try:
                        event = stripe.Webhook.construct_event(raw, sig, receiver.secret)
                    except (stripe.SignatureVerificationError, ValueError):
                        receiver.rejected += 1
                        status = 400
                    else:
                        receiver.received.append(
                            Received(
                                event.id, event.type, json.loads(raw), sig, time.monotonic(), raw
                            )
                        )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def about(self, object_id: str) -> list[Received]:
        """Events whose data.object is, or belongs to, `object_id`, in arrival order."""
        with self.lock:
            return [r for r in self.received if _mentions(r.body["data"]["object"], object_id)]

    def types_about(self, object_id: str) -> list[str]:
        return [r.type for r in self.about(object_id)]


def _mentions(obj: dict[str, Any], object_id: str) -> bool:
    if obj.get("id") == object_id or obj.get("customer") == object_id:
        return True
    parent = obj.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return bool(details.get("subscription") == object_id)


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; fail after a generous timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def client_for(url: str, key: str = TEST_KEY) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=0)


def monthly_price(client: stripe.StripeClient, amount: int = 1500, **extra: Any) -> stripe.Price:
    product = client.v1.products.create(params={"name": extra.pop("name", "Pro plan")})
    return client.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": amount,
            "currency": "usd",
            "recurring": {"interval": "month"},
            **extra,
        }
    )


def complete(
    client: stripe.StripeClient, session_id: str, card: str | None = None
) -> stripe.checkout.Session:
    params = {"card": card} if card else {}
    response = client.raw_request(
        "post", f"/v1/test_helpers/checkout/sessions/{session_id}/complete", **params
    )
    return client.deserialize(response, api_mode="V1")  # type: ignore[return-value]


def subscribe(
    client: stripe.StripeClient,
    price_id: str,
    *,
    customer: str | None = None,
    card: str | None = None,
    email: str = "buyer@example.com",
) -> tuple[stripe.checkout.Session, stripe.Subscription]:
    """Create a subscription-mode session and complete it with the test helper."""
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": price_id, "quantity": 1}],
        "success_url": "https://app.example/ok?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example/cancel",
    }
    if customer:
        params["customer"] = customer
    else:
        params["customer_email"] = email
    session = client.v1.checkout.sessions.create(params=params)
    done = complete(client, session.id, card)
    assert done.subscription is not None
    sub_id = done.subscription if isinstance(done.subscription, str) else done.subscription.id
    return done, client.v1.subscriptions.retrieve(sub_id)
