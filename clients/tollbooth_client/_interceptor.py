"""The client-side channel interceptor that gives every stub call the same behaviour.

It sits on the channel rather than in BillingClient's methods so that the raw generated stubs
exposed as `client.token`, `client.catalog`, ... get auth metadata, deadlines, request ids,
retries and decoded errors too, not only the convenience methods.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tollbooth_client.errors import BillingError

Metadata = tuple[tuple[str, str], ...]
AUTH_KEYS = frozenset({"x-api-key", "authorization"})


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _Details(_CallDetails, grpc.ClientCallDetails):
    """grpc wants a ClientCallDetails instance; a named tuple keeps it immutable."""


def backoff_delay(
    attempt: int, initial: float, maximum: float, rand: Callable[[], float] = random.random
) -> float:
    """Delay before retry number `attempt + 1` (attempt counts from 0).

    Equal jitter: half of the exponential step is fixed, so retries really back off from a
    struggling server; the random half spreads clients that failed together (a server
    restart) so they do not come back in lockstep.
    """
    step = min(maximum, initial * (2**attempt))
    return step / 2 + rand() * step / 2


def with_request_id(request: Any) -> Any:
    """A copy of `request` with a fresh uuid4 `request_id`, when it has an empty one.

    Only mutating RPCs carry `request_id` (a contract rule), so its presence marks them. The
    caller's message is copied, never changed: a message reused as a template for several
    intended operations must not share one idempotency key, or all but the first would be
    deduplicated away by the server. Retries inside one call reuse the copy, hence the key.
    """
    if not isinstance(request, Message):
        return request
    field = request.DESCRIPTOR.fields_by_name.get("request_id")
    if field is None or field.type != FieldDescriptor.TYPE_STRING:
        return request
    if request.request_id:  # type: ignore[attr-defined]
        return request
    filled = type(request)()
    filled.CopyFrom(request)
    filled.request_id = str(uuid.uuid4())  # type: ignore[attr-defined]
    return filled


class _DecodedStream:
    """A streaming call whose iteration raises BillingError instead of grpc.RpcError."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as err:
            raise BillingError.from_rpc_error(err) from err

    def __getattr__(self, name: str) -> Any:
        # cancel(), code(), trailing_metadata(), ... of the underlying call.
        return getattr(self._call, name)


class BillingInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Auth metadata, default deadline, request ids, UNAVAILABLE retries, decoded errors.

    Only unary-unary calls get the default deadline and retries: a stream is long-lived by
    design (a 10 s default would cut it), and its request iterator cannot be replayed.
    A stub's `.future()` blocks until the call is settled, since retrying needs the outcome.
    """

    def __init__(
        self,
        auth: Metadata,
        *,
        default_timeout: float,
        max_retries: int,
        initial_backoff: float,
        max_backoff: float,
    ) -> None:
        self.auth = auth
        self.default_timeout = default_timeout
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff

    def _metadata(self, given: Any) -> Metadata:
        pairs = tuple((str(k), v) for k, v in (given or ()))
        # A per-call credential wins over the client's own (e.g. a one-off bearer token).
        if any(k.lower() in AUTH_KEYS for k, _ in pairs):
            return pairs
        return pairs + self.auth

    def _details(self, given: Any, timeout: float | None) -> _Details:
        return _Details(
            given.method,
            timeout,
            self._metadata(given.metadata),
            getattr(given, "credentials", None),
            getattr(given, "wait_for_ready", None),
            getattr(given, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        request = with_request_id(request)
        request_id = getattr(request, "request_id", None) or None
        timeout = client_call_details.timeout
        # One deadline for the whole call, retries included: the caller's budget is what
        # matters to them, not the budget of each attempt.
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        attempt = 0
        while True:
            details = self._details(client_call_details, max(0.0, deadline - time.monotonic()))
            outcome = continuation(details, request)
            err = outcome.exception()
            if err is None:
                return outcome
            if not isinstance(err, grpc.RpcError):
                raise err  # a local failure (closed channel, bad serialisation), not an RPC
            if err.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.max_retries:  # type: ignore[attr-defined]
                delay = backoff_delay(attempt, self.initial_backoff, self.max_backoff)
                if time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    attempt += 1
                    continue
            raise BillingError.from_rpc_error(err, request_id=request_id) from err

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        details = self._details(client_call_details, client_call_details.timeout)
        outcome = continuation(details, request_iterator)
        err = outcome.exception()
        if err is None:
            return outcome
        if not isinstance(err, grpc.RpcError):
            raise err
        raise BillingError.from_rpc_error(err) from err

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        details = self._details(client_call_details, client_call_details.timeout)
        return _DecodedStream(continuation(details, with_request_id(request)))

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        details = self._details(client_call_details, client_call_details.timeout)
        return _DecodedStream(continuation(details, request_iterator))
