"""A database that cannot be reached answers UNAVAILABLE SERVICE_UNAVAILABLE, never INTERNAL,
so the client retries it with the same request_id (usage ingest: with the same events, whose
unique_id is the retry key)."""

from __future__ import annotations

import grpc
import pytest

from billing.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    credit_pb2,
    credit_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from tests.conftest import SERVICE_KEY, SERVICE_MD, make_env
from tests.devstack import free_port, grpc_server
from tests.helpers import error_reason
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db import Database
from tollbooth_client import BillingClient, BillingError


@pytest.fixture
def dead_db_server(tmp_path):  # type: ignore[no-untyped-def]
    # Nothing listens on this port: every connection attempt is refused at once.
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    settings = Settings.from_env(make_env(url, BILLING_DATA_DIR=str(tmp_path)))
    deps = Deps.build(settings, Database(url))
    with grpc_server(deps) as port:
        yield f"127.0.0.1:{port}"
    deps.db.dispose()


def test_database_down_is_unavailable_with_a_reason(dead_db_server) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(dead_db_server) as channel:
        for call in (
            lambda: token_pb2_grpc.TokenServiceStub(channel).IssueToken(
                token_pb2.IssueTokenRequest(principal_id="p"), metadata=SERVICE_MD, timeout=30
            ),
            lambda: catalog_pb2_grpc.CatalogServiceStub(channel).ListProducts(
                catalog_pb2.ListProductsRequest(), metadata=SERVICE_MD, timeout=30
            ),
            lambda: credit_pb2_grpc.CreditServiceStub(channel).GetBalance(
                credit_pb2.GetBalanceRequest(account="p", type="units"),
                metadata=SERVICE_MD,
                timeout=30,
            ),
        ):
            with pytest.raises(grpc.RpcError) as exc:
                call()
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(exc.value) == "SERVICE_UNAVAILABLE"
            assert "postgres" not in (exc.value.details() or "")
            assert "request_id" in (exc.value.details() or "")


def test_usage_ingest_outage_names_the_unique_id_as_the_retry_key(dead_db_server) -> None:  # type: ignore[no-untyped-def]
    """IngestEvent(s) and StreamEvents take no request_id: each event's unique_id makes a retry
    count once, so that is what the message tells the sender to keep."""
    one = usage_pb2.UsageEvent(unique_id="evt_down", account="p", event_name="api_call")
    one.event_time.GetCurrentTime()
    with grpc.insecure_channel(dead_db_server) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        for call in (
            lambda: stub.IngestEvent(
                usage_pb2.IngestEventRequest(event=one), metadata=SERVICE_MD, timeout=30
            ),
            lambda: stub.IngestEvents(
                usage_pb2.IngestEventsRequest(events=[one]), metadata=SERVICE_MD, timeout=30
            ),
            lambda: list(
                stub.StreamEvents(
                    iter([usage_pb2.StreamEventsRequest(event=one)]),
                    metadata=SERVICE_MD,
                    timeout=30,
                )
            ),
        ):
            with pytest.raises(grpc.RpcError) as exc:
                call()
            details = exc.value.details() or ""
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(exc.value) == "SERVICE_UNAVAILABLE"
            assert "unique_id" in details and "request_id" not in details, details


def test_the_client_retries_a_database_outage_with_the_same_request_id(dead_db_server) -> None:  # type: ignore[no-untyped-def]
    client = BillingClient(
        dead_db_server, service_key=SERVICE_KEY, initial_backoff=0.01, max_backoff=0.02
    )
    with client, pytest.raises(BillingError) as exc:
        client.call(
            "CatalogService.CreateProduct",
            catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(name="P")),
        )
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE
    assert exc.value.reason == "SERVICE_UNAVAILABLE"
    assert exc.value.request_id  # the id every retry carried, to resend after the outage
