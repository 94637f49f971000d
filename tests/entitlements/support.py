"""Helpers of the entitlement tests: the stubs, a metric, events, a bought plan."""

from __future__ import annotations

import datetime as dt
import uuid

from google.protobuf import timestamp_pb2

from billing.v1 import (
    catalog_pb2,
    entitlement_pb2,
    entitlement_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)
from tests.checkout.support import World
from tests.conftest import SERVICE_MD, bearer_md

E = catalog_pb2.Entitlement


def check(
    world: World, feature: str, *, token: str = "", account: str = ""
) -> entitlement_pb2.EntitlementCheck:
    stub = entitlement_pb2_grpc.EntitlementServiceStub(world.channel)
    request = entitlement_pb2.CheckEntitlementRequest(account=account, feature=feature)
    md = bearer_md(token) if token else SERVICE_MD
    return stub.CheckEntitlement(request, metadata=md, timeout=10)


def listing(
    world: World, *, token: str = "", account: str = "", page_size: int = 0, page_token: str = ""
) -> entitlement_pb2.ListEntitlementsResponse:
    stub = entitlement_pb2_grpc.EntitlementServiceStub(world.channel)
    request = entitlement_pb2.ListEntitlementsRequest(
        account=account, page_size=page_size, page_token=page_token
    )
    md = bearer_md(token) if token else SERVICE_MD
    return stub.ListEntitlements(request, metadata=md, timeout=10)


def metric(world: World, code: str, event_name: str) -> None:
    usage_pb2_grpc.UsageServiceStub(world.channel).CreateMetric(
        usage_pb2.CreateMetricRequest(
            metric=usage_pb2.Metric(
                code=code, event_name=event_name, aggregation=usage_pb2.AGGREGATION_COUNT
            ),
            request_id=uuid.uuid4().hex,
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )


def events(
    world: World, account: str, event_name: str, n: int, when: dt.datetime | None = None
) -> None:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when or dt.datetime.now(dt.UTC))
    reply = usage_pb2_grpc.UsageServiceStub(world.channel).IngestEvents(
        usage_pb2.IngestEventsRequest(
            events=[
                usage_pb2.UsageEvent(
                    unique_id=uuid.uuid4().hex,
                    account=account,
                    event_name=event_name,
                    event_time=stamp,
                )
                for _ in range(n)
            ]
        ),
        metadata=SERVICE_MD,
        timeout=30,
    )
    assert {r.status for r in reply.results} == {usage_pb2.EVENT_STATUS_ACCEPTED}


def bought(world: World, token: str, lookup_key: str, quantity: int = 1) -> None:
    """Buys through the sandbox's checkout and waits until its webhooks were applied."""
    answer = world.buy(token, lookup_key, quantity=quantity)
    world.pay(answer.session.stripe_checkout_session_id)
    world.settled()
