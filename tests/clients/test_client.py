"""BillingClient against a real billing server (SQLite and, when configured, PostgreSQL)."""

from __future__ import annotations

import pickle
import uuid

import grpc
import pytest

from billing.v1 import catalog_pb2, token_pb2
from tests.conftest import SERVICE_KEY
from tollbooth_client import BillingClient, BillingError


def target(port: int) -> str:
    return f"127.0.0.1:{port}"


def test_issue_token_creates_then_confirms_the_account(grpc_port, deps):  # type: ignore[no-untyped-def]
    with BillingClient(target(grpc_port), service_key=SERVICE_KEY) as client:
        first = client.issue_token("acct-42", user_id="u-1", scopes=("checkout",))
        second = client.issue_token("acct-42", user_id="u-2")
    assert isinstance(first, token_pb2.IssueTokenResponse)
    assert first.account_created and not second.account_created
    assert first.billing_account_id == second.billing_account_id
    assert list(first.scopes) == ["checkout"]
    claims = deps.codec.verify(first.access_token)
    assert claims.billing_account_id == first.billing_account_id and claims.user_id == "u-1"


def test_missing_credentials_raise_billing_error_with_reason(grpc_port):  # type: ignore[no-untyped-def]
    with BillingClient(target(grpc_port)) as client, pytest.raises(BillingError) as exc:
        client.issue_token("acct-42")
    assert exc.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert exc.value.reason == "CREDENTIALS_MISSING"
    assert exc.value.message
    assert exc.value.domain == "billing.v1"


def test_error_metadata_is_decoded(grpc_port):  # type: ignore[no-untyped-def]
    with (
        BillingClient(target(grpc_port), service_key=SERVICE_KEY) as client,
        pytest.raises(BillingError) as exc,
    ):
        client.issue_token("")
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.reason == "FIELD_REQUIRED"
    assert exc.value.metadata == {"field": "principal_id"}
    assert isinstance(exc.value.__cause__, grpc.RpcError)
    copy = pickle.loads(pickle.dumps(exc.value))
    assert (copy.code, copy.reason, copy.metadata, copy.domain, copy.request_id) == (
        exc.value.code,
        "FIELD_REQUIRED",
        {"field": "principal_id"},
        "billing.v1",
        exc.value.request_id,
    )
    assert uuid.UUID(exc.value.request_id).version == 4


def test_with_bearer_sends_the_token_instead_of_the_service_key(recorder, recorded_channel):  # type: ignore[no-untyped-def]
    backend = BillingClient("billing", service_key=SERVICE_KEY, channel=recorded_channel)
    token = backend.issue_token("acct-42").access_token
    browser = backend.with_bearer(token)
    with pytest.raises(BillingError) as exc:
        browser.issue_token("acct-42")  # a service-key RPC: the bearer must be refused
    assert exc.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert exc.value.reason == "SERVICE_KEY_REQUIRED"
    sent = recorder.sent[-1].metadata
    assert sent["authorization"] == f"Bearer {token}" and "x-api-key" not in sent


def test_closing_a_bearer_client_keeps_the_shared_channel_open(grpc_port):  # type: ignore[no-untyped-def]
    with BillingClient(target(grpc_port), service_key=SERVICE_KEY) as backend:
        token = backend.issue_token("acct-42").access_token
        backend.with_bearer(token).close()
        assert backend.issue_token("acct-42").billing_account_id


def test_context_manager_closes_its_own_channel_only(grpc_port, channel):  # type: ignore[no-untyped-def]
    with BillingClient(target(grpc_port), service_key=SERVICE_KEY) as owned:
        owned.issue_token("acct-42")
    with pytest.raises(ValueError, match="closed channel"):
        owned.issue_token("acct-42")
    with BillingClient("billing", service_key=SERVICE_KEY, channel=channel) as borrowed:
        borrowed.issue_token("acct-42")
    assert BillingClient("billing", service_key=SERVICE_KEY, channel=channel).issue_token("acct-42")


def test_mutating_request_gets_a_uuid4_request_id_and_callers_message_is_untouched(  # type: ignore[no-untyped-def]
    recorder, recorded_channel
):
    client = BillingClient("billing", service_key=SERVICE_KEY, channel=recorded_channel)
    mine = token_pb2.IssueTokenRequest(principal_id="acct-42")
    client.token.IssueToken(mine)
    client.token.IssueToken(mine)
    first, second = (s.request.request_id for s in recorder.sent)
    assert uuid.UUID(first).version == 4 and uuid.UUID(second).version == 4
    assert first != second  # two intended operations, two keys
    assert mine.request_id == ""


def test_explicit_request_id_is_kept(recorder, recorded_channel):  # type: ignore[no-untyped-def]
    client = BillingClient("billing", service_key=SERVICE_KEY, channel=recorded_channel)
    client.token.IssueToken(token_pb2.IssueTokenRequest(principal_id="acct-42", request_id="r-1"))
    assert recorder.sent[0].request.request_id == "r-1"


def test_default_deadline_is_sent_and_a_per_call_timeout_wins(recorder, recorded_channel):  # type: ignore[no-untyped-def]
    client = BillingClient(
        "billing", service_key=SERVICE_KEY, channel=recorded_channel, default_timeout=2.5
    )
    client.issue_token("acct-42")
    client.issue_token("acct-42", timeout=30)
    default, explicit = (s.timeout for s in recorder.sent)
    assert default is not None and 2.0 < default <= 2.5
    assert explicit is not None and 29 < explicit <= 30


def test_list_prices_sends_product_id_with_the_bearer(recorder, recorded_channel):  # type: ignore[no-untyped-def]
    backend = BillingClient("billing", service_key=SERVICE_KEY, channel=recorded_channel)
    browser = backend.with_bearer(backend.issue_token("acct-42").access_token)
    try:
        browser.list_prices("prod_missing", page_size=5)
    except BillingError as err:  # NOT_FOUND once built, UNIMPLEMENTED before
        assert err.reason in {"NOT_FOUND", "NOT_IMPLEMENTED"}
    sent = recorder.sent[-1]
    assert sent.method == "/billing.v1.CatalogService/ListPrices"
    assert sent.request == catalog_pb2.ListPricesRequest(product_id="prod_missing", page_size=5)
    assert sent.metadata["authorization"].startswith("Bearer ")


def test_call_reaches_an_rpc_by_any_spelling_of_its_name(grpc_port):  # type: ignore[no-untyped-def]
    request = token_pb2.IssueTokenRequest(principal_id="acct-42")
    with BillingClient(target(grpc_port), service_key=SERVICE_KEY) as client:
        ids = {
            client.call(name, request).billing_account_id
            for name in (
                "TokenService.IssueToken",
                "billing.v1.TokenService.IssueToken",
                "/billing.v1.TokenService/IssueToken",
            )
        }
    assert len(ids) == 1 and next(iter(ids)).startswith("acct_")


def test_call_refuses_a_wrong_request_type_unknown_names_and_streams():
    client = BillingClient("127.0.0.1:1", service_key=SERVICE_KEY)
    with pytest.raises(TypeError, match="IssueTokenRequest"):
        client.call("TokenService.IssueToken", catalog_pb2.ListPricesRequest())
    with pytest.raises(ValueError, match="no method"):
        client.call("TokenService.Nope", token_pb2.IssueTokenRequest())
    with pytest.raises(ValueError, match="unknown service"):
        client.call("WebhookService.RecordEvent", token_pb2.IssueTokenRequest())
    with pytest.raises(ValueError, match="streams"):
        client.call("UsageService.StreamEvents", token_pb2.IssueTokenRequest())
    client.close()


def test_service_key_and_bearer_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        BillingClient("127.0.0.1:1", service_key="k", bearer_token="t")
