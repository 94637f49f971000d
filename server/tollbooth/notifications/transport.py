"""The delivery process's HTTP client: httpx's own transport, each connection bounded.

httpx's timeouts bound each socket operation, not a whole POST (a receiver sending a byte a
second never trips them), and not the host's lookup at all (the system resolver takes no
timeout). So the connections of `sender_client` are wrapped: every read and write waits no
longer than what is left of the POST's deadline (`deadline`), the host is looked up within
the per-operation timeout (`addresses.resolve`) and, with the private-address guard on,
its addresses are checked before one of them (never the name again) is connected to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore
import httpx

from tollbooth.notifications import addresses

_deadline = threading.local()  # `at`: the time.monotonic() this thread's POST ends by


@contextmanager
def deadline(seconds: float | None) -> Iterator[float | None]:
    """The POSTs of this thread inside end by `seconds` from now (None: no deadline); yields
    the time.monotonic() they end by."""
    _deadline.at = None if seconds is None else time.monotonic() + seconds
    try:
        yield _deadline.at
    finally:
        _deadline.at = None


def _within_deadline(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` for one socket operation, cut to what is left of this thread's deadline."""
    at: float | None = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits no longer than the deadline allows."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _within_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):  # type: ignore[no-untyped-def]
        limit = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, limit))

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend, deny_private: bool) -> None:
        self._backend = backend
        self._deny_private = deny_private

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # type: ignore[no-untyped-def]
        """The host looked up within the timeout (and the deadline), its addresses checked
        when the guard is on, then each address in turn until one connects (TLS still checks
        the certificate against the name: httpcore passes it to `start_tls` apart)."""
        limit = _within_deadline(timeout, httpcore.ConnectTimeout)
        name = host.decode("ascii") if isinstance(host, bytes) else str(host)
        try:
            found = addresses.resolve(name, port, 3600.0 if limit is None else limit)
            if self._deny_private:
                addresses.check(name, found)
        except (addresses.LookupFailed, addresses.AddressDenied) as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        last: Exception | None = None
        for address, at_port in found:
            limit = _within_deadline(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._backend.connect_tcp(
                    str(address), at_port, limit, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return _DeadlineStream(stream)
        assert last is not None
        raise last

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # type: ignore[no-untyped-def]
        limit = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, limit, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def sender_client(timeout_sec: float, deny_private: bool = False) -> httpx.Client:
    """The senders' client: httpx's own transport, its connections wrapped so that
    `deadline` bounds the whole POST, the lookup waits at most `timeout_sec`, and (with
    `deny_private`) no connection is made to a non-global address."""
    transport = httpx.HTTPTransport(trust_env=False)  # nothing from the environment
    pool = transport._pool  # httpx builds its httpcore pool; no public way to pass a backend
    if not isinstance(pool, httpcore.ConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpx/httpcore changed: the notification deadline cannot be set")
    pool._network_backend = _DeadlineBackend(pool._network_backend, deny_private)
    return httpx.Client(
        transport=transport, timeout=timeout_sec, follow_redirects=False, trust_env=False
    )
