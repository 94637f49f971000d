"""IssueToken through a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest

from billing.v1 import token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason


def issue(channel, **fields):  # type: ignore[no-untyped-def]
    stub = token_pb2_grpc.TokenServiceStub(channel)
    return stub.IssueToken(token_pb2.IssueTokenRequest(**fields), metadata=SERVICE_MD, timeout=10)


def test_first_call_creates_account_and_later_calls_return_it(channel, deps):  # type: ignore[no-untyped-def]
    first = issue(channel, principal_id="acct-42", user_id="u1")
    second = issue(channel, principal_id="acct-42", user_id="u2")
    assert first.account_created and not second.account_created
    assert first.billing_account_id == second.billing_account_id
    assert first.billing_account_id.startswith("acct_")
    claims = deps.codec.verify(second.access_token)
    assert claims.billing_account_id == first.billing_account_id
    assert claims.principal_id == "acct-42" and claims.user_id == "u2"


def test_without_credentials_is_unauthenticated(channel):  # type: ignore[no-untyped-def]
    stub = token_pb2_grpc.TokenServiceStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.IssueToken(token_pb2.IssueTokenRequest(principal_id="p"), timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(exc.value) == "CREDENTIALS_MISSING"


def test_missing_principal_is_invalid_and_creates_nothing(channel, db):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        issue(channel, principal_id="")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(exc.value) == "FIELD_REQUIRED"
    from sqlalchemy import func, select

    from tollbooth.db.models import BillingAccount

    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(BillingAccount)) == 0
