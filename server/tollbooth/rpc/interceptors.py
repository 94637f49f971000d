"""Three interceptors, outermost first: request log, domain errors -> status, auth; and
`Chain`, which runs a server's interceptors once per method rather than once per call.

Every interceptor reads a call's metadata from its context when the call runs (never from the
`HandlerCallDetails` it wrapped the handler for), so a handler wrapped once serves every later
call of its method: `Chain` keeps the wrapped unary handler per method."""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from sqlalchemy import exc as sa_exc

from tollbooth import deadline, metrics
from tollbooth.auth.caller import ANONYMOUS, Authenticator, AuthRequirement, current_caller
from tollbooth.db import is_lost_connection, is_read_only
from tollbooth.errors import DomainError, Kind, permission_denied, unauthenticated
from tollbooth.logs import request_id_var
from tollbooth.rpc.edge import parsed_request
from tollbooth.rpc.rules import PUBLIC_PREFIXES
from tollbooth.rpc.status import internal_status, to_grpc_status

log = logging.getLogger("tollbooth.rpc")

__all__ = [
    "AuthInterceptor",
    "Chain",
    "ErrorInterceptor",
    "LoggingInterceptor",
    "new_request_id",
    "request_id_var",
]
# Per-call facts the inner interceptors learn (the caller) for the outer log line.
call_facts_var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "call_facts", default=None
)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
# Methods whose wrapped handlers `Chain` keeps (the contract's, health and reflection are far
# fewer; a name nobody serves has no handler and is never kept).
CHAIN_KEPT = 4096

Behavior = Callable[[Any, grpc.ServicerContext], Any]
Wrapper = Callable[[Behavior, bool, str], Behavior]


class _RequestIds:
    """Request ids for calls that bring none: 32 hex digits, a random prefix drawn once per
    process (again in a forked child) and a counter, so unique without a random draw per call
    (what `uuid.uuid4().hex` cost). `next` on an `itertools.count` is one step under the GIL:
    no two threads get the same number."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = secrets.token_hex(10)  # 20 hex digits
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


new_request_id = _RequestIds()


def _wrap_handler(
    handler: grpc.RpcMethodHandler, method: str, wrapper: Wrapper
) -> grpc.RpcMethodHandler:
    """Apply `wrapper` to whichever behaviour the handler carries."""
    for attr, streams_out in (
        ("unary_unary", False),
        ("unary_stream", True),
        ("stream_unary", False),
        ("stream_stream", True),
    ):
        behavior = getattr(handler, attr)
        if behavior is not None:
            return handler._replace(**{attr: wrapper(behavior, streams_out, method)})  # type: ignore[attr-defined]
    return handler


class Chain(grpc.ServerInterceptor):
    """`interceptors` (outermost first), run as grpcio runs them, but a unary handler they
    return is kept per method and given to the method's later calls without running them
    again (grpcio runs every interceptor's `intercept_service` on every call, each wrapping the
    handler anew). Only for interceptors that take nothing from a call's `HandlerCallDetails`
    but its method (ours read the metadata from the context); a streaming handler is wrapped
    per call, as before (the stream guard keeps per-call state in it)."""

    def __init__(self, interceptors: Sequence[grpc.ServerInterceptor]) -> None:
        self._interceptors = tuple(interceptors)
        self._kept: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        method = handler_call_details.method
        kept = self._kept.get(method)
        inner = continuation(handler_call_details)
        if kept is not None and kept[0] is inner:
            return kept[1]
        if inner is None:
            return None
        wrapped = self._run(0, inner, handler_call_details)
        streaming = inner.request_streaming or inner.response_streaming
        if not streaming and (method in self._kept or len(self._kept) < CHAIN_KEPT):
            self._kept[method] = (inner, wrapped)
        return wrapped

    def _run(self, index: int, inner: grpc.RpcMethodHandler, details: Any) -> Any:
        if index == len(self._interceptors):
            return inner
        return self._interceptors[index].intercept_service(
            lambda d: self._run(index + 1, inner, d), details
        )


def _is_abort(exc: BaseException) -> bool:
    # grpc's context.abort() raises a bare Exception() once the status is set.
    return type(exc) is Exception and not exc.args


def _meta(metadata: tuple, key: str) -> str | None:
    for item in metadata or ():
        if item.key == key:
            return item.value if isinstance(item.value, str) else None
    return None


def _one_credential_each(metadata: tuple) -> None:
    """A credential header sent twice is ambiguous (which one is the caller?): refused, whichever
    comes first and whether or not either is valid, never decided by its order."""
    keys = sum(1 for item in metadata or () if item.key == "x-api-key")
    tokens = sum(1 for item in metadata or () if item.key == "authorization")
    if keys > 1:
        raise unauthenticated("SERVICE_KEY_INVALID", "send one x-api-key header, not several")
    if tokens > 1:
        raise unauthenticated("TOKEN_INVALID", "send one authorization header, not several")


class _Base(grpc.ServerInterceptor):
    def _wrap(self, behavior: Behavior, streams_out: bool, method: str) -> Behavior:
        raise NotImplementedError

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _wrap_handler(handler, handler_call_details.method, self._wrap)


def _around(
    behavior: Behavior,
    streams_out: bool,
    before: Callable[[grpc.ServicerContext], Any],
    on_error: Callable[[BaseException, grpc.ServicerContext], None],
    after: Callable[[Any, grpc.ServicerContext], None],
) -> Behavior:
    """Run before/after/on_error around a call; for streamed responses, around the iteration."""

    if not streams_out:

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            state = before(context)
            try:
                return behavior(request, context)
            except BaseException as exc:
                on_error(exc, context)
                raise
            finally:
                after(state, context)

        return unary

    def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        state = before(context)
        try:
            yield from behavior(request, context)
        except BaseException as exc:
            on_error(exc, context)
            raise
        finally:
            after(state, context)

    return streaming


class LoggingInterceptor(_Base):
    """One structured line per RPC, with a request id (from x-request-id or new), and the
    RPC metrics (count and latency by method and code)."""

    def _wrap(self, behavior, streams_out, method):  # type: ignore[no-untyped-def]
        # Envoy's active health checks call Check every 2 s per replica: not worth a line.
        level = logging.DEBUG if method.startswith(HEALTH_PREFIX) else logging.INFO

        def before(context):  # type: ignore[no-untyped-def]
            rid = _meta(context.invocation_metadata(), "x-request-id") or new_request_id()
            facts: dict[str, Any] = {}
            tokens = (request_id_var.set(rid), call_facts_var.set(facts))
            return (tokens, rid, facts, time.perf_counter())

        def after(state, context):  # type: ignore[no-untyped-def]
            tokens, rid, facts, started = state
            code = context.code() or grpc.StatusCode.OK
            code_name = code.name if hasattr(code, "name") else str(code)
            seconds = time.perf_counter() - started
            metrics.observe_rpc(method, code_name, seconds)
            if log.isEnabledFor(level):
                caller = facts.get("caller", ANONYMOUS)
                log.log(
                    level,
                    "rpc",
                    extra={
                        "event": "rpc",
                        "method": method,
                        "request_id": rid,
                        "code": code_name,
                        "caller": caller.kind,
                        "account": caller.account_id,
                        "ms": round(seconds * 1000, 2),
                    },
                )
            call_facts_var.reset(tokens[1])
            request_id_var.reset(tokens[0])

        return _around(behavior, streams_out, before, lambda e, c: None, after)


# The database could not be reached or dropped the connection. Usually nothing committed, but
# not always: a connection lost after COMMIT was sent may have committed the write (a debit)
# and still answers UNAVAILABLE. Asking again with the same request_id is safe either way: a
# write that committed committed its request_id's stored answer with it, which the retry gets
# back; one that did not runs once. So the client's retry on UNAVAILABLE is right. Usage ingest
# has no request_id: there each event's unique_id plays that part. A connection lost under another
# error class (PostgreSQL ending an idle transaction's session: InternalError) is the same case
# (`tollbooth.db.is_lost_connection`).
DATABASE_DOWN = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)

DATABASE_UNAVAILABLE = DomainError(
    Kind.UNAVAILABLE,
    "SERVICE_UNAVAILABLE",
    "the billing database is unavailable; retry with the same request_id",
)
# Usage ingest takes no request_id: each event's unique_id is what makes its retry count once.
EVENTS_UNAVAILABLE = DomainError(
    Kind.UNAVAILABLE,
    "SERVICE_UNAVAILABLE",
    "the billing database is unavailable; send the events again with the same unique_id",
)
# SQLSTATE 25006 (read_only_sql_transaction): the database takes no writes (a hot standby, a
# failover not yet followed, default_transaction_read_only set for maintenance). An outage to
# retry, not a bug: nothing was written. `tollbooth.db` also retires the connection, so a URL
# listing several hosts (target_session_attrs=read-write) finds the new primary.
DATABASE_READ_ONLY = DomainError(
    Kind.UNAVAILABLE,
    "DATABASE_READ_ONLY",
    "the billing database is read-only for now; nothing was written: retry with the same"
    " request_id (events: the same unique_id)",
)
_RETRY_BY_UNIQUE_ID = frozenset(
    f"/billing.v1.UsageService/{rpc}" for rpc in ("IngestEvent", "IngestEvents", "StreamEvents")
)


# How a domain error's outage message (the provider's) tells the caller to retry safely.
SAME_REQUEST_ID = "retry with the same request_id"


def retry_advice(exc: DomainError, request: Any) -> DomainError:
    """`exc` with a message true for `request`: "retry with the same request_id" only when it
    carried one; without one, "retry, with a request_id to make retries safe" (the request
    has the field) or "retry" (it has none). Reason, metadata and retry info unchanged."""
    if SAME_REQUEST_ID not in exc.message or request is None:
        return exc
    given = getattr(request, "request_id", None)
    if given:
        return exc
    how = "retry" if given is None else "retry, with a request_id to make retries safe"
    advised = DomainError(
        exc.kind, exc.reason, exc.message.replace(SAME_REQUEST_ID, how), **exc.metadata
    )
    advised.retry_after_sec, advised.headers = exc.retry_after_sec, exc.headers
    return advised


class ErrorInterceptor(_Base):
    """Domain errors become google.rpc.Status with ErrorInfo; a database outage is UNAVAILABLE;
    anything else is INTERNAL. A unary answer's provider calls get the caller's time budget
    (`tollbooth.deadline`), so their UNAVAILABLE reaches the caller before its deadline."""

    def __init__(self, provider_budget_sec: float = 25.0) -> None:
        self._budget = provider_budget_sec

    def _wrap(self, behavior, streams_out, method):  # type: ignore[no-untyped-def]
        def on_error(exc, context, request=None):  # type: ignore[no-untyped-def]
            if isinstance(exc, DomainError):
                context.abort_with_status(to_grpc_status(retry_advice(exc, request)))
            if _is_abort(exc) or isinstance(exc, GeneratorExit):
                return
            if isinstance(exc, grpc.RpcError) and not context.is_active():
                # The client cancelled (or its deadline passed) while we read its request
                # stream: nobody is left to answer, and it is not our fault.
                log.info("client went away during %s (request %s)", method, request_id_var.get())
                return
            if is_read_only(exc):
                log.warning("database read-only in %s (request %s)", method, request_id_var.get())
                context.abort_with_status(to_grpc_status(DATABASE_READ_ONLY))
            if isinstance(exc, DATABASE_DOWN) or is_lost_connection(exc):
                log.warning(
                    "database unavailable in %s (request %s): %s",
                    method,
                    request_id_var.get(),
                    type(exc).__name__,
                )
                down = EVENTS_UNAVAILABLE if method in _RETRY_BY_UNIQUE_ID else DATABASE_UNAVAILABLE
                context.abort_with_status(to_grpc_status(down))
            log.exception("unhandled error in %s (request %s)", method, request_id_var.get())
            context.abort_with_status(internal_status())

        if streams_out:
            return _around(behavior, streams_out, lambda c: None, on_error, lambda s, c: None)

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            parsed = parsed_request.set(None)  # set by the edge once the bytes parse
            try:
                with deadline.budget(context.time_remaining(), self._budget):
                    return behavior(request, context)
            except BaseException as exc:
                on_error(exc, context, parsed_request.get())
                raise
            finally:
                parsed_request.reset(parsed)

        return unary


class AuthInterceptor(_Base):
    """Applies the method's declared requirement before any handler runs, built or not."""

    def __init__(self, authenticator: Authenticator, rules: dict[str, AuthRequirement]) -> None:
        self._auth = authenticator
        self._rules = rules

    def _wrap(self, behavior, streams_out, method):  # type: ignore[no-untyped-def]
        if method.startswith(PUBLIC_PREFIXES):
            return behavior
        rule = self._rules.get(method)

        def before(context):  # type: ignore[no-untyped-def]
            if rule is None:
                raise permission_denied("OPERATION_NOT_PERMITTED", "method has no auth rule")
            metadata = context.invocation_metadata()
            _one_credential_each(metadata)
            caller = self._auth.authenticate(
                rule,
                _meta(metadata, "x-api-key"),
                _meta(metadata, "authorization"),
                surface=_meta(metadata, "x-billing-surface"),
            )
            facts = call_facts_var.get()
            if facts is not None:
                facts["caller"] = caller
            return current_caller.set(caller)

        def after(token, context):  # type: ignore[no-untyped-def]
            if token is not None:
                current_caller.reset(token)

        # `before` runs inside the call, so authentication failures reach the error
        # interceptor (which wraps this one) as domain errors.
        return _around(behavior, streams_out, before, lambda e, c: None, after)
