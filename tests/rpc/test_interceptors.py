"""The interceptors run once per method (`Chain` keeps a unary method's wrapped handler), so
each call must still see its own metadata: its request id, its credentials, its caller in the
log line and the metrics, its own rate-limit counter."""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from billing.v1 import catalog_pb2, catalog_pb2_grpc, token_pb2, token_pb2_grpc
from tests.conftest import OTHER_SERVICE_KEY, SERVICE_MD, bearer_md
from tests.helpers import error_reason
from tollbooth.rpc.interceptors import new_request_id

ISSUE = "/billing.v1.TokenService/IssueToken"
PRODUCTS = "/billing.v1.CatalogService/ListProducts"


def _rpc_lines(caplog: pytest.LogCaptureFixture, method: str) -> list[Any]:
    return [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "rpc" and getattr(r, "method", None) == method
    ]


def _issue(channel: grpc.Channel, principal: str, metadata: Any) -> token_pb2.IssueTokenResponse:
    stub = token_pb2_grpc.TokenServiceStub(channel)
    request = token_pb2.IssueTokenRequest(principal_id=principal, scopes=["billing:read"])
    return stub.IssueToken(request, metadata=metadata, timeout=10)


def test_each_call_of_a_method_logs_its_own_request_id(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tollbooth.rpc")
    principal = f"rid-{uuid.uuid4().hex[:8]}"
    sent = [f"req-{uuid.uuid4().hex}" for _ in range(3)]
    for rid in sent:
        _issue(channel, principal, (*SERVICE_MD, ("x-request-id", rid)))
    for _ in range(3):  # none sent: the server makes one per call
        _issue(channel, principal, SERVICE_MD)
    ids = [r.request_id for r in _rpc_lines(caplog, ISSUE)]
    assert ids[:3] == sent
    made = ids[3:]
    assert len(made) == 3 and len(set(made)) == 3, made
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made), made
    assert not set(made) & set(sent)


def test_each_call_of_a_method_is_authenticated_with_its_own_credentials(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tollbooth.rpc")
    principal = f"auth-{uuid.uuid4().hex[:8]}"
    issued = _issue(channel, principal, SERVICE_MD)  # the method's handler is kept from here
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    stub.ListProducts(catalog_pb2.ListProductsRequest(), metadata=SERVICE_MD, timeout=10)
    stub.ListProducts(
        catalog_pb2.ListProductsRequest(), metadata=bearer_md(issued.access_token), timeout=10
    )
    with pytest.raises(grpc.RpcError) as missing:
        stub.ListProducts(catalog_pb2.ListProductsRequest(), timeout=10)
    with pytest.raises(grpc.RpcError) as wrong:
        stub.ListProducts(
            catalog_pb2.ListProductsRequest(), metadata=(("x-api-key", "nope"),), timeout=10
        )
    stub.ListProducts(
        catalog_pb2.ListProductsRequest(),
        metadata=(("x-api-key", OTHER_SERVICE_KEY),),
        timeout=10,
    )
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(missing.value) == "CREDENTIALS_MISSING"
    assert error_reason(wrong.value) == "SERVICE_KEY_INVALID"
    lines = _rpc_lines(caplog, PRODUCTS)
    assert [(r.caller, r.account, r.code) for r in lines] == [
        ("service", None, "OK"),
        ("bearer", issued.billing_account_id, "OK"),
        ("anonymous", None, "UNAUTHENTICATED"),
        ("anonymous", None, "UNAUTHENTICATED"),
        ("service", None, "OK"),
    ]


def test_the_rpc_metrics_count_each_call_under_its_own_code(channel: grpc.Channel) -> None:
    def count(code: str) -> float:
        value = REGISTRY.get_sample_value("tollbooth_rpc_total", {"method": PRODUCTS, "code": code})
        return value or 0.0

    ok, refused = count("OK"), count("UNAUTHENTICATED")
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    for _ in range(2):
        stub.ListProducts(catalog_pb2.ListProductsRequest(), metadata=SERVICE_MD, timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.ListProducts(catalog_pb2.ListProductsRequest(), timeout=10)
    assert count("OK") - ok == 2
    assert count("UNAUTHENTICATED") - refused == 1


def test_request_ids_made_by_a_forked_process_are_its_own() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out without running pytest's teardown
        try:
            os.write(write, " ".join(new_request_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    mine = [new_request_id() for _ in range(3)]
    assert len(child) == 3 and len(set(child + mine)) == 6
    assert {rid[:20] for rid in child} != {rid[:20] for rid in mine}


def test_request_ids_drawn_by_many_threads_at_once_are_distinct() -> None:
    drawn: list[list[str]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def draw(n: int) -> None:
        barrier.wait()
        drawn[n].extend(new_request_id() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [rid for ids in drawn for rid in ids]
    assert len(every) == 16_000 and len(set(every)) == 16_000
