"""Three interceptors, outermost first: request log, domain errors -> status, auth."""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from sqlalchemy import exc as sa_exc

from tollbooth import metrics
from tollbooth.auth.caller import ANONYMOUS, Authenticator, AuthRequirement, current_caller
from tollbooth.errors import DomainError, Kind, permission_denied
from tollbooth.logs import request_id_var
from tollbooth.rpc.rules import PUBLIC_PREFIXES
from tollbooth.rpc.status import internal_status, to_grpc_status

log = logging.getLogger("tollbooth.rpc")

__all__ = ["AuthInterceptor", "ErrorInterceptor", "LoggingInterceptor", "request_id_var"]
# Per-call facts the inner interceptors learn (the caller) for the outer log line.
call_facts_var: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "call_facts", default=None
)

HEALTH_PREFIX = "/grpc.health.v1.Health/"

Behavior = Callable[[Any, grpc.ServicerContext], Any]
Wrapper = Callable[[Behavior, bool, str, tuple], Behavior]


def _wrap_handler(
    handler: grpc.RpcMethodHandler, method: str, metadata: tuple, wrapper: Wrapper
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
            return handler._replace(**{attr: wrapper(behavior, streams_out, method, metadata)})  # type: ignore[attr-defined]
    return handler


def _is_abort(exc: BaseException) -> bool:
    # grpc's context.abort() raises a bare Exception() once the status is set.
    return type(exc) is Exception and not exc.args


def _meta(metadata: tuple, key: str) -> str | None:
    for item in metadata or ():
        if item.key == key:
            return item.value if isinstance(item.value, str) else None
    return None


class _Base(grpc.ServerInterceptor):
    def _wrap(
        self, behavior: Behavior, streams_out: bool, method: str, metadata: tuple
    ) -> Behavior:
        raise NotImplementedError

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _wrap_handler(
            handler,
            handler_call_details.method,
            handler_call_details.invocation_metadata,
            self._wrap,
        )


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

    def _wrap(self, behavior, streams_out, method, metadata):  # type: ignore[no-untyped-def]
        def before(context):  # type: ignore[no-untyped-def]
            rid = _meta(metadata, "x-request-id") or uuid.uuid4().hex
            facts: dict[str, Any] = {}
            tokens = (request_id_var.set(rid), call_facts_var.set(facts))
            return (tokens, rid, facts, time.perf_counter())

        def after(state, context):  # type: ignore[no-untyped-def]
            tokens, rid, facts, started = state
            code = context.code() or grpc.StatusCode.OK
            code_name = code.name if hasattr(code, "name") else str(code)
            seconds = time.perf_counter() - started
            metrics.observe_rpc(method, code_name, seconds)
            caller = facts.get("caller", ANONYMOUS)
            # Envoy's active health checks call Check every 2 s per replica: not worth a line.
            level = logging.DEBUG if method.startswith(HEALTH_PREFIX) else logging.INFO
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
# back; one that did not runs once. So the client's retry on UNAVAILABLE is right.
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


class ErrorInterceptor(_Base):
    """Domain errors become google.rpc.Status with ErrorInfo; a database outage is UNAVAILABLE;
    anything else is INTERNAL."""

    def _wrap(self, behavior, streams_out, method, metadata):  # type: ignore[no-untyped-def]
        def on_error(exc, context):  # type: ignore[no-untyped-def]
            if isinstance(exc, DomainError):
                context.abort_with_status(to_grpc_status(exc))
            if _is_abort(exc) or isinstance(exc, GeneratorExit):
                return
            if isinstance(exc, grpc.RpcError) and not context.is_active():
                # The client cancelled (or its deadline passed) while we read its request
                # stream: nobody is left to answer, and it is not our fault.
                log.info("client went away during %s (request %s)", method, request_id_var.get())
                return
            if isinstance(exc, DATABASE_DOWN):
                log.warning(
                    "database unavailable in %s (request %s): %s",
                    method,
                    request_id_var.get(),
                    type(exc).__name__,
                )
                context.abort_with_status(to_grpc_status(DATABASE_UNAVAILABLE))
            log.exception("unhandled error in %s (request %s)", method, request_id_var.get())
            context.abort_with_status(internal_status())

        return _around(behavior, streams_out, lambda c: None, on_error, lambda s, c: None)


class AuthInterceptor(_Base):
    """Applies the method's declared requirement before any handler runs, built or not."""

    def __init__(self, authenticator: Authenticator, rules: dict[str, AuthRequirement]) -> None:
        self._auth = authenticator
        self._rules = rules

    def _wrap(self, behavior, streams_out, method, metadata):  # type: ignore[no-untyped-def]
        if method.startswith(PUBLIC_PREFIXES):
            return behavior
        rule = self._rules.get(method)

        def before(context):  # type: ignore[no-untyped-def]
            if rule is None:
                raise permission_denied("OPERATION_NOT_PERMITTED", "method has no auth rule")
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
