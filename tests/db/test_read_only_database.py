"""A PostgreSQL that refuses writes (SQLSTATE 25006 read_only_sql_transaction: a hot standby
after a failover, `default_transaction_read_only` set by an operator) is an outage, not a bug:
a write RPC answers UNAVAILABLE `DATABASE_READ_ONLY` (HTTP 503 through Envoy), never
INTERNAL, and writes nothing; reads still answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import func, select

from billing.v1 import credit_pb2, credit_pb2_grpc, token_pb2, token_pb2_grpc
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
