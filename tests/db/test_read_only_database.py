"""A PostgreSQL that refuses writes (SQLSTATE 25006 read_only_sql_transaction: a hot standby
after a failover, `default_transaction_read_only` set by an operator) is an outage, not a bug:
a write RPC answers UNAVAILABLE `DATABASE_READ_ONLY` (HTTP 503 through Envoy), never
INTERNAL, and writes nothing; reads still answer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, select

from billing.v1 import (
    credit_pb2,
    credit_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from tests.conftest import SERVICE_MD, make_env
from tests.devstack import serving
from tests.helpers import error_reason
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db.models import BillingAccount

pytestmark = pytest.mark.postgres


def read_only(url: str) -> str:
    """`url` whose every session starts read-only, as on a hot standby."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-c%20default_transaction_read_only%3Don"


@pytest.fixture
def writable_and_read_only(pg_url: str) -> Iterator[tuple[Deps, grpc.Channel, grpc.Channel]]:
    writable = Deps.build(Settings.from_env(make_env(pg_url)))
    standby = Deps.build(Settings.from_env(make_env(read_only(pg_url))))
    try:
        with serving(writable) as w, serving(standby) as r:
            yield writable, w, r
    finally:
        standby.db.dispose()
        writable.db.dispose()


def issue(channel: grpc.Channel, principal: str) -> token_pb2.IssueTokenResponse:
    return token_pb2_grpc.TokenServiceStub(channel).IssueToken(
        token_pb2.IssueTokenRequest(principal_id=principal, user_id="u1", scopes=["checkout"]),
        metadata=SERVICE_MD,
        timeout=10,
    )


def test_a_write_on_a_read_only_database_is_unavailable_and_writes_nothing(
    writable_and_read_only: tuple[Deps, grpc.Channel, grpc.Channel],
) -> None:
    deps, writable, standby = writable_and_read_only
    known = issue(writable, "ro-known").billing_account_id
    principal = f"ro-{uuid.uuid4().hex[:8]}"
    for _ in range(2):  # the same answer again (the connection is not left broken)
        with pytest.raises(grpc.RpcError) as err:
            issue(standby, principal)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert error_reason(err.value) == "DATABASE_READ_ONLY"
        assert "25006" not in (err.value.details() or "")
    with deps.db.transaction(readonly=True) as session:
        count = session.scalar(
            select(func.count())
            .select_from(BillingAccount)
            .where(BillingAccount.principal_id == principal)
        )
    assert count == 0
    # Reads still answer from the read-only database.
    balance = credit_pb2_grpc.CreditServiceStub(standby).GetBalance(
        credit_pb2.GetBalanceRequest(account=known, type="tokens"), metadata=SERVICE_MD, timeout=10
    )
    assert balance.balance == "0"


def ingest(channel: grpc.Channel, account: str) -> usage_pb2.EventResult:
    event = usage_pb2.UsageEvent(
        unique_id="ro-event-1",
        account=account,
        event_name="ro",
        event_time=Timestamp(seconds=int(time.time())),
    )
    return usage_pb2_grpc.UsageServiceStub(channel).IngestEvent(
        usage_pb2.IngestEventRequest(event=event), metadata=SERVICE_MD, timeout=10
    )


def test_a_debit_or_an_event_after_the_database_takes_writes_again_is_served(
    pg_base_url: str,
) -> None:
    """A connection that met a read-only database is retired, also on DebitCredits' own
    PostgreSQL path (raw pipelined statements, which SQLAlchemy's error hook never sees): once
    the database takes writes again (the failover followed), the next debit is served on a fresh
    connection instead of meeting the old read-only session again and again."""
    from sqlalchemy import create_engine, text

    from tests.devstack import throwaway_postgres
    from tollbooth.db import normalize_url
    from tollbooth.db.migrate import upgrade

    with throwaway_postgres(pg_base_url, "tollbooth_ro") as url:
        upgrade(url)
        name = url.rsplit("/", 1)[1]
        admin = create_engine(normalize_url(pg_base_url), isolation_level="AUTOCOMMIT")
        deps = Deps.build(Settings.from_env(make_env(url)))
        try:
            with serving(deps) as channel:
                account = issue(channel, f"ro-debit-{uuid.uuid4().hex[:8]}").billing_account_id
                credits = credit_pb2_grpc.CreditServiceStub(channel)
                credits.GrantCredits(
                    credit_pb2.GrantCreditsRequest(
                        account=account, credit_type="tokens", amount="10", reason="seed"
                    ),
                    metadata=SERVICE_MD,
                    timeout=10,
                )

                def debit(key: str) -> credit_pb2.CreditDebit:
                    return credits.DebitCredits(
                        credit_pb2.DebitCreditsRequest(
                            account=account, credit_type="tokens", amount="1", request_id=key
                        ),
                        metadata=SERVICE_MD,
                        timeout=10,
                    )

                debit("ro-warm")
                with admin.connect() as conn:
                    conn.execute(
                        text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
                    )
                deps.db.dispose()  # the pool's next connections are read-only sessions
                for _ in range(2):
                    with pytest.raises(grpc.RpcError) as err:
                        debit("ro-1")
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
                    assert error_reason(err.value) == "DATABASE_READ_ONLY"
                with admin.connect() as conn:
                    conn.execute(
                        text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
                    )
                assert debit("ro-1").balance_after == "8"
                # The same on usage ingest's own path (a raw cursor on the session's connection).
                with admin.connect() as conn:
                    conn.execute(
                        text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
                    )
                deps.db.dispose()
                for _ in range(2):
                    with pytest.raises(grpc.RpcError) as err:
                        ingest(channel, account)
                    assert error_reason(err.value) == "DATABASE_READ_ONLY", err.value.details()
                with admin.connect() as conn:
                    conn.execute(
                        text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
                    )
                assert ingest(channel, account).status == usage_pb2.EVENT_STATUS_ACCEPTED
        finally:
            deps.db.dispose()
            admin.dispose()
