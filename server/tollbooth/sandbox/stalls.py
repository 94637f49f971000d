"""Fault injection on the sandbox's `/v1` API: hold matching requests open.

For tests of what the service does while the provider is slow or times out. A rule matches a
method and a path prefix, a given number of times; a matching request waits, either before it
is handled (the provider is slow to start) or after it was handled and stored (the provider did
the work but the answer comes late, as after a timeout), until the rule is released or its
`seconds` pass. A rule held before with `status` set then answers that status (Stripe's
`api_error`, as from an outage) without handling the request; with `body` as well, it answers
those bytes instead (any status: what a proxy or load balancer in front of Stripe sends, an
HTML 502 page, a bare 429, a truncated body). A rule held after with `status` (a 5xx) lets
the request be handled and stored, then answers that status and saves it under the request's
idempotency key, as Stripe saves the failure of a request it began: every retry with that key
gets it back. Reached through `SandboxHandle.stalls`:

    stall = sandbox.stalls.add("POST", "/v1/checkout/sessions", seconds=5, after=True)
    ...  # the first matching request is held
    stall.entered.wait(5); stall.release.set()
    sandbox.stalls.add("POST", "/v1/payment_intents", seconds=0, status=500)  # one 500
    sandbox.stalls.add("POST", "/v1/prices", seconds=0, status=502, body=b"<html>..</html>")
    sandbox.stalls.add("POST", "/v1/checkout/sessions", seconds=0, status=500, after=True)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Stall:
    method: str
    path_prefix: str
    seconds: float
    after: bool
    times: int
    status: int = 0  # before: answered instead of handling; after: saved under the key
    body: bytes | None = None  # with `status`: these bytes, not a Stripe error object
    content_type: str = "text/html"
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    held: int = 0

    def hold(self) -> None:
        self.entered.set()
        self.release.wait(self.seconds)


class ApiStalls:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Stall] = []

    def add(
        self,
        method: str,
        path_prefix: str,
        *,
        seconds: float,
        after: bool = False,
        times: int = 1,
        status: int = 0,
        body: bytes | None = None,
        content_type: str = "text/html",
    ) -> Stall:
        if status and not (500 <= status <= 599 or (body is not None and not after)):
            raise ValueError("status: a 5xx (before handling, any status with a body)")
        if body is not None and after:
            raise ValueError("body: answered before handling")
        if body is not None and not status:
            raise ValueError("body: answered with a status")
        stall = Stall(
            method.upper(), path_prefix, seconds, after, times, status, body, content_type
        )
        with self._lock:
            self._rules.append(stall)
        return stall

    def clear(self) -> None:
        with self._lock:
            for stall in self._rules:
                stall.release.set()
            self._rules.clear()

    def take(self, method: str, path: str, *, after: bool, failing: bool = False) -> Stall | None:
        """The rule this request must wait on, if any (each rule holds `times` requests);
        `failing`: the rules that fail a request after handling it (`after` with `status`)."""
        with self._lock:
            for stall in self._rules:
                if (
                    stall.after == after
                    and (after and bool(stall.status)) == failing
                    and stall.method == method
                    and path.startswith(stall.path_prefix)
                    and stall.held < stall.times
                ):
                    stall.held += 1
                    return stall
        return None
