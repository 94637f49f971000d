"""Servers with their own limit settings, for the limit tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from billing.v1 import token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD, make_env
from tests.helpers import keyed
from tollbooth.app import Deps, build_server
from tollbooth.config import Settings
from tollbooth.db import Database


@contextmanager
def server(database_url: str, **env: str) -> Iterator[tuple[grpc.Channel, Deps, object]]:
    """One billing server (own Deps, own limiter) and a channel to it; the server's health
    servicer third."""
    settings = Settings.from_env(make_env(database_url, **env))
    deps = Deps.build(settings, Database(database_url))
    srv, port, health = build_server(deps, "127.0.0.1:0")
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel, deps, health
    finally:
        channel.close()
        srv.stop(grace=None).wait()
        deps.db.dispose()


def token(channel: grpc.Channel, principal: str, scopes: tuple[str, ...] = ("checkout",)) -> str:
    stub = token_pb2_grpc.TokenServiceStub(channel)
    reply = stub.IssueToken(
        keyed(token_pb2.IssueTokenRequest(principal_id=principal, scopes=list(scopes))),
        metadata=SERVICE_MD,
    )
    return str(reply.access_token)


def retry_delay(err: grpc.RpcError) -> int | None:
    """RetryInfo.retry_delay seconds of a failed call, if it carries one."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return int(info.retry_delay.seconds)
    return None
