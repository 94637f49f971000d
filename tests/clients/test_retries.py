"""Retries, deadlines and stream errors against tiny scripted gRPC servers (no database)."""

from __future__ import annotations

import socket
import time

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from billing.v1 import token_pb2, token_pb2_grpc, usage_pb2, usage_pb2_grpc
from tests.clients.conftest import Calls, Recorder
from tollbooth_client import BillingClient, BillingError
from tollbooth_client._interceptor import backoff_delay


def rich_status(code: grpc.StatusCode, reason: str, message: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="billing.v1", metadata={"k": "v"})
    detail = any_pb2.Any()
    detail.Pack(info)
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[detail])
    )


class ScriptedTokens(token_pb2_grpc.TokenServiceServicer):
    """Fails the first `failures` calls with `code`, then answers."""

    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
        self.failures = failures
        self.code = code
        self.calls = Calls()

    def IssueToken(self, request, context):  # type: ignore[no-untyped-def]
        n = self.calls.add((request.request_id, dict(context.invocation_metadata())))
        if n <= self.failures:
            context.abort_with_status(rich_status(self.code, "SCRIPTED", f"failure {n}"))
        return token_pb2.IssueTokenResponse(principal_id=request.principal_id, access_token="t")


def client_for(server, **kwargs) -> BillingClient:  # type: ignore[no-untyped-def]
    kwargs.setdefault("initial_backoff", 0.01)
    kwargs.setdefault("max_backoff", 0.05)
    return BillingClient(server.target, service_key="k", **kwargs)


def test_unavailable_is_retried_with_the_same_request_id_until_success(fake_server):  # type: ignore[no-untyped-def]
    servicer = ScriptedTokens(failures=2)
    server = fake_server((token_pb2_grpc.add_TokenServiceServicer_to_server, servicer))
    with client_for(server, max_retries=3) as client:
        response = client.issue_token("acct-42")
    assert response.principal_id == "acct-42"
    assert len(servicer.calls) == 3
    request_ids = {rid for rid, _ in servicer.calls}
    assert len(request_ids) == 1 and request_ids != {""}
    assert all(md["x-api-key"] == "k" for _, md in servicer.calls)


def test_retries_stop_after_max_retries(fake_server):  # type: ignore[no-untyped-def]
    servicer = ScriptedTokens(failures=100)
    server = fake_server((token_pb2_grpc.add_TokenServiceServicer_to_server, servicer))
    with client_for(server, max_retries=3) as client, pytest.raises(BillingError) as exc:
        client.issue_token("acct-42")
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE
    assert exc.value.reason == "SCRIPTED" and exc.value.message == "failure 4"
    assert len(servicer.calls) == 4
    # The key every attempt carried, so the caller can resend the same operation later.
    assert {rid for rid, _ in servicer.calls} == {exc.value.request_id}


def test_max_retries_zero_means_one_attempt(fake_server):  # type: ignore[no-untyped-def]
    servicer = ScriptedTokens(failures=1)
    server = fake_server((token_pb2_grpc.add_TokenServiceServicer_to_server, servicer))
    with client_for(server, max_retries=0) as client, pytest.raises(BillingError):
        client.issue_token("acct-42")
    assert len(servicer.calls) == 1


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    ],
)
def test_other_codes_are_not_retried(fake_server, code):  # type: ignore[no-untyped-def]
    servicer = ScriptedTokens(failures=1, code=code)
    server = fake_server((token_pb2_grpc.add_TokenServiceServicer_to_server, servicer))
    with client_for(server, max_retries=3) as client, pytest.raises(BillingError) as exc:
        client.issue_token("acct-42")
    assert exc.value.code == code and exc.value.reason == "SCRIPTED"
    assert exc.value.metadata == {"k": "v"}
    assert len(servicer.calls) == 1


def test_unreachable_server_is_retried_and_reported_without_reason():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        recorder = Recorder()
        raw = grpc.insecure_channel(f"127.0.0.1:{port}")
        client = BillingClient(
            "unused",
            service_key="k",
            channel=grpc.intercept_channel(raw, recorder),
            max_retries=2,
            initial_backoff=0.01,
            max_backoff=0.02,
        )
        with pytest.raises(BillingError) as exc:
            client.issue_token("acct-42")
        raw.close()
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE and exc.value.reason is None
    assert len(recorder.sent) == 3
    assert len({s.request.request_id for s in recorder.sent}) == 1


class SlowTokens(token_pb2_grpc.TokenServiceServicer):
    def __init__(self) -> None:
        self.calls = Calls()

    def IssueToken(self, request, context):  # type: ignore[no-untyped-def]
        self.calls.add(context.time_remaining())
        while context.is_active():  # until the client gives up
            time.sleep(0.01)
        return token_pb2.IssueTokenResponse()


def test_default_deadline_cuts_a_call_the_server_never_answers(fake_server):  # type: ignore[no-untyped-def]
    servicer = SlowTokens()
    server = fake_server((token_pb2_grpc.add_TokenServiceServicer_to_server, servicer))
    with client_for(server, default_timeout=0.3) as client, pytest.raises(BillingError) as exc:
        client.issue_token("acct-42")
    assert exc.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server saw a deadline (without one, time_remaining() is None), and it was the client's
    # default, not some far-off value. Not a timing assertion: 0.3 s against 10 s.
    assert len(servicer.calls) == 1
    remaining = servicer.calls[0]
    assert remaining is not None and remaining < 5


class ScriptedStream(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self) -> None:
        self.calls = Calls()

    def StreamEvents(self, request_iterator, context):  # type: ignore[no-untyped-def]
        self.calls.add(dict(context.invocation_metadata()))
        for _ in request_iterator:
            yield usage_pb2.StreamEventsResponse()
            context.abort_with_status(
                rich_status(grpc.StatusCode.FAILED_PRECONDITION, "SCRIPTED", "stop")
            )


def test_streams_carry_the_credential_and_raise_billing_errors(fake_server):  # type: ignore[no-untyped-def]
    servicer = ScriptedStream()
    server = fake_server((usage_pb2_grpc.add_UsageServiceServicer_to_server, servicer))
    with client_for(server) as client:
        responses = client.usage.StreamEvents(iter([usage_pb2.StreamEventsRequest()] * 2))
        assert isinstance(next(responses), usage_pb2.StreamEventsResponse)
        with pytest.raises(BillingError) as exc:
            next(responses)
    assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert exc.value.reason == "SCRIPTED"
    assert servicer.calls[0]["x-api-key"] == "k"


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter():
    low = [backoff_delay(a, 0.1, 1.0, rand=lambda: 0.0) for a in range(6)]
    high = [backoff_delay(a, 0.1, 1.0, rand=lambda: 1.0) for a in range(6)]
    assert low == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
    assert high == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
