"""Servers with their own limit settings, for the limit tests."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from billing.v1 import token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD, make_env
from tests.devstack import HeldPorts, Response
from tests.helpers import keyed
from tollbooth.app import Deps, build_server
from tollbooth.config import Settings
from tollbooth.db import Database
from tollbooth.gateway import render, start_envoy

PORTS: dict[int, int] = {}


@contextmanager
def server(database_url: str, **env: str) -> Iterator[tuple[grpc.Channel, Deps, Any]]:
    """One billing server (own Deps, own limiter) and a channel to it; the server's health
    servicer third. `deps.settings` is the server's; its port is `channel_port[channel]`."""
    settings = Settings.from_env(make_env(database_url, **env))
    deps = Deps.build(settings, Database(database_url))
    srv, port, health = build_server(deps, "127.0.0.1:0")
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    PORTS[id(channel)] = port
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


@dataclass
class Gateway:
    """A real Envoy in front of the given replicas (and sidecar), rendered from settings."""

    rest_url: str
    admin_url: str
    process: subprocess.Popen[bytes]

    def request(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> Response:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.rest_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, dict(err.headers), err.read())

    def clusters(self) -> str:
        with urllib.request.urlopen(self.admin_url + "/clusters", timeout=5) as resp:
            return str(resp.read().decode())


@contextmanager
def gateway(
    database_url: str, tmp: Path, grpc_ports: list[int], sidecar_port: int | None = None, **env: str
) -> Iterator[Gateway]:
    # Envoy's two ports stay held until Envoy starts; without a sidecar, the sidecar port it
    # is given stays held (refusing) while it runs, so nothing else comes to answer there.
    with HeldPorts(3) as held:
        rest, admin, no_sidecar = held.ports
        settings = Settings.from_env(
            make_env(
                database_url,
                BILLING_REST_PORT=str(rest),
                BILLING_ENVOY_ADMIN_PORT=str(admin),
                BILLING_SIDECAR_PORT=str(sidecar_port or no_sidecar),
                **env,
            )
        )
        config = render(settings, tmp, grpc_ports=grpc_ports, sidecar_port=sidecar_port)
        held.release(rest, admin)
        process = start_envoy(config, tmp / "envoy.log")
        gw = Gateway(f"http://127.0.0.1:{rest}", f"http://127.0.0.1:{admin}", process)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, (tmp / "envoy.log").read_text()[-2000:]
                try:
                    with urllib.request.urlopen(gw.admin_url + "/ready", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "envoy did not become ready"
                time.sleep(0.1)
            yield gw
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def port_of(channel: grpc.Channel) -> int:
    return PORTS[id(channel)]
