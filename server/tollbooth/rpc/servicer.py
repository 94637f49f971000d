"""Servicer base: one transaction per RPC, request_id idempotency, unbuilt RPCs.

Servicers are proto in, proto out: they open the transaction here and call the domain
services, which flush and never commit.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cache
from typing import Any, ClassVar, TypeVar

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from tollbooth import errors, idempotency
from tollbooth.auth.caller import Caller, current_caller
from tollbooth.deps import Deps
from tollbooth.errors import not_implemented
from tollbooth.rpc import fingerprint

R = TypeVar("R", bound=Message)
M = TypeVar("M", bound=Message)


def idempotency_scope(caller: Caller, request: Message) -> str:
    """A key belongs to its caller (one account, or the backends) and to one request type."""
    owner = f"acct:{caller.account_id}" if caller.is_bearer else "service"
    return f"{owner}|{request.DESCRIPTOR.name}"


def request_fingerprint(request: Message) -> str:
    """Parameters that make two calls "the same request": what the request means, less its
    request_id (`rpc/fingerprint.py`: masks as sets, decimal amounts in their plain form,
    unknown fields dropped), with the fingerprint keys stored before that may hold."""
    return fingerprint.fingerprint(request)


def canonical_currency(request: M) -> M:
    """A copy of `request` with its `currency` as the domain takes it (stripped, lower case:
    `USD` is `usd`), so that two spellings of one currency are one request under a
    request_id (`Servicer.staged`'s `same_as`)."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.currency = request.currency.strip().lower()  # type: ignore[attr-defined]
    return copy


@cache
def requires_request_id(descriptor: Descriptor) -> bool:
    """Whether the contract marks the request's `request_id` REQUIRED (every mutating RPC but
    those whose seed request shapes send none; README "Idempotency" lists them)."""
    field = descriptor.fields_by_name.get("request_id")
    if field is None:
        return False
    behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.REQUIRED in behaviors


class Servicer:
    """Base of every contract servicer."""

    # Set by @contract.
    service_descriptor: ClassVar[ServiceDescriptor]
    unbuilt_methods: ClassVar[tuple[str, ...]] = ()

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def read(self) -> AbstractContextManager[Session]:
        """A read-only transaction."""
        return self.deps.db.transaction(readonly=True)

    def write(
        self,
        request: Message,
        response_type: type[R],
        effect: Callable[[Session], R],
        *,
        require_request_id: bool = False,
    ) -> R:
        """Run `effect` in one transaction, at most once per request_id.

        With a request_id, a replay returns the first call's response as it was (not a re-read
        of the rows as they are now); the same key with other parameters is refused. A request
        whose contract marks request_id REQUIRED is refused without one (FIELD_REQUIRED).
        """
        key = getattr(request, "request_id", "")
        # A key of spaces is missing where one is required (elsewhere `claim` refuses it).
        if not key.strip() and (require_request_id or requires_request_id(request.DESCRIPTOR)):
            raise errors.required("request_id")
        with self.deps.db.transaction() as session:
            if not key:
                return effect(session)
            scope = idempotency_scope(current_caller.get(), request)
            claim = idempotency.claim(session, scope, key, request_fingerprint(request))
            if not claim.fresh:
                assert claim.response is not None
                return response_type.FromString(claim.response)
            response = effect(session)
            idempotency.complete(
                session, scope, key, response.SerializeToString(deterministic=True)
            )
            return response

    def staged(
        self,
        request: Message,
        response_type: type[R],
        effect: Callable[[], R],
        *,
        same_as: Message | None = None,
        equivalent: Callable[[bytes], bool] | None = None,
    ) -> R:
        """Run `effect`, which opens its own short transactions (an operation that calls the
        payment provider between them), at most once per request_id.

        `same_as`: the request in the canonical form its fingerprint is taken from, when two
        spellings are one request (`canonical_currency`); `request` itself by default.
        `equivalent`: asked, with the stored response, when the key was stored for other
        parameters; True when the two requests mean the same (the stored response answers the
        intent this request asks for: a price by lookup key or by id), so it is this
        request's too. Not "this request's own intent matches": a concurrent twin may have
        been answered another intent (an open checkout it asked for exactly) while this
        request recorded its own under the key.

        A stored response is replayed and a reused key with other parameters refused before
        anything runs; the key is claimed and the response stored in one transaction after the
        effect. The effect must itself be safe to repeat with the same request_id (intents with
        deterministic ids and provider idempotency keys); if a concurrent twin stored its
        response first, that one is returned.
        """
        key = getattr(request, "request_id", "")
        if not key:
            return effect()
        scope = idempotency_scope(current_caller.get(), request)
        fingerprint = request_fingerprint(same_as if same_as is not None else request)
        replay = self._stored(scope, key, fingerprint, equivalent)
        if replay is not None:
            return response_type.FromString(replay)
        response = effect()
        with self.deps.db.transaction() as session:
            row = idempotency.claim_or_row(session, scope, key, fingerprint)
            # A row claimed for this request and not answered: the effect claimed the key
            # before acting (a checkout answered an open session), this completes it.
            if row is None or idempotency.claimable(row, fingerprint):
                idempotency.complete(
                    session, scope, key, response.SerializeToString(deterministic=True)
                )
                return response
        # A concurrent twin, or a variant of this request, stored its response first.
        replay = self._stored(scope, key, fingerprint, equivalent)
        if replay is None:
            raise errors.failed_precondition(
                "FAILED_PRECONDITION", "a request with this request_id is still in progress"
            )
        return response_type.FromString(replay)

    def _stored(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        equivalent: Callable[[bytes], bool] | None,
    ) -> bytes | None:
        """The response stored under the key for this request (None: unused); one stored for
        other parameters when `equivalent(response)` finds the two the same, else
        IDEMPOTENCY_KEY_REUSED. `equivalent` runs with no transaction open here."""
        with self.deps.db.transaction(readonly=True) as session:
            try:
                return idempotency.stored(session, scope, key, fingerprint)
            except errors.DomainError as exc:
                if equivalent is None or exc.reason != "IDEMPOTENCY_KEY_REUSED":
                    raise
                refusal = exc
            other = idempotency.stored(session, scope, key, None)
        if other is None or not equivalent(other):
            raise refusal
        return other


def _unbuilt(full_name: str) -> Any:
    def method(self: Any, request: Any, context: Any) -> Any:
        raise not_implemented(full_name)

    method.__name__ = full_name.rsplit(".", 1)[-1]
    method.__unbuilt__ = True  # type: ignore[attr-defined]
    return method


def contract(service: ServiceDescriptor):  # type: ignore[no-untyped-def]
    """Class decorator: every RPC of `service` the class does not define answers UNIMPLEMENTED."""

    def apply(cls: type) -> type:
        unbuilt = []
        for method in service.methods:
            if not any(
                method.name in vars(k) for k in cls.__mro__ if k.__module__.startswith("tollbooth.")
            ):
                setattr(cls, method.name, _unbuilt(method.full_name))
                unbuilt.append(method.name)
        cls.unbuilt_methods = tuple(unbuilt)  # type: ignore[attr-defined]
        cls.service_descriptor = service  # type: ignore[attr-defined]
        return cls

    return apply
