"""`tollbooth notifications receive`: a notification receiver for a developer's own machine.

What `stripe listen` is for Stripe's events, this is for our outbound notifications: register
`http://127.0.0.1:PORT/hooks` as an endpoint, run this with the endpoint's `whsec_...` secret,
and watch what the delivery process sends. Every POST is verified with the maintained
`standardwebhooks` package over the raw body, as a real receiver must:

- a valid delivery prints ONE JSON line on stdout (flushed): `webhook_id`, `attempt` (how many
  valid deliveries of that webhook-id this receiver has seen, this one included), `status` (what
  it answered), `timestamp` (the `webhook-timestamp` header) and `body` (the parsed envelope);
- the first `fail_first` valid deliveries (whatever their webhook-id) are answered 500, to
  watch the retries; the later ones 204;
- a missing or wrong signature, or a timestamp too far from now, is answered 401 and a body
  that is not a JSON object 400: nothing on stdout, one warning on stderr (with the reason:
  a wrong secret is the usual one), and it counts for neither `attempt` nor `fail_first`.

Starlette on uvicorn, as the sidecar, with a body limit and short timeouts. The socket is bound
before the `listening` line is logged (stderr), so a script may wait for that line and then
send. SIGTERM or Ctrl-C ends it cleanly (exit 0) after the request in progress.
"""

from __future__ import annotations

import binascii
import json
import logging
import signal
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO

import uvicorn
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("tollbooth.receiver")

MAX_BODY = 1024 * 1024  # far above any notification the delivery process sends
SECRET_VARIABLE = "BILLING_RECEIVER_SECRET"


class SecretInvalid(ValueError):
    """A secret that is not `whsec_` + base64 (or is empty)."""


def webhook(secret: str) -> Webhook:
    """The verifier of `secret`, or SecretInvalid naming what is wrong (never the secret)."""
    secret = secret.strip()
    if not secret:
        raise SecretInvalid(f"no secret: give --secret or set {SECRET_VARIABLE}")
    expected = "a Standard Webhooks secret is whsec_ followed by base64, as the endpoint shows it"
    try:
        return Webhook(secret)
    except EmptyWebhookSecretError:
        raise SecretInvalid(f"the secret holds no base64 after whsec_: {expected}") from None
    except (binascii.Error, ValueError):
        # Not the library's exception (its class name, `Error`, said nothing) nor the secret.
        raise SecretInvalid(f"the secret is not valid base64: {expected}") from None


@dataclass
class Receiver:
    """The receiver's state: what it verified so far, and where its lines go."""

    verifier: Webhook
    fail_first: int = 0
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    seen: Counter[str] = field(default_factory=Counter)  # valid deliveries, by webhook-id
    valid: int = 0  # valid deliveries of any id

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """The status for one POST, and the reason of a refusal ("" when verified)."""
        try:
            self.verifier.verify(body, headers, json_parse=False)
        except WebhookVerificationError as exc:
            return 401, f"signature not verified ({exc}): is it this endpoint's secret?"
        try:
            envelope = json.loads(body)
        except ValueError:
            return 400, "signed, but the body is not JSON"
        if not isinstance(envelope, dict):
            return 400, "signed, but the body is not a JSON object"
        webhook_id = headers["webhook-id"]
        self.valid += 1
        self.seen[webhook_id] += 1
        status = 500 if self.valid <= self.fail_first else 204
        line = {
            "webhook_id": webhook_id,
            "attempt": self.seen[webhook_id],
            "status": status,
            "timestamp": headers["webhook-timestamp"],
            "body": envelope,
        }
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()
        return status, ""

    async def endpoint(self, request: Request) -> Response:
        if request.method != "POST":
            return JSONResponse({"error": "POST notifications here"}, status_code=405)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    log.warning(f"refused a POST over {MAX_BODY} bytes", extra={"event": "refused"})
                    return JSONResponse({"error": "body too large"}, status_code=413)
        except ClientDisconnect:
            # Nobody is left to answer: one line, not an application error's traceback.
            log.warning(
                f"the sender hung up after {len(body)} bytes of its body",
                extra={"event": "disconnected"},
            )
            return Response(status_code=400)
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, reason = self.answer(headers, bytes(body))
        if reason:
            webhook_id = headers.get("webhook-id", "")[:100]
            log.warning(
                f"answered {status} to {webhook_id or 'a POST without webhook-id'}: {reason}",
                extra={"event": "refused", "status": status},
            )
            return JSONResponse({"error": reason}, status_code=status)
        return Response(status_code=status)


def create_app(receiver: Receiver) -> Starlette:
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            Route("/", receiver.endpoint, methods=methods),
            Route("/{path:path}", receiver.endpoint, methods=methods),
        ]
    )


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now (OSError when the port is taken or the host unknown)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As every server: connections a stop closed wait (TIME_WAIT) on this port for a minute,
    # and must not keep the next receiver from it. (Not SO_REUSEPORT: a second live
    # receiver on the port is refused.)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(receiver: Receiver, sock: socket.socket) -> None:
    """Serve on `sock` until SIGTERM or SIGINT; returns (for exit 0) once uvicorn has stopped."""
    config = uvicorn.Config(
        create_app(receiver),
        log_level="warning",
        log_config=None,  # uvicorn's records go to the process's JSON handler (stderr)
        access_log=False,
        lifespan="off",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        limit_concurrency=100,
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)

    def stop(*_: object) -> None:
        server.should_exit = True

    # Ours until uvicorn takes the signals over, and again after it re-raises them: a stop that
    # arrives before uvicorn has installed its own handlers (the `listening` line is already
    # out) is kept and ends the server as soon as it starts; after, it makes the exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    log.info(
        f"listening on http://{where}:{port}/ (any path); answering 500 to the first "
        f"{receiver.fail_first} valid deliveries, then 204",
        extra={"event": "listening", "port": port},
    )
    server.run(sockets=[sock])
    log.info(f"stopped after {receiver.valid} valid deliveries", extra={"event": "stopped"})


def run(secret: str, host: str, port: int, fail_first: int) -> int:
    """The command: 0 after a requested stop; 2 for a bad secret, 1 for a port it cannot bind
    (each one line on stderr)."""
    try:
        verifier = webhook(secret)
    except SecretInvalid as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind(host, port)
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    serve(Receiver(verifier, fail_first), sock)
    return 0
