"""Streams cannot starve a replica.

grpcio's sync server gives every open call one worker thread for its whole life, so idle
streams would hold the workers that unary calls and health checks need. This interceptor
gives streaming calls a separate budget: at most `max_open` open streams per replica (fewer
than its workers) and `per_caller` per backend key or account; a stream over either is refused
at once (RESOURCE_EXHAUSTED, RATE_LIMITED). A stream that sends nothing for `idle_sec` is
cancelled by a watchdog, which frees its worker.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from tollbooth.auth.caller import current_caller
from tollbooth.errors import DomainError, Kind
from tollbooth.rpc.ratelimit import key_identity

log = logging.getLogger("tollbooth.streams")


@dataclass
class _Open:
    context: grpc.ServicerContext
    caller: str
    last: float = field(default_factory=time.monotonic)


def _refuse(message: str) -> DomainError:
    err = DomainError(Kind.RESOURCE_EXHAUSTED, "RATE_LIMITED", message)
    err.retry_after_sec = 1
    err.headers = (("retry-after", "1"),)
    return err


class StreamGuard(grpc.ServerInterceptor):
    """Runs inside the auth interceptor, so the caller is known."""

    def __init__(self, max_open: int, per_caller: int, idle_sec: float) -> None:
        self.max_open = max_open
        self.per_caller = per_caller
        self.idle_sec = idle_sec
        self._lock = threading.Lock()
        self._open: dict[int, _Open] = {}
        self._by_caller: Counter[str] = Counter()
        self._ids = itertools.count()
        # Runs only while streams are open (a server stopped in a test leaves no thread).
        self._watchdog: threading.Thread | None = None

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._open)

    def _watch(self) -> None:
        tick = min(1.0, self.idle_sec / 4)
        while True:
            time.sleep(tick)
            now = time.monotonic()
            with self._lock:
                if not self._open:
                    self._watchdog = None
                    return
                idle = [i for i, o in self._open.items() if now - o.last > self.idle_sec]
            for ident in idle:
                # Its place is freed before the caller hears CANCELLED, so a caller that
                # opens a stream again at once is served (the handler's own _leave, as it
                # unwinds, finds nothing left to free).
                entry = self._open.get(ident)
                self._leave(ident)
                if entry is not None:
                    log.info("cancelling a stream idle for over %s s", self.idle_sec)
                    entry.context.cancel()

    def _enter(self, context: grpc.ServicerContext, metadata: Any) -> int:
        caller = current_caller.get()
        if caller.is_bearer:
            who = f"account:{caller.account_id}"
        else:
            key = next((m.value for m in metadata or () if m.key == "x-api-key"), None)
            who = f"key:{key_identity(key if isinstance(key, str) else None)}"
        with self._lock:
            if len(self._open) >= self.max_open:
                raise _refuse(f"this replica already serves {self.max_open} streams; retry shortly")
            if self._by_caller[who] >= self.per_caller:
                raise _refuse(f"at most {self.per_caller} open streams per caller")
            ident = next(self._ids)
            self._open[ident] = _Open(context, who)
            self._by_caller[who] += 1
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="stream-idle", daemon=True
                )
                self._watchdog.start()
        return ident

    def _leave(self, ident: int) -> None:
        with self._lock:
            entry = self._open.pop(ident, None)
            if entry is not None:
                self._by_caller[entry.caller] -= 1
                if self._by_caller[entry.caller] <= 0:
                    del self._by_caller[entry.caller]

    def _touching(self, ident: int, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            entry = self._open.get(ident)
            if entry is not None:
                entry.last = time.monotonic()
            yield request

    def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = continuation(details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        metadata = details.invocation_metadata
        guard = self

        def arguments(request: Any, context: grpc.ServicerContext) -> tuple[int, Any]:
            ident = guard._enter(context, metadata)
            if handler.request_streaming:
                request = guard._touching(ident, request)
            return ident, request

        if handler.response_streaming:
            attr = "stream_stream" if handler.request_streaming else "unary_stream"
            behavior = getattr(handler, attr)

            def streaming(request, context):  # type: ignore[no-untyped-def]
                ident, request = arguments(request, context)
                try:
                    for response in behavior(request, context):
                        entry = guard._open.get(ident)
                        if entry is not None:
                            entry.last = time.monotonic()
                        yield response
                finally:
                    guard._leave(ident)

            return handler._replace(**{attr: streaming})
        inner = handler.stream_unary

        def unary(request, context):  # type: ignore[no-untyped-def]
            ident, request = arguments(request, context)
            try:
                return inner(request, context)
            finally:
                guard._leave(ident)

        return handler._replace(stream_unary=unary)
