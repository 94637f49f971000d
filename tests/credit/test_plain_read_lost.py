"""GetBalance's and IssueToken's plain reads (`Database.read_one`) when PostgreSQL has
dropped the pool's connections (a restart, terminated backends): like the session path, the
call that finds a dead connection answers UNAVAILABLE SERVICE_UNAVAILABLE, and the calls
after it get fresh connections. The pool is not left to hand out its other dead connections
one by one, each failing a call of its own."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import psycopg
import pytest
from sqlalchemy import make_url

from billing.v1 import credit_pb2, token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD, make_env
from tests.credit import support
from tests.devstack import serving
from tests.helpers import error_reason
from tollbooth.app import Deps
from tollbooth.config import Settings

pytestmark = pytest.mark.postgres

POOLED = 6


@pytest.fixture
def served(pg_url: str) -> Iterator[tuple[grpc.Channel, Deps]]:
    deps = Deps.build(Settings.from_env(make_env(pg_url)))
    try:
        with serving(deps) as ch:
            yield ch, deps
    finally:
        deps.db.dispose()


def _answer(channel: grpc.Channel, principal: str, account_id: str, method: str) -> str:
    stub: object = support.stub(channel)
    if method == "IssueToken":
        stub = token_pb2_grpc.TokenServiceStub(channel)
        request: object = token_pb2.IssueTokenRequest(principal_id=principal)
    elif method == "GetBalance":
        request = credit_pb2.GetBalanceRequest(account=account_id, type="units")
    else:
        request = credit_pb2.ListGrantsRequest(account=account_id)
    try:
        getattr(stub, method)(request, metadata=SERVICE_MD, timeout=10)
    except grpc.RpcError as err:
        return f"{err.code().name} {error_reason(err)}"
    return "OK"


# Plain reads (GetBalance, a known principal's IssueToken); the session path (ListGrants).
@pytest.mark.parametrize("method", ["GetBalance", "IssueToken", "ListGrants"])
def test_after_the_pool_connections_are_killed_one_call_is_unavailable_then_all_answer(
    served, pg_url: str, method: str
) -> None:  # type: ignore[no-untyped-def]
    channel, deps = served
    principal, account_id, _ = support.account(channel)
    support.grant(channel, account_id, "10")
    # The pool holds POOLED connections, all just used (so none is pinged at checkout).
    raw = [deps.db.engine.raw_connection() for _ in range(POOLED)]
    pids = [r.driver_connection.info.backend_pid for r in raw]  # type: ignore[union-attr]
    for r in raw:
        r.close()
    admin_url = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))

    answers = [_answer(channel, principal, account_id, method) for _ in range(POOLED)]

    assert set(answers) <= {"OK", "UNAVAILABLE SERVICE_UNAVAILABLE"}, answers  # never INTERNAL
    assert answers.count("UNAVAILABLE SERVICE_UNAVAILABLE") <= 1, answers
    assert answers[-1] == "OK", answers
