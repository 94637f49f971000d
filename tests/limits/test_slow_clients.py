"""Slow clients are cut: Envoy bounds header time, whole-request time and idle time; the
sidecar bounds header time itself and survives a slow-header flood straight to it. Real
webhooks keep answering 2xx meanwhile. (Small configured bounds; the assertions are about
closure, with generous deadlines, never about the speed of the fast path.)"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import WEBHOOK_SECRET, make_env
from tests.devstack import Stack, migrated_sqlite, start_stack
from tollbooth.webhooks.signature import header

pytestmark = pytest.mark.envoy
PATH = "/v1/billing/webhooks"
BOUND_SEC = 2


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("slow")
    url = migrated_sqlite(tmp / "billing.db")
    env = make_env(
        url,
        BILLING_HTTP_HEADERS_TIMEOUT_SEC=str(BOUND_SEC),
        BILLING_HTTP_REQUEST_TIMEOUT_SEC=str(BOUND_SEC + 1),
        BILLING_HTTP_IDLE_TIMEOUT_SEC=str(BOUND_SEC),
    )
    stack = start_stack(url, env, tmp)
    yield stack
    stack.close()


def rest_port(stack: Stack) -> int:
    return int(stack.rest_url.rsplit(":", 1)[1])


def signed_event() -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "object": "event",
            "type": "customer.created",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": {"id": "cus_1"}},
        }
    ).encode()
    return body, {"Stripe-Signature": header(body, WEBHOOK_SECRET)}


def opened(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(first)
    sock.setblocking(False)
    return sock


def is_closed(sock: socket.socket) -> bool:
    """The peer closed (after its 408, if it sent one): EOF or a reset."""
    try:
        while True:
            if sock.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def trickle_until_closed(socks: list[socket.socket], byte: bytes, within: float) -> int:
    """Send one byte on every open socket each half second until all are closed or `within`
    seconds pass; how many were closed."""
    closed: set[int] = set()
    deadline = time.monotonic() + within
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for i, sock in enumerate(socks):
            if i in closed:
                continue
            if is_closed(sock):
                closed.add(i)
                continue
            try:
                sock.send(byte)
            except OSError:
                closed.add(i)
        time.sleep(0.5)
    for sock in socks:
        sock.close()
    return len(closed)


def test_slow_headers_through_envoy_are_cut(slow_stack: Stack) -> None:
    socks = [
        opened(rest_port(slow_stack), b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(5)
    ]
    assert trickle_until_closed(socks, b"X", within=20 * BOUND_SEC) == 5


def test_slow_bodies_through_envoy_are_cut_while_webhooks_answer(slow_stack: Stack) -> None:
    start = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
    socks = [opened(rest_port(slow_stack), start) for _ in range(20)]
    body, headers = signed_event()
    answer = slow_stack.request("POST", PATH, body, headers)
    assert answer.status == 200, answer.body
    assert trickle_until_closed(socks, b"{", within=20 * BOUND_SEC) == 20


def test_an_idle_request_through_envoy_is_cut(slow_stack: Stack) -> None:
    start = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n".encode()
    sock = opened(rest_port(slow_stack), start)
    deadline = time.monotonic() + 20 * BOUND_SEC
    while not is_closed(sock) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert is_closed(sock)
    sock.close()


def test_the_sidecar_survives_a_slow_header_flood_straight_to_it(slow_stack: Stack) -> None:
    sidecar = slow_stack.settings.sidecar_port
    flood = [opened(sidecar, f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode()) for _ in range(1050)]
    try:
        body, headers = signed_event()
        direct = httpx.post(f"http://127.0.0.1:{sidecar}{PATH}", content=body, headers=headers)
        assert direct.status_code == 200, direct.text
        body, headers = signed_event()
        answer = slow_stack.request("POST", PATH, body, headers)
        assert answer.status == 200, answer.body
        assert trickle_until_closed(flood, b"X", within=20 * BOUND_SEC) == 1050
    finally:
        for sock in flood:
            sock.close()
