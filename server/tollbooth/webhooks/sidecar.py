"""The webhook sidecar: POST /v1/billing/webhooks.

It exists because the signature covers the raw bytes, which JSON transcoding would lose. It
verifies, then hands the event to the billing server (WebhookService.RecordStripeEvent), and
answers 2xx only after the server committed it, so a failure makes Stripe retry.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from billing.v1 import webhook_pb2, webhook_pb2_grpc
from tollbooth.config import Settings
from tollbooth.webhooks.signature import SignatureError, verify

log = logging.getLogger("tollbooth.sidecar")

WEBHOOK_PATH = "/v1/billing/webhooks"


class SidecarServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], settings: Settings, channel: grpc.Channel | None = None
    ) -> None:
        if not settings.webhook_secrets:
            raise RuntimeError("STRIPE_WEBHOOK_SECRET is not set: refusing to start")
        super().__init__(address, _Handler)
        self.settings = settings
        self.channel = channel or grpc.insecure_channel(settings.grpc_target)
        self.stub = webhook_pb2_grpc.WebhookServiceStub(self.channel)
        self.metadata = (("x-api-key", settings.service_keys[0]),)


class _Handler(BaseHTTPRequestHandler):
    server: SidecarServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, reason: str, message: str) -> None:
        self._reply(status, {"error": {"reason": reason, "message": message}})

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/healthz":
            self._reply(200, {"ok": True})
        else:
            self._error(404, "NOT_FOUND", "no such path")

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != WEBHOOK_PATH:
            self._error(404, "NOT_FOUND", "no such path")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "INVALID_ARGUMENT", "Content-Length required")
            return
        if length < 0 or length > self.server.settings.max_body_bytes:
            self._error(413, "INVALID_ARGUMENT", "body too large")
            return
        payload = self.rfile.read(length)
        settings = self.server.settings
        try:
            verify(
                payload,
                self.headers.get("Stripe-Signature"),
                settings.webhook_secrets,
                settings.webhook_tolerance_sec,
            )
        except SignatureError as exc:
            log.warning("webhook refused: %s", exc)
            self._error(400, "WEBHOOK_SIGNATURE_INVALID", str(exc))
            return
        try:
            event = json.loads(payload)
            event_id, event_type = event["id"], event["type"]
            if not isinstance(event_id, str) or not isinstance(event_type, str):
                raise TypeError("id and type must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            self._error(400, "INVALID_ARGUMENT", f"not a Stripe event: {exc}")
            return
        created = None
        if isinstance(event.get("created"), int):
            created = timestamp_pb2.Timestamp()
            created.FromDatetime(datetime.fromtimestamp(event["created"], UTC))
        request = webhook_pb2.RecordStripeEventRequest(
            event_id=event_id,
            type=event_type,
            api_version=str(event.get("api_version") or ""),
            livemode=bool(event.get("livemode")),
            created=created,
            payload=payload,
        )
        try:
            answer = self.server.stub.RecordStripeEvent(
                request, metadata=self.server.metadata, timeout=15
            )
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            log.error("recording %s failed: %s", event_id, code)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                self._error(400, "INVALID_ARGUMENT", exc.details() or "invalid event")  # type: ignore[attr-defined]
            else:
                # Not committed: 5xx so the provider delivers it again.
                self._error(503, "SERVICE_UNAVAILABLE", "event not recorded; retry")
            return
        self._reply(200, {"received": True, "duplicate": answer.duplicate})


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = SidecarServer(("127.0.0.1", settings.sidecar_port), settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log.info("webhook sidecar listening on 127.0.0.1:%s%s", settings.sidecar_port, WEBHOOK_PATH)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()
    server.channel.close()
    log.info("webhook sidecar stopped")
