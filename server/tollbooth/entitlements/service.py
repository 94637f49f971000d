"""CheckEntitlement and ListEntitlements: the rules on domain values, never a write.

Fast path (called on every backend request): the account ref is resolved once per server and
kept (a principal's account never changes and accounts are never deleted); the holdings with
their entitlements come from the process's memory (`tollbooth.subscriptions.holdings`, kept per
account, dropped on change; else one statement reads them), and so do the metrics' definitions
(`tollbooth.usage.known_metrics`, reloaded on change). A warm check (`check_warm`) then needs
no session: a boolean feature (or one not held) no statement at all; a metered one one
statement on a pooled connection in autocommit, its usage total through the usage index
(usage is never kept, so a metered answer counts every event committed before the call); a
credit-backed one one statement, its balance (an expiry due: the session path). Otherwise
`check` reads in the RPC's read-only transaction. `as_of` is the holdings' own: for a fresh
read the time taken before it, for kept holdings the time up to which the listener vouches for
them (at most about 1 s old); a metered answer's is no later than its metric definition's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.refs import AccountRefs, caller_key
from tollbooth.amounts import ZERO, fmt
from tollbooth.auth.caller import Caller
from tollbooth.credit.queries import available_now, compute_balance
from tollbooth.db import Database
from tollbooth.entitlements import repository
from tollbooth.entitlements.grants import Grant, Kind, grants
from tollbooth.paging import Keyset, Text
from tollbooth.subscriptions.holdings import AccountHoldings, Holdings
from tollbooth.usage.known_metrics import KnownMetrics
from tollbooth.usage.service import metric_total, pg_total

FEATURE_LIMIT = 100

__all__ = [
    "AccountRefs",
    "Answer",
    "InSession",
    "Warm",
    "caller_key",
    "check",
    "check_warm",
    "list_all",
]


@dataclass(frozen=True)
class Answer:
    """One feature of one account, as CheckEntitlement says it."""

    account_id: str
    feature: str
    kind: Kind | None
    allowed: bool
    as_of: dt.datetime
    grant: Grant | None = None
    used: str = ""
    remaining: str = ""
    balance: str = ""


def feature_name(raw: str) -> str:
    feature = raw.strip()
    if not feature:
        raise errors.required("feature")
    if len(feature) > FEATURE_LIMIT:
        raise errors.invalid(f"feature is longer than {FEATURE_LIMIT} characters", field="feature")
    return feature


class _Cold(Exception):
    """What a warm check needs is not in memory (or an expiry is due): read in a session."""


class Reads(Protocol):
    """Where an answer's figures come from: a session's transaction, or one statement on a
    plain connection (`Warm`)."""

    def used(self, account_id: str, grant: Grant) -> tuple[str | None, dt.datetime | None]:
        """The metric's total over the grant's period (None: no such metric), and how fresh
        its definition is (None: read now, in this transaction)."""
        ...

    def available(self, account_id: str, credit_type: str, now: dt.datetime) -> Decimal: ...


@dataclass(frozen=True)
class InSession:
    """Reads in the RPC's read-only transaction; the metric from memory when kept."""

    session: Session
    metrics: KnownMetrics

    def used(self, account_id: str, grant: Grant) -> tuple[str | None, dt.datetime | None]:
        assert grant.period is not None
        known = self.metrics.get()
        specs = known.specs if known is not None else None
        total = metric_total(self.session, account_id, grant.metric, *grant.period, specs)
        return total, known.as_of if known is not None else None

    def available(self, account_id: str, credit_type: str, now: dt.datetime) -> Decimal:
        return compute_balance(self.session, account_id, credit_type, now)[0]


@dataclass(frozen=True)
class Warm:
    """One statement on a pooled PostgreSQL connection in autocommit, no session: the usage
    total of a metric kept in memory, or a balance whose stored figures are exact now."""

    db: Database
    metrics: KnownMetrics

    def used(self, account_id: str, grant: Grant) -> tuple[str | None, dt.datetime | None]:
        assert grant.period is not None
        known = self.metrics.get()
        if known is None:
            raise _Cold
        spec = known.specs.get(grant.metric)
        if spec is None:
            return None, known.as_of
        return pg_total(self.db, account_id, spec, *grant.period), known.as_of

    def available(self, account_id: str, credit_type: str, now: dt.datetime) -> Decimal:
        available = available_now(self.db, account_id, credit_type, now)
        if available is None:
            raise _Cold
        return available


def _answer(
    reads: Reads, account_id: str, grant: Grant, now: dt.datetime, as_of: dt.datetime
) -> Answer:
    """`now` places the period and the credits' expiry; `as_of` is what the answer says (a
    metered answer: no later than its metric's definition is vouched for)."""
    if grant.kind is Kind.METERED:
        used, defined = reads.used(account_id, grant)
        as_of = min(as_of, defined) if defined is not None else as_of
        if used is None:  # the metric does not exist: nothing can be counted, nothing allowed
            return Answer(account_id, grant.feature, grant.kind, False, as_of, grant, "", "")
        left = grant.limit - Decimal(used)
        return Answer(
            account_id,
            grant.feature,
            grant.kind,
            left > 0,
            as_of,
            grant,
            used=used,
            remaining=fmt(max(left, ZERO)),
        )
    if grant.kind is Kind.CREDIT:
        available = reads.available(account_id, grant.credit_type, now)
        return Answer(
            account_id,
            grant.feature,
            grant.kind,
            available >= grant.amount,
            as_of,
            grant,
            balance=fmt(available),
        )
    return Answer(account_id, grant.feature, grant.kind, True, as_of, grant)


def _decide(
    reads: Reads, account_id: str, held: AccountHoldings, feature: str, now: dt.datetime
) -> Answer:
    """The one rule of both paths: the feature's grant among the holdings, then its figures."""
    grant = grants(repository.held_prices(held), now).get(feature)
    if grant is None:
        return Answer(account_id, feature, None, False, held.as_of)
    return _answer(reads, account_id, grant, now, held.as_of)


def check(
    session: Session,
    metrics: KnownMetrics,
    accounts: AccountRefs,
    holdings: Holdings,
    caller: Caller,
    account_ref: str,
    feature: str,
    now: dt.datetime,
) -> Answer:
    feature = feature_name(feature)
    account_id = accounts.account_id(session, caller, account_ref)
    held = holdings.get(session, account_id, now)
    return _decide(InSession(session, metrics), account_id, held, feature, now)


def check_warm(
    reads: Reads | None,
    accounts: AccountRefs,
    holdings: Holdings,
    caller: Caller,
    account_ref: str,
    feature: str,
    now: dt.datetime,
) -> Answer | None:
    """The answer without a session when memory has what it needs: a known account and its
    holdings kept; then a feature it does not hold or a boolean one takes no statement, a
    metered one whose metric is kept its usage total, a credit-backed one its balance (one
    statement each, through `reads`; None on SQLite). Else None (`check` reads)."""
    account_id = accounts.known(caller, account_ref)
    if account_id is None:
        return None
    held = holdings.cached(account_id)
    if held is None:
        return None
    feature = feature_name(feature)
    try:
        return _decide(reads or _NO_READS, account_id, held, feature, now)
    except _Cold:
        return None


class _NoReads:
    """No statement at all: only what memory answers (SQLite, where nothing is kept)."""

    def used(self, account_id: str, grant: Grant) -> tuple[str | None, dt.datetime | None]:
        raise _Cold

    def available(self, account_id: str, credit_type: str, now: dt.datetime) -> Decimal:
        raise _Cold


_NO_READS = _NoReads()


def list_all(
    session: Session,
    metrics: KnownMetrics,
    accounts: AccountRefs,
    holdings: Holdings,
    caller: Caller,
    account_ref: str,
    now: dt.datetime,
    page_size: int = 0,
    page_token: str = "",
) -> tuple[list[Answer], str, dt.datetime]:
    """One page of the account's features, its next page token, and its as_of (the holdings',
    or an earlier answer's)."""
    account_id = accounts.account_id(session, caller, account_ref)
    keyset: Keyset[Grant] = Keyset.of(
        f"entitlements:{account_id}",
        (Text(),),
        lambda g: (g.feature,),
        page_size,
        default=100,
        maximum=100,
    )
    after = keyset.after(page_token)
    kept = holdings.get(session, account_id, now)
    held = sorted(grants(repository.held_prices(kept), now).values(), key=lambda g: g.feature)
    if after is not None:
        held = [g for g in held if g.feature > after[0]]
    page = keyset.page(held[: keyset.limit])
    reads = InSession(session, metrics)
    answers = [_answer(reads, account_id, g, now, kept.as_of) for g in page.items]
    # The page's: no later than any answer's (a metered one's metric definition may be older).
    return answers, page.next_page_token, min([kept.as_of, *(a.as_of for a in answers)])
