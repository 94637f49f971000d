"""Concurrent creates of one alias on PostgreSQL, from real concurrent gRPC clients: exactly
one account, and every loser is told its id."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from sqlalchemy import func, select

from billing.v1 import account_pb2, account_pb2_grpc
from tests.accounts.support import error_metadata
from tests.conftest import SERVICE_MD, make_env
from tests.devstack import grpc_server
from tests.helpers import error_reason
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db.models import BillingAccount

CLIENTS = 8


def test_concurrent_creates_of_one_alias_make_one_account(pg_url: str) -> None:
    deps = Deps.build(Settings.from_env(make_env(pg_url)))
    with grpc_server(deps) as port:
        barrier = threading.Barrier(CLIENTS)

        def attempt(n: int) -> tuple[str, str]:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = account_pb2_grpc.AccountServiceStub(ch)
                grpc.channel_ready_future(ch).result(timeout=10)
                barrier.wait(timeout=30)
                try:
                    made = stub.CreateAccount(
                        account_pb2.CreateAccountRequest(alias="contended", name=f"client {n}"),
                        metadata=SERVICE_MD,
                        timeout=30,
                    )
                    return ("OK", made.id)
                except grpc.RpcError as err:
                    assert error_reason(err) == "ACCOUNT_ALIAS_TAKEN"
                    return (err.code().name, error_metadata(err)["account_id"])

        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                results = list(pool.map(attempt, range(CLIENTS)))
            with deps.db.transaction(readonly=True) as session:
                stored = session.scalar(
                    select(func.count())
                    .select_from(BillingAccount)
                    .where(BillingAccount.principal_id == "contended")
                )
        finally:
            deps.db.dispose()
    winners = [r for r in results if r[0] == "OK"]
    assert len(winners) == 1
    assert sorted({code for code, _ in results}) == ["ALREADY_EXISTS", "OK"]
    assert {account_id for _, account_id in results} == {winners[0][1]}
    assert stored == 1
