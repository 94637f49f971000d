"""The one-call debit (`tollbooth_debit`) under real concurrent gRPC clients, two server
processes on one PostgreSQL database (the fixtures and helpers of test_concurrency.py).

One hot account: 128 calls at once (96 request_ids, 32 of them sent twice) for a balance of 50
over grants of three priorities and expiries: exactly 50 request_ids are debited, each once,
every copy answers what its original answered, the balance is 0 and equals the ledger, one
depletion notice. Across accounts: 128 calls at once spread over 16 accounts of 5 each (8 per
account): exactly 5 debited per account. Most debits were written by the function itself
(its ledger rows' allocations are `json_build_object`'s text), the rest (the depleting one,
the refusals) by the existing path, concurrently with it.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections import Counter, defaultdict
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2 as c
from tests.credit.support import account, check_invariants, grant
from tests.credit.test_concurrency import (  # noqa: F401
    all_at_once,
    channels,
    debit_request,
    servers,
)
from tests.helpers import error_reason
from tollbooth.db import normalize_url
from tollbooth.db.models import CreditLedgerEntry, NotificationOutbox

pytestmark = pytest.mark.postgres

CALLS = 128


@pytest.fixture
def pg_url(pg_shared_url: str) -> str:
    return pg_shared_url


def _at(hours: int) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours))
    return out


def _by_function(s: Session, acct: str) -> int:
    """Debits of `acct` written by `tollbooth_debit` (json_build_object writes ` : `)."""
    return int(
        s.execute(
            text(
                "SELECT count(*) FROM credit_ledger WHERE billing_account_id = :a"
                " AND kind = 'debit' AND allocations::text LIKE '%\"grant_id\" : %'"
            ),
            {"a": acct},
        ).scalar_one()
    )


def _applied_once(results: list[Any], requests: list[c.DebitCreditsRequest]) -> dict[str, Any]:
    """Every request_id's answers agree (one reply, or one refusal); request_id -> answer."""
    answers: dict[str, set[Any]] = defaultdict(set)
    for req, r in zip(requests, results, strict=True):
        if isinstance(r, c.CreditDebit):
            answers[req.request_id].add(r.SerializeToString(deterministic=True))
        else:
            assert r.code() == grpc.StatusCode.FAILED_PRECONDITION, r
            answers[req.request_id].add(error_reason(r))
    assert all(len(v) == 1 for v in answers.values()), answers
    return {k: next(iter(v)) for k, v in answers.items()}


def test_a_hot_account_under_concurrent_one_call_debits(pg_url, channels) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    principal, acct, _ = account(channels[0])
    grant(channels[0], acct, "12.5", expire_time=_at(2))
    grant(channels[1], acct, "20", priority=-1, expire_time=_at(1))
    grant(channels[0], acct, "17.5", priority=1)
    distinct = [debit_request(acct if i % 2 else principal) for i in range(96)]
    requests = distinct + distinct[:32]
    random.Random(18).shuffle(requests)
    results = all_at_once(channels, requests)
    answers = _applied_once(results, requests)
    debited = {k for k, v in answers.items() if isinstance(v, bytes)}
    assert len(debited) == 50
    assert Counter(v for v in answers.values() if isinstance(v, str)) == {
        "INSUFFICIENT_CREDITS": 46
    }
    replies = [c.CreditDebit.FromString(answers[k]) for k in debited]
    assert sorted(Counter(r.balance_after for r in replies).values()) == [1] * 50
    engine = create_engine(normalize_url(pg_url))
    try:
        with Session(engine) as s:
            assert check_invariants(s, acct)[(acct, "units")] == 0
            ids = s.execute(
                select(CreditLedgerEntry.request_id).where(
                    CreditLedgerEntry.billing_account_id == acct, CreditLedgerEntry.kind == "debit"
                )
            ).scalars()
            assert sorted(ids) == sorted(debited)  # each once
            notices = s.execute(
                select(func.count())
                .select_from(NotificationOutbox)
                .where(NotificationOutbox.billing_account_id == acct)
                .where(NotificationOutbox.type == "credits.balance_depleted")
            ).scalar_one()
            assert notices == 1
            assert _by_function(s, acct) >= 45  # the depleting debit is the old path's
    finally:
        engine.dispose()


def test_many_accounts_under_concurrent_one_call_debits(pg_url, channels) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    accounts = [account(channels[i])[1] for i in range(16)]
    for i, acct in enumerate(accounts):
        grant(channels[i], acct, "2", priority=1)
        grant(channels[i], acct, "3", expire_time=_at(1 + i % 3))
    requests = [
        c.DebitCreditsRequest(
            account=accounts[i % 16], credit_type="units", amount="1", request_id=uuid.uuid4().hex
        )
        for i in range(CALLS)
    ]
    random.Random(3).shuffle(requests)
    results = all_at_once(channels, requests)
    answers = _applied_once(results, requests)
    per_account = Counter(
        req.account for req in requests if isinstance(answers[req.request_id], bytes)
    )
    assert per_account == dict.fromkeys(accounts, 5)
    engine = create_engine(normalize_url(pg_url))
    try:
        with Session(engine) as s:
            balances = check_invariants(s, *accounts)
            assert all(balances[(a, "units")] == 0 for a in accounts)
            assert sum(_by_function(s, a) for a in accounts) >= 16 * 4
    finally:
        engine.dispose()
