"""The cross-account matrix: for every bearer RPC that names an account, another account's id
answers exactly as an id that does not exist.

Ids of account-owned objects (checkout sessions, grants, reservations) join this matrix with the
RPCs that create them: the test needs a real object of another account, not a made-up id.
"""

from __future__ import annotations

import grpc
import pytest

from billing.v1 import token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason
from tollbooth.rpc.rules import contract_services, load_requirements

# Request fields that name an account.
OWNED_ID_FIELDS = ("account",)


def bearer_rpcs_with_owned_ids() -> list[tuple[str, str, str]]:
    rules = load_requirements()
    found = []
    for service in contract_services():
        for method in service.methods:
            if method.client_streaming or method.server_streaming:
                continue
            if not rules[f"/{service.full_name}/{method.name}"].bearer:
                continue
            for name in OWNED_ID_FIELDS:
                if name in method.input_type.fields_by_name:
                    found.append((service.full_name, method.name, name))
    return found


MATRIX = bearer_rpcs_with_owned_ids()


def test_matrix_covers_the_account_scoped_bearer_rpcs() -> None:
    names = {f"{s}.{m}" for s, m, _ in MATRIX}
    assert {
        "billing.v1.CheckoutService.GetBillingStatus",
        "billing.v1.CreditService.GetBalance",
        "billing.v1.UsageService.GetUsage",
    } <= names


def outcome(channel, service: str, method: str, field: str, value: str, token: str):  # type: ignore[no-untyped-def]
    desc = next(s for s in contract_services() if s.full_name == service).methods_by_name[method]
    from google.protobuf import message_factory

    request = message_factory.GetMessageClass(desc.input_type)(**{field: value})
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    try:
        call(request, metadata=bearer_md(token), timeout=10)
        return ("OK", None)
    except grpc.RpcError as err:
        return (err.code().name, error_reason(err))


@pytest.mark.parametrize("service,method,field", MATRIX, ids=[f"{m}.{f}" for _, m, f in MATRIX])
def test_other_accounts_id_answers_like_a_missing_id(channel, service, method, field):  # type: ignore[no-untyped-def]
    stub = token_pb2_grpc.TokenServiceStub(channel)
    mine = stub.IssueToken(
        token_pb2.IssueTokenRequest(principal_id="p-mine"), metadata=SERVICE_MD, timeout=10
    )
    theirs = stub.IssueToken(
        token_pb2.IssueTokenRequest(principal_id="p-theirs"), metadata=SERVICE_MD, timeout=10
    )
    other, missing = theirs.billing_account_id, "acct_000000000000000000000000"
    got_other = outcome(channel, service, method, field, other, mine.access_token)
    got_missing = outcome(channel, service, method, field, missing, mine.access_token)
    assert got_other == got_missing
    assert got_other[0] != "OK"
