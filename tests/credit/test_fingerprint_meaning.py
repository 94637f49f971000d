"""A request_id's fingerprint is taken from what the request means, not its bytes: a retry
that writes the same request another way (an amount as "10.0" for "10", metadata in another
order, a field the server does not know, JSON through Envoy for gRPC) gets the stored answer;
another request under the same key is still refused; and a key stored under the fingerprint
before this change is still recognised."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import grpc
import pytest
from sqlalchemy import update

from billing.v1 import credit_pb2
from tests.conftest import SERVICE_KEY, SERVICE_MD
from tests.credit.support import account, grant, rid, stub
from tests.credit.support import balance as read_balance
from tests.helpers import error_reason
from tollbooth.db import Database
from tollbooth.db.models import IdempotencyKey


def debit(channel: grpc.Channel, acct: str, amount: str, key: str, **kw):  # type: ignore[no-untyped-def]
    return stub(channel).DebitCredits(
        credit_pb2.DebitCreditsRequest(
            account=acct, credit_type="units", amount=amount, request_id=key, **kw
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )


def test_a_debit_retried_with_its_amount_written_another_way_is_replayed(
    channel: grpc.Channel,
) -> None:
    _, acct, _ = account(channel)
    grant(channel, acct, "50")
    key = rid()
    first = debit(channel, acct, "10.0", key)
    for spelling in ("10", "10.00", "010"):
        assert debit(channel, acct, spelling, key) == first
    assert balance(channel, acct) == Decimal(40)
    with pytest.raises(grpc.RpcError) as err:
        debit(channel, acct, "11", key)
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
    assert balance(channel, acct) == Decimal(40)


def test_a_grant_retried_with_its_metadata_in_another_order_is_replayed(
    channel: grpc.Channel,
) -> None:
    _, acct, _ = account(channel)
    key = rid()
    first = grant(channel, acct, "5", request_id=key, metadata={"a": "1", "b": "2"})
    again = grant(channel, acct, "5.0", request_id=key, metadata={"b": "2", "a": "1"})
    assert again == first
    with pytest.raises(grpc.RpcError) as err:
        grant(channel, acct, "5", request_id=key, metadata={"a": "1", "b": "3"})
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
    assert balance(channel, acct) == Decimal(5)


def test_a_field_the_server_does_not_know_does_not_make_another_request(
    channel: grpc.Channel,
) -> None:
    """A newer client's field (unknown here, so without effect) is not a different request."""
    _, acct, _ = account(channel)
    grant(channel, acct, "50")
    key = rid()
    first = debit(channel, acct, "3", key)
    raw = credit_pb2.DebitCreditsRequest(
        account=acct, credit_type="units", amount="3", request_id=key
    ).SerializeToString() + bytes([0xB8, 0x3E, 0x01])  # field 999, varint 1
    call = channel.unary_unary(
        "/billing.v1.CreditService/DebitCredits",
        request_serializer=lambda b: b,
        response_deserializer=credit_pb2.CreditDebit.FromString,
    )
    assert call(raw, metadata=SERVICE_MD, timeout=10) == first
    assert balance(channel, acct) == Decimal(47)


def balance(channel: grpc.Channel, acct: str) -> Decimal:
    return Decimal(read_balance(channel, acct).balance)


def old_fingerprint(request: credit_pb2.DebitCreditsRequest) -> str:
    """The fingerprint as it was stored before it was taken by meaning: the request's
    deterministic bytes without its request_id."""
    copy = credit_pb2.DebitCreditsRequest()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def test_a_key_stored_under_the_old_fingerprint_is_still_recognised(
    channel: grpc.Channel, db: Database
) -> None:
    _, acct, _ = account(channel)
    grant(channel, acct, "50")
    key = rid()
    request = credit_pb2.DebitCreditsRequest(
        account=acct, credit_type="units", amount="10.0", request_id=key
    )
    first = debit(channel, acct, "10.0", key)
    with db.transaction() as session:  # as a row written before the change has it
        changed = session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == key)
            .values(request_hash=old_fingerprint(request))
        )
        assert changed.rowcount == 1  # type: ignore[attr-defined]
    assert debit(channel, acct, "10.0", key) == first
    with pytest.raises(grpc.RpcError) as err:
        debit(channel, acct, "12", key)
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
    assert balance(channel, acct) == Decimal(40)


def test_a_debit_sent_as_json_through_envoy_then_over_grpc_is_one_debit(stack) -> None:  # type: ignore[no-untyped-def]
    service = {"x-api-key": SERVICE_KEY}
    issued = stack.request(
        "POST", "/mgt/v1/token/issue", {"principal_id": f"fp-{rid()}"}, service
    ).json()
    acct = issued["billing_account_id"]
    granted = stack.request(
        "POST",
        f"/mgt/v1/accounts/{acct}/credits/grants",
        {"creditType": "units", "amount": "20", "requestId": rid()},
        service,
    )
    assert granted.status == 200, granted.body
    key = rid()
    # JSON: defaults written out, the amount with a trailing zero.
    body = {
        "creditType": "units",
        "amount": "4.0",
        "reason": "",
        "metadata": {},
        "requestId": key,
    }
    rest = stack.request("POST", f"/mgt/v1/accounts/{acct}/credits/debits", body, service)
    assert rest.status == 200, rest.body
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        again = debit(channel, acct, "4", key)
        assert again.debit_id == rest.json()["debit_id"]
        assert balance(channel, acct) == Decimal(16)
        with pytest.raises(grpc.RpcError) as err:
            debit(channel, acct, "5", key)
        assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
