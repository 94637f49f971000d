"""Helpers for usage tests: accounts, events, stubs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from billing.v1 import token_pb2, token_pb2_grpc, usage_pb2, usage_pb2_grpc
from tests.conftest import SERVICE_MD

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
T0 = NOW - dt.timedelta(days=2)

ACCEPTED = usage_pb2.EVENT_STATUS_ACCEPTED
DUPLICATE = usage_pb2.EVENT_STATUS_DUPLICATE
REJECTED = usage_pb2.EVENT_STATUS_REJECTED


def usage_stub(channel: grpc.Channel) -> usage_pb2_grpc.UsageServiceStub:
    return usage_pb2_grpc.UsageServiceStub(channel)


def issue(
    channel: grpc.Channel, principal: str, scopes: tuple[str, ...] = ("usage:read",)
) -> token_pb2.IssueTokenResponse:
    """Creates (or confirms) the principal's account and returns a bearer token for it."""
    stub = token_pb2_grpc.TokenServiceStub(channel)
    return stub.IssueToken(
        token_pb2.IssueTokenRequest(principal_id=principal, scopes=list(scopes)),
        metadata=SERVICE_MD,
        timeout=10,
    )


def account(channel: grpc.Channel, principal: str) -> str:
    return issue(channel, principal).billing_account_id


def stamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out


def event(
    unique_id: str,
    account: str,
    name: str = "api_call",
    when: dt.datetime | None = None,
    properties: dict[str, Any] | None = None,
) -> usage_pb2.UsageEvent:
    msg = usage_pb2.UsageEvent(
        unique_id=unique_id,
        account=account,
        event_name=name,
        event_time=stamp(when or T0),
    )
    if properties:
        msg.properties.update(properties)
    return msg


def ingest(
    channel: grpc.Channel, events: list[usage_pb2.UsageEvent]
) -> list[usage_pb2.EventResult]:
    resp = usage_stub(channel).IngestEvents(
        usage_pb2.IngestEventsRequest(events=events), metadata=SERVICE_MD, timeout=30
    )
    return list(resp.results)
