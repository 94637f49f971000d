"""Idempotency keys in use by a request still in progress (Stripe's `idempotency_key_in_use`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tollbooth.sandbox.wire import StripeError


class KeysInProgress:
    """The keys of the requests being handled. A second request with one of them meanwhile is
    409 `idempotency_error` / `idempotency_key_in_use`, and nothing is saved under the key:
    retried once the first one finished, it gets that one's answer (Stripe's rule)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[str] = set()

    @contextmanager
    def using(self, key: str | None) -> Iterator[None]:
        if key is None:
            yield
            return
        with self._lock:
            if key in self._keys:
                raise StripeError(
                    409,
                    "There is currently another in-progress request using this idempotency key"
                    " (that probably means you submitted twice, and the other request is still"
                    f" going through): {key[:64]}. Please try again later.",
                    type="idempotency_error",
                    code="idempotency_key_in_use",
                )
            self._keys.add(key)
        try:
            yield
        finally:
            with self._lock:
                self._keys.discard(key)
