"""CheckEntitlement and ListEntitlements: the rules on domain values, never a write.

Fast path (called on every backend request): the account ref is resolved once per server and
kept (a principal's account never changes and accounts are never deleted); the holdings with
their entitlements come from the process's memory (`tollbooth.subscriptions.holdings`, kept per
account, dropped on change; else one statement reads them). A boolean feature (or one not held)
then needs no statement at all (`check_from_memory`); a metered feature adds its usage total
(the metric by primary key, then the aggregate through the usage index: usage is never kept, so
a metered answer counts every event committed before its `as_of`), a credit-backed one its
balance. `as_of` is the holdings' own: for a fresh read the time taken before it, for kept
holdings the time up to which the listener vouches for them (at most about 1 s old).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts.refs import AccountRefs, caller_key
from tollbooth.amounts import ZERO, fmt
from tollbooth.auth.caller import Caller
from tollbooth.credit.queries import compute_balance
from tollbooth.entitlements import repository
from tollbooth.entitlements.grants import Grant, Kind, grants
from tollbooth.paging import Keyset, Text
from tollbooth.subscriptions.holdings import Holdings
from tollbooth.usage.service import metric_total

FEATURE_LIMIT = 100

__all__ = ["AccountRefs", "Answer", "caller_key", "check", "check_from_memory", "list_all"]


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


def _answer(
    session: Session, account_id: str, grant: Grant, now: dt.datetime, as_of: dt.datetime
) -> Answer:
    """`now` places the period and the credits' expiry; `as_of` is what the answer says."""
    if grant.kind is Kind.METERED:
        assert grant.period is not None
        used = metric_total(session, account_id, grant.metric, *grant.period)
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
        available, _ = compute_balance(session, account_id, grant.credit_type, now)
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


def check(
    session: Session,
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
    grant = grants(repository.held_prices(held), now).get(feature)
    if grant is None:
        return Answer(account_id, feature, None, False, held.as_of)
    return _answer(session, account_id, grant, now, held.as_of)


def check_from_memory(
    accounts: AccountRefs,
    holdings: Holdings,
    caller: Caller,
    account_ref: str,
    feature: str,
    now: dt.datetime,
) -> Answer | None:
    """The answer without a statement when memory has it all (a known account, its holdings
    kept, a feature it does not hold or a boolean one); else None (`check` reads)."""
    account_id = accounts.known(caller, account_ref)
    if account_id is None:
        return None
    held = holdings.cached(account_id)
    if held is None:
        return None
    feature = feature_name(feature)
    grant = grants(repository.held_prices(held), now).get(feature)
    if grant is None:
        return Answer(account_id, feature, None, False, held.as_of)
    if grant.kind is Kind.BOOLEAN:
        return Answer(account_id, feature, grant.kind, True, held.as_of, grant)
    return None


def list_all(
    session: Session,
    accounts: AccountRefs,
    holdings: Holdings,
    caller: Caller,
    account_ref: str,
    now: dt.datetime,
    page_size: int = 0,
    page_token: str = "",
) -> tuple[list[Answer], str, dt.datetime]:
    """One page of the account's features, its next page token, and the holdings' as_of."""
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
    answers = [_answer(session, account_id, g, now, kept.as_of) for g in page.items]
    return answers, page.next_page_token, kept.as_of
