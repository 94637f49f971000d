"""Rate limits per caller and per operation class, with the `limits` library.

Every contract method falls in classes (`method_classes`, from the descriptors at start):

- `session_creates`: creating a checkout, portal or payment session/intent (a provider call
  each), counted per billing account (BILLING_RATE_LIMIT_SESSION_CREATES, 20/minute);
- `customer_creates` / `customer_queries`: the customer operations (CheckoutService and any
  payment service), counted per backend key (seed 003: 1000/hour and 5000/hour);
- `key`: every call made with a backend key, per key (the general ceiling);
- `account`: every call made with a bearer token, per account (the general ceiling).

A replay (a `request_id` already answered, for the same request: `rpc/replays.py`) is
neither counted in nor refused by the operation's own classes (`session_creates`,
`customer_creates`, `customer_queries`): it creates nothing, and is answered as stored. The
general ceilings count it as any call.

A call over any of its limits is refused before its handler runs (nothing done) with
RESOURCE_EXHAUSTED, reason RATE_LIMITED, a RetryInfo detail and the `retry-after`,
`ratelimit-policy` and `ratelimit` metadata, which Envoy sends as HTTP headers with the 429.

The counters live in a storage every replica shares: by default the service's own database
(`ratestore.DatabaseStorage`, so `make run` needs nothing else), or any `limits` storage URI
(`redis://…`) in BILLING_RATE_LIMIT_STORAGE.

The general ceilings (`key`, `account`) are counted on every call, so with the database storage
a process takes them in leases (`Leases`): one upsert adds a batch of 1/100 of the ceiling
(at least 1, at most 100) to the shared counter, and the process admits that many calls from
memory until the batch or the counter's window runs out. The shared counter counts every
leased call, so across every process and replica at most the ceiling is admitted per window;
an unused lease only makes the others refuse earlier, by at most one batch per process.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import grpc
from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import select

from tollbooth.auth.caller import current_caller
from tollbooth.config import LimitSettings
from tollbooth.db import Database
from tollbooth.db.models import BillingAccount
from tollbooth.errors import DomainError, Kind
from tollbooth.rpc.edge import message_class
from tollbooth.rpc.ratestore import DatabaseStorage
from tollbooth.rpc.replays import Replays, Verdict
from tollbooth.rpc.rules import contract_services, method_path

log = logging.getLogger("tollbooth.ratelimit")

# Services whose methods are "customer operations" (seed 003's per-key hourly limits).
CUSTOMER_SERVICES = (
    "billing.v1.CheckoutService",
    "billing.v1.PaymentService",
    "billing.v1.CustomerService",
)
SESSION_CREATE = re.compile(r"^Create\w*(Session|Intent)$")
CLASSES = ("session_creates", "customer_creates", "customer_queries", "key", "account")
# The operation's own classes, which a replay is not charged to (the general ones count it).
REPLAY_FREE = frozenset({"session_creates", "customer_creates", "customer_queries"})


@dataclass(frozen=True)
class Limit:
    name: str  # the class
    item: RateLimitItem

    @property
    def window_sec(self) -> int:
        return int(self.item.get_expiry())


def parse_limit(text: str) -> RateLimitItem | None:
    """`20/minute`, `1000 per hour`…; `off` turns the class off (the settings checked it)."""
    return None if text.strip().lower() in ("", "off") else parse(text)


def method_classes() -> dict[str, tuple[str, ...]]:
    """Method path -> the classes it counts in (besides the general `key`/`account`)."""
    table: dict[str, tuple[str, ...]] = {}
    for service in contract_services():
        for method in service.methods:
            classes: list[str] = []
            if SESSION_CREATE.match(method.name):
                classes.append("session_creates")
            if service.full_name in CUSTOMER_SERVICES or SESSION_CREATE.match(method.name):
                create = method.name.startswith("Create")
                classes.append("customer_creates" if create else "customer_queries")
            table[method_path(service, method.name)] = tuple(classes)
    return table


def open_storage(uri: str, database: Database) -> Storage:
    """The configured storage: empty means the service's own database."""
    if not uri:
        return DatabaseStorage(database=database)
    storage = storage_from_string(uri)
    if not isinstance(storage, Storage):
        raise ValueError("BILLING_RATE_LIMIT_STORAGE must name a synchronous storage")
    return storage


@lru_cache(maxsize=256)
def key_identity(api_key: str | None) -> str:
    """A backend key as the counters name it (a digest: no secret is ever stored). Kept per
    key: only keys the auth interceptor accepted (or none) reach the limiter, so few."""
    return hashlib.sha256((api_key or "").encode()).hexdigest()[:20]


class RateLimited(DomainError):
    def __init__(self, limit: Limit, retry_after: int, remaining: int) -> None:
        super().__init__(
            Kind.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
            f"too many calls of class {limit.name!r}: at most {limit.item.amount} per "
            f"{limit.window_sec} s; retry after {retry_after} s",
            limit=limit.name,
            retry_after_sec=retry_after,
        )
        self.retry_after_sec = retry_after
        self.headers = (
            ("retry-after", str(retry_after)),
            ("ratelimit-policy", f'"{limit.name}";q={limit.item.amount};w={limit.window_sec}'),
            ("ratelimit", f'"{limit.name}";r={remaining};t={retry_after}'),
        )


LEASED_CLASSES = ("key", "account")
LEASE_DIVISOR = 100
LEASE_MAX = 100
# Leases kept before the ended ones are dropped.
LEASES_KEPT = 10_000


def lease_size(item: RateLimitItem) -> int:
    """Calls one lease admits: 1/100 of the ceiling, within 1..100."""
    return max(1, min(LEASE_MAX, item.amount // LEASE_DIVISOR))


class Leases:
    """Calls admitted from memory, taken from the shared counter a batch at a time."""

    def __init__(self, storage: DatabaseStorage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, int]] = {}  # key -> (calls left, window end ms)

    def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        key = item.key_for(*identifiers)
        with self._lock:
            left, ends = self._held.get(key, (0, 0))
            if ends > time.time_ns() // 1_000_000:
                if left > 0:
                    self._held[key] = (left - 1, ends)
                    return True
                if left < 0:  # the window is used up: refused until it ends
                    return False
        batch = lease_size(item)
        count, ends = self._storage.incr_window(key, item.get_expiry(), batch)
        # What of this batch fits under the ceiling (the counter had count - batch before).
        granted = min(batch, item.amount - (count - batch))
        with self._lock:
            left, held_ends = self._held.get(key, (0, 0))
            left = max(0, left) if held_ends == ends else 0
            if granted <= 0:
                # The counter only grows in its window: refuse from memory until it ends.
                self._held[key] = (-1 if left == 0 else left, ends)
                return False
            self._held[key] = (left + granted - 1, ends)
            if len(self._held) > LEASES_KEPT:
                now = time.time_ns() // 1_000_000
                self._held = {k: v for k, v in self._held.items() if v[1] > now}
        return True

    def window_end(self, item: RateLimitItem, *identifiers: str) -> float:
        """When the window of the last lease of this key ends (seconds since the epoch)."""
        with self._lock:
            return self._held.get(item.key_for(*identifiers), (0, 0))[1] / 1000


class RateLimiter:
    """Counts a call against each of its limits; raises RateLimited on the first one over."""

    def __init__(self, storage: Storage, limits: dict[str, RateLimitItem | None]) -> None:
        self._limiter = FixedWindowRateLimiter(storage)
        self._limits = {name: Limit(name, item) for name, item in limits.items() if item}
        self._classes = method_classes()
        self._applicable: dict[tuple[str, str], tuple[str, ...]] = {}
        # Leases need the window's end from the storage: the database storage gives it.
        self._leases = Leases(storage) if isinstance(storage, DatabaseStorage) else None

    @classmethod
    def from_settings(cls, settings: LimitSettings, database: Database) -> RateLimiter:
        rates = {name: parse_limit(getattr(settings, f"rate_limit_{name}")) for name in CLASSES}
        return cls(open_storage(settings.rate_limit_storage, database), rates)

    def applicable(self, method: str, caller_kind: str) -> tuple[str, ...]:
        """The limits a call of `method` by a caller of `caller_kind` counts against, in order
        (kept per method and kind: they only depend on the settings)."""
        kept = self._applicable.get((method, caller_kind))
        if kept is None:
            kept = self._applicable[(method, caller_kind)] = self._applicable_now(
                method, caller_kind
            )
        return kept

    def _applicable_now(self, method: str, caller_kind: str) -> tuple[str, ...]:
        names = [*self._classes.get(method, ())]
        if caller_kind == "service":
            names.append("key")
        elif caller_kind == "bearer":
            names = [n for n in names if n == "session_creates"] + ["account"]
        else:
            return ()
        return tuple(n for n in names if n in self._limits)

    def replay_free(self, method: str, caller_kind: str) -> bool:
        """Whether a replay of `method` would be charged less (a class it is free of applies)."""
        return any(name in REPLAY_FREE for name in self.applicable(method, caller_kind))

    def charge(
        self,
        method: str,
        caller_kind: str,
        who: Callable[[str], str],
        *,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        """Count the call in each limit that applies, but those in `skip`."""
        for name in self.applicable(method, caller_kind):
            if name in skip:
                continue
            limit = self._limits[name]
            ident = who(name)
            try:
                if self._leases is not None and name in LEASED_CLASSES:
                    if self._leases.hit(limit.item, name, ident):
                        continue
                    reset_time, remaining = self._leases.window_end(limit.item, name, ident), 0
                elif self._limiter.hit(limit.item, name, ident):
                    continue
                else:
                    stats = self._limiter.get_window_stats(limit.item, name, ident)
                    reset_time, remaining = stats.reset_time, stats.remaining
            except Exception:  # noqa: BLE001 - a storage outage must not stop billing
                log.warning("rate limit storage failed; call let through", exc_info=True)
                return
            retry = max(1, math.ceil(reset_time - time.time()))
            raise RateLimited(limit, retry, remaining)


def _meta(metadata: Iterable[Any], key: str) -> str | None:
    for item in metadata or ():
        if item.key == key and isinstance(item.value, str):
            return str(item.value)
    return None


# Account names resolved to ids that each process remembers (an alias never changes its id).
NAMES_KEPT = 10_000


class AccountNames:
    """The billing account a backend's request names, as the id it is counted under: by id or
    by alias (spaces around it ignored, as the handlers ignore them) or, with no account, by
    its provider customer. So one account is one count however it is named. A name no account
    has is counted as written (the handler refuses it); the environment's own database is
    asked, once per alias (the alias -> id mapping never changes)."""

    def __init__(self, databases: Mapping[str, Database]) -> None:
        self._databases = dict(databases)
        self._default = next(iter(self._databases), "")
        self._ids: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def identity(self, environment: str, account: str, customer: str) -> str:
        """The id of the account named (`account`, else `customer`), or the name itself when no
        account has it; "" when the request names none."""
        account, customer = account.strip(), customer.strip()
        if not account and not customer:
            return ""
        db = self._databases.get(environment or self._default)
        if db is None:
            return account
        if not account:
            return self._lookup(db, BillingAccount.stripe_customer_id == customer) or ""
        kept = self._ids.get((environment, account))
        if kept is not None:
            return kept
        column = BillingAccount.id if account.startswith("acct_") else BillingAccount.principal_id
        found = self._lookup(db, column == account)
        if found is None:
            return account
        with self._lock:
            if len(self._ids) >= NAMES_KEPT:
                self._ids.clear()
            self._ids[(environment, account)] = found
        return found

    @staticmethod
    def _lookup(db: Database, condition: Any) -> str | None:
        try:
            with db.transaction(readonly=True) as session:
                found = session.execute(select(BillingAccount.id).where(condition)).scalar()
        except Exception:  # noqa: BLE001 - the handler reports a database outage itself
            log.warning("account lookup for a rate limit failed", exc_info=True)
            return None
        return None if found is None else str(found)


class RateLimitInterceptor(grpc.ServerInterceptor):
    """Runs inside the auth interceptor (the caller is known) and before the handler. The
    metadata is read from each call's context, so a wrapped handler serves every call of its
    method (`interceptors.Chain` keeps it). `names` turns the account a backend names into the
    id it is counted under (without it, the name as written); `replays` finds the calls that
    replay an answered request_id (without it, every call is charged)."""

    def __init__(
        self,
        limiter: RateLimiter,
        names: AccountNames | None = None,
        replays: Replays | None = None,
    ) -> None:
        self._limiter = limiter
        self._names = names
        self._replays = replays

    def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = continuation(details)
        if handler is None or details.method not in self._limiter._classes:
            return handler
        method, limiter, names, replays = (
            details.method,
            self._limiter,
            self._names,
            self._replays,
        )
        keyed = replays is not None and _has_request_id(method)

        def charge(request: Any, context: grpc.ServicerContext) -> None:
            caller = current_caller.get()
            parsed: list[Any] = []

            def message() -> Any:
                if not parsed:
                    parsed.append(_parse(method, request))
                return parsed[0]

            key = key_identity(_meta(context.invocation_metadata(), "x-api-key"))

            # Accounts of the live environment are counted apart from the test one's (the
            # same alias may name an account in each); test keeps its names as they were.
            apart = f"{caller.environment}:" if caller.environment not in ("", "test") else ""

            def who(name: str) -> str:
                if name == "session_creates":
                    if caller.is_bearer:
                        return f"{apart}account:{caller.account_id}"
                    # A backend names the account in the request (by id, alias or customer:
                    # one account, one count); per key when it names none.
                    account, customer = _named(message())
                    if names is not None:
                        account = names.identity(caller.environment, account, customer)
                    return f"{apart}account:{account}" if account else f"key:{key}"
                if name == "account":
                    return f"{apart}account:{caller.account_id}"
                return f"key:{key}"

            skip: frozenset[str] = frozenset()
            if keyed and replays is not None and limiter.replay_free(method, caller.kind):
                # A replay, or a call the database cannot serve: not the operation's count.
                if replays.verdict(caller, message()) is not Verdict.NEW:
                    skip = REPLAY_FREE
            limiter.charge(method, caller.kind, who, skip=skip)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary(request, context):  # type: ignore[no-untyped-def]
                charge(request, context)
                return inner(request, context)

            return handler._replace(unary_unary=unary)
        for attr in ("unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, attr)
            if behavior is None:
                continue
            streams_out = attr.endswith("_stream")
            return handler._replace(**{attr: _charged(behavior, streams_out, charge)})
        return handler


def _parse(method: str, raw: Any) -> Any:
    """A unary request still in bytes (the edge parses it later) as its message; None when it
    does not parse (the edge refuses it right after). A request of a stream is left as is."""
    if not isinstance(raw, bytes):
        return raw
    input_type = _input_type(method)
    if input_type is None:
        return None
    try:
        return message_class(input_type).FromString(raw)
    except Exception:  # noqa: BLE001 - the edge refuses it right after
        return None


@lru_cache(maxsize=512)
def _input_type(method: str) -> Any:
    service_name, _, name = method.strip("/").partition("/")
    for service in contract_services():
        if service.full_name == service_name and name in service.methods_by_name:
            return service.methods_by_name[name].input_type
    return None


@lru_cache(maxsize=512)
def _has_request_id(method: str) -> bool:
    """Whether the method's request carries a `request_id` (a write idempotent by it)."""
    input_type = _input_type(method)
    return input_type is not None and "request_id" in input_type.fields_by_name


def _named(message: Any) -> tuple[str, str]:
    return (
        # Seed 001's portal body names it `accountId` (CreatePortalSessionRequest.account_id).
        str(getattr(message, "account", "") or getattr(message, "account_id", "") or ""),
        str(getattr(message, "customer", "") or ""),
    )


def _charged(behavior: Any, streams_out: bool, charge: Callable[[Any, Any], None]) -> Any:
    if streams_out:

        def streaming(request, context):  # type: ignore[no-untyped-def]
            charge(request, context)
            yield from behavior(request, context)

        return streaming

    def unary(request, context):  # type: ignore[no-untyped-def]
        charge(request, context)
        return behavior(request, context)

    return unary
