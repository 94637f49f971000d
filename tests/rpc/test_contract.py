"""The contract: every RPC declares auth; unbuilt ones answer UNIMPLEMENTED after auth;
the README lists exactly the unbuilt ones."""

from __future__ import annotations

import re
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from billing.v1 import credit_pb2, credit_pb2_grpc, usage_pb2, usage_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason
from tollbooth.app import unbuilt_methods
from tollbooth.auth.caller import Authenticator
from tollbooth.rpc import edge
from tollbooth.rpc.interceptors import AuthInterceptor, ErrorInterceptor
from tollbooth.rpc.rules import contract_services, load_requirements
from tollbooth.rpc.servicer import Servicer, contract

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_contract_rpc_declares_an_auth_rule() -> None:
    rules = load_requirements()
    declared = {f"/{s.full_name}/{m.name}" for s in contract_services() for m in s.methods}
    assert declared == set(rules)


def test_readme_lists_exactly_the_unbuilt_rpcs() -> None:
    text = README.read_text()
    section = text.split("<!-- unbuilt:start -->", 1)[1].split("<!-- unbuilt:end -->", 1)[0]
    listed = set(re.findall(r"`(billing\.v1\.\w+\.\w+)`", section))
    assert listed == set(unbuilt_methods())


def test_every_unbuilt_rpc_answers_unimplemented_with_reason(channel):  # type: ignore[no-untyped-def]
    unbuilt = unbuilt_methods()
    if not unbuilt:
        pytest.skip("every RPC of the contract is built")
    for full_name in unbuilt:
        service, method = full_name.rsplit(".", 1)
        with pytest.raises(grpc.RpcError) as exc:
            channel.unary_unary(f"/{service}/{method}")(b"", metadata=SERVICE_MD, timeout=10)
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED, full_name
        assert error_reason(exc.value) == "NOT_IMPLEMENTED", full_name


def test_unbuilt_rpc_checks_auth_first(channel):  # type: ignore[no-untyped-def]
    stub = credit_pb2_grpc.CreditServiceStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetBalance(credit_pb2.GetBalanceRequest(account="a", type="t"), timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_unbuilt_streaming_rpc_answers_unimplemented(deps):  # type: ignore[no-untyped-def]
    # Every streaming RPC of the contract is built now; a servicer lacking one still answers
    # UNIMPLEMENTED through the same interceptors.
    @contract(usage_pb2.DESCRIPTOR.services_by_name["UsageService"])
    class Bare(Servicer):
        pass

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[
            ErrorInterceptor(),
            AuthInterceptor(
                Authenticator(deps.settings.service_keys, deps.codec), load_requirements()
            ),
        ],
    )
    edge.register(server, Bare.service_descriptor, Bare(deps))  # type: ignore[attr-defined]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)
            responses = stub.StreamEvents(
                iter([usage_pb2.StreamEventsRequest()]), metadata=SERVICE_MD, timeout=10
            )
            with pytest.raises(grpc.RpcError) as exc:
                list(responses)
    finally:
        server.stop(grace=None).wait()
    assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_reason(exc.value) == "NOT_IMPLEMENTED"


def test_unexpected_exception_is_internal_without_details(channel, monkeypatch):  # type: ignore[no-untyped-def]
    from billing.v1 import token_pb2, token_pb2_grpc
    from tollbooth.token import service

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr(service, "issue_token", boom)
    stub = token_pb2_grpc.TokenServiceStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.IssueToken(
            token_pb2.IssueTokenRequest(principal_id="p"), metadata=SERVICE_MD, timeout=10
        )
    assert exc.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (exc.value.details() or "")
    assert error_reason(exc.value) == "INTERNAL"
