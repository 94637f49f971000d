"""Trial credits that expire with nobody reading the account still notify (seed 001 step 3:
"when trial credits run out ... a webhook"): the expiry sweeper records due expiries, so the
depletion is written within seconds, not at the account's next write or listing."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from billing.v1 import account_pb2, account_pb2_grpc, credit_pb2, credit_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.credit.test_expiry import T, depletions, grant, ledger
from tollbooth.accounts.service import ensure_account
from tollbooth.credit.sweeper import ExpirySweeper
from tollbooth.db import Database
from tollbooth.db.models import NotificationOutbox


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """An empty database of its own (not the module's shared one): the sweeper takes every
    balance due at the injected time, whichever test wrote it."""
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def acct(db: Database) -> str:
    with db.transaction() as s:
        account, _ = ensure_account(s, f"p-{uuid.uuid4().hex[:8]}")
        return account.id


def test_an_expiry_nobody_reads_is_recorded_and_notified_once(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "5", 0, expires=10)
    ExpirySweeper(db).run_once(now=T + dt.timedelta(seconds=11))
    assert depletions(db, acct) == ["expiration"]
    ExpirySweeper(db).run_once(now=T + dt.timedelta(seconds=12))  # nothing more is due
    assert depletions(db, acct) == ["expiration"]
    assert ledger(db, acct, 13)[-1] == ("expiration", "-5", "0", 10)


def test_the_sweeper_leaves_an_expiry_that_is_not_due(db, acct) -> None:  # type: ignore[no-untyped-def]
    grant(db, acct, "5", 0, expires=100)
    ExpirySweeper(db).run_once(now=T + dt.timedelta(seconds=50))
    assert depletions(db, acct) == []
    assert [kind for kind, *_ in ledger(db, acct, 50)] == ["grant"]


def test_the_sweeper_records_more_due_balances_than_one_batch(db) -> None:  # type: ignore[no-untyped-def]
    accounts = []
    for _ in range(5):
        with db.transaction() as s:
            accounts.append(ensure_account(s, f"p-{uuid.uuid4().hex[:8]}")[0].id)
        grant(db, accounts[-1], "1", 0, expires=20)
    ExpirySweeper(db, batch=2).run_once(now=T + dt.timedelta(seconds=21))
    assert [depletions(db, a) for a in accounts] == [["expiration"]] * 5


@pytest.mark.postgres
def test_a_running_server_notifies_an_expiry_nobody_reads(replica_channels, pg_shared_url) -> None:  # type: ignore[no-untyped-def]
    stub = credit_pb2_grpc.CreditServiceStub(replica_channels[0])
    accounts = account_pb2_grpc.AccountServiceStub(replica_channels[0])
    account = accounts.CreateAccount(
        account_pb2.CreateAccountRequest(name="Trial", alias=f"trial-{uuid.uuid4().hex[:8]}"),
        metadata=SERVICE_MD,
    ).id
    expire = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    req = credit_pb2.GrantCreditsRequest(
        account=account, credit_type="units", amount="5", request_id=uuid.uuid4().hex
    )
    req.expire_time.FromDatetime(expire)
    stub.GrantCredits(req, metadata=SERVICE_MD)
    db = Database(pg_shared_url)
    try:
        deadline = time.monotonic() + 20
        rows: list[str] = []
        while time.monotonic() < deadline and "credits.balance_depleted" not in rows:
            time.sleep(0.25)
            with db.transaction(readonly=True) as s:  # the outbox only: no credit read
                rows = list(
                    s.scalars(
                        select(NotificationOutbox.type).where(
                            NotificationOutbox.billing_account_id == account
                        )
                    )
                )
        assert "credits.balance_depleted" in rows
    finally:
        db.dispose()
