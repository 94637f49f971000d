"""CheckEntitlement and ListEntitlements: the rules on domain values, never a write.

Fast path (called on every backend request): the account ref is resolved once per server and
kept (a principal's account never changes and accounts are never deleted); then one statement
reads the holdings with their entitlements (`repository.held_prices`), and a metered feature
adds its usage total (the metric by primary key, then the aggregate through the usage index), a
credit-backed one its balance row. `as_of` is taken before the first read: every change
committed before it is seen by the reads that follow.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.service import resolve
from tollbooth.amounts import ZERO, fmt
from tollbooth.auth.caller import Caller
from tollbooth.credit.queries import compute_balance
from tollbooth.entitlements import repository
from tollbooth.entitlements.grants import Grant, Kind, grants
from tollbooth.paging import Keyset, Text
from tollbooth.usage.service import metric_total

FEATURE_LIMIT = 100


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


def caller_key(caller: Caller) -> str:
    """What of the caller decides an answer: its own account for a bearer, else nothing."""
    return f"bearer:{caller.account_id}" if caller.is_bearer else "service"


class AccountRefs:
    """Account id of every (caller, ref) already resolved by this server (hits only); one per
    servicer, so per database."""

    def __init__(self, max_size: int = 100_000) -> None:
        self._known: dict[tuple[str, str], str] = {}
        self._max = max_size
        self._lock = threading.Lock()

    def account_id(self, session: Session, caller: Caller, ref: str) -> str:
        key = (caller_key(caller), ref.strip())
        found = self._known.get(key)
        if found is None:
            found = resolve(session, caller, ref).id
            with self._lock:
                if len(self._known) >= self._max:
                    self._known.clear()
                self._known[key] = found
        return found


def _feature(raw: str) -> str:
    feature = raw.strip()
    if not feature:
        raise errors.required("feature")
    if len(feature) > FEATURE_LIMIT:
        raise errors.invalid(f"feature is longer than {FEATURE_LIMIT} characters", field="feature")
    return feature


def _answer(session: Session, account_id: str, grant: Grant, now: dt.datetime) -> Answer:
    if grant.kind is Kind.METERED:
        assert grant.period is not None
        used = metric_total(session, account_id, grant.metric, *grant.period)
        if used is None:  # the metric does not exist: nothing can be counted, nothing allowed
            return Answer(account_id, grant.feature, grant.kind, False, now, grant, "", "")
        left = grant.limit - Decimal(used)
        return Answer(
            account_id,
            grant.feature,
            grant.kind,
            left > 0,
            now,
            grant,
            used=used,
            remaining=fmt(max(left, ZERO)),
        )
    if grant.kind is Kind.CREDIT:
        available, _ = compute_balance(session, account_id, grant.credit_type, now)
        return Answer(
            account_id,
            grant.feature,
            grant.kind,
            available >= grant.amount,
            now,
            grant,
            balance=fmt(available),
        )
    return Answer(account_id, grant.feature, grant.kind, True, now, grant)


def check(
    session: Session,
    accounts: AccountRefs,
    caller: Caller,
    account_ref: str,
    feature: str,
    now: dt.datetime,
) -> Answer:
    feature = _feature(feature)
    account_id = accounts.account_id(session, caller, account_ref)
    grant = grants(repository.held_prices(session, account_id), now).get(feature)
    if grant is None:
        return Answer(account_id, feature, None, False, now)
    return _answer(session, account_id, grant, now)


def list_all(
    session: Session,
    accounts: AccountRefs,
    caller: Caller,
    account_ref: str,
    now: dt.datetime,
    page_size: int = 0,
    page_token: str = "",
) -> tuple[list[Answer], str]:
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
    held = sorted(
        grants(repository.held_prices(session, account_id), now).values(), key=lambda g: g.feature
    )
    if after is not None:
        held = [g for g in held if g.feature > after[0]]
    page = keyset.page(held[: keyset.limit])
    return [_answer(session, account_id, g, now) for g in page.items], page.next_page_token
