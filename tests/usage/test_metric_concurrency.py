"""Metric CRUD raced from real concurrent clients over two server replicas on PostgreSQL."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import usage_pb2
from tests.conftest import SERVICE_MD
from tests.helpers import all_at_once, outcome
from tests.usage.support import usage_stub

pytestmark = pytest.mark.postgres

ROUNDS = 12
CLIENTS = 8


def fresh_code() -> str:
    return f"m_{uuid.uuid4().hex[:12]}"


def create_request(code: str, request_id: str, name: str = "n") -> usage_pb2.CreateMetricRequest:
    return usage_pb2.CreateMetricRequest(
        metric=usage_pb2.Metric(
            code=code, name=name, event_name="api_call", aggregation=usage_pb2.AGGREGATION_COUNT
        ),
        request_id=request_id,
    )


def rename(channel: grpc.Channel, code: str, **fields: str) -> usage_pb2.Metric:
    return usage_stub(channel).UpdateMetric(
        usage_pb2.UpdateMetricRequest(
            metric=usage_pb2.Metric(code=code, **fields),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
            request_id=uuid.uuid4().hex,
        ),
        metadata=SERVICE_MD,
        timeout=30,
    )


def delete(channel: grpc.Channel, code: str) -> usage_pb2.DeleteMetricResponse:
    return usage_stub(channel).DeleteMetric(
        usage_pb2.DeleteMetricRequest(code=code, request_id=uuid.uuid4().hex),
        metadata=SERVICE_MD,
        timeout=30,
    )


def test_an_update_racing_a_delete_is_applied_first_or_not_found(replica_channels) -> None:  # type: ignore[no-untyped-def]
    one, two = replica_channels
    seen = []
    for _ in range(ROUNDS):
        code = fresh_code()
        usage_stub(one).CreateMetric(create_request(code, uuid.uuid4().hex), metadata=SERVICE_MD)
        updated, deleted = all_at_once(
            [lambda c=code: rename(one, c, name="renamed"), lambda c=code: delete(two, c)]
        )
        seen.append((outcome(updated), outcome(deleted)))
        with pytest.raises(grpc.RpcError) as gone:
            usage_stub(one).GetMetric(usage_pb2.GetMetricRequest(code=code), metadata=SERVICE_MD)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert set(seen) <= {("OK", "OK"), ("NOT_FOUND/NOT_FOUND", "OK")}, seen


def test_concurrent_creates_of_one_code_make_one_metric(replica_channels) -> None:  # type: ignore[no-untyped-def]
    code = fresh_code()
    results = all_at_once(
        [
            lambda i=i: usage_stub(replica_channels[i % 2]).CreateMetric(
                create_request(code, uuid.uuid4().hex, name=f"client {i}"),
                metadata=SERVICE_MD,
                timeout=30,
            )
            for i in range(CLIENTS)
        ]
    )
    outcomes = sorted(outcome(r) for r in results)
    assert outcomes == ["ALREADY_EXISTS/ALREADY_EXISTS"] * (CLIENTS - 1) + ["OK"]
    (winner,) = [r for r in results if isinstance(r, usage_pb2.Metric)]
    got = usage_stub(replica_channels[0]).GetMetric(
        usage_pb2.GetMetricRequest(code=code), metadata=SERVICE_MD
    )
    assert got == winner


def test_copies_of_one_create_under_one_key_answer_alike(replica_channels) -> None:  # type: ignore[no-untyped-def]
    code, key = fresh_code(), uuid.uuid4().hex
    same = all_at_once(
        [
            lambda i=i: usage_stub(replica_channels[i % 2]).CreateMetric(
                create_request(code, key), metadata=SERVICE_MD, timeout=30
            )
            for i in range(CLIENTS)
        ]
    )
    assert all(isinstance(r, usage_pb2.Metric) for r in same), [outcome(r) for r in same]
    assert len({r.SerializeToString(deterministic=True) for r in same}) == 1  # type: ignore[union-attr]
    other = all_at_once(
        [
            lambda i=i: usage_stub(replica_channels[i % 2]).CreateMetric(
                create_request(fresh_code(), key), metadata=SERVICE_MD, timeout=30
            )
            for i in range(CLIENTS)
        ]
    )
    assert {outcome(r) for r in other} == {"INVALID_ARGUMENT/IDEMPOTENCY_KEY_REUSED"}


def test_two_updates_naming_different_fields_keep_both(replica_channels) -> None:  # type: ignore[no-untyped-def]
    one, two = replica_channels
    for _ in range(ROUNDS // 3):
        code = fresh_code()
        usage_stub(one).CreateMetric(create_request(code, uuid.uuid4().hex), metadata=SERVICE_MD)
        results = all_at_once(
            [
                lambda c=code: rename(one, c, name="new name"),
                lambda c=code: rename(two, c, description="new description"),
            ]
        )
        assert [outcome(r) for r in results] == ["OK", "OK"]
        got = usage_stub(one).GetMetric(usage_pb2.GetMetricRequest(code=code), metadata=SERVICE_MD)
        assert (got.name, got.description) == ("new name", "new description")
