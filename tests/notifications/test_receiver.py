"""`tollbooth notifications receive`, the receiver a developer runs on their own machine.

Each test starts the real command in its own process (loopback, a free port, the secret from
BILLING_RECEIVER_SECRET) and POSTs what the delivery process POSTs: bodies signed by
`delivery.headers`, the senders' own signing function.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.devstack import free_port
from tollbooth.notifications.delivery import headers

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + "c2VjcmV0LW9mLXRoZS1yZWNlaXZlci10ZXN0cw=="  # base64 of 30 bytes
OTHER = "whsec_" + "YW5vdGhlci1zZWNyZXQtYWx0b2dldGhlcg=="


@dataclass
class Running:
    proc: subprocess.Popen[str]
    url: str
    out: Path
    err: Path

    def post(
        self, webhook_id: str, body: str, *, secrets: tuple[str, ...] = (SECRET,), at=None
    ) -> int:  # type: ignore[no-untyped-def]
        signed = headers(webhook_id, body, secrets, at or dt.datetime.now(dt.UTC))
        return httpx.post(self.url, content=body.encode(), headers=signed, timeout=10).status_code

    def lines(self) -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)


def start(tmp_path: Path, *args: str, secret: str = SECRET) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env["BILLING_RECEIVER_SECRET"] = secret
    out, err = tmp_path / "out.jsonl", tmp_path / "err.log"
    with open(out, "w") as o, open(err, "w") as e:
        return subprocess.Popen(
            [sys.executable, "-m", "tollbooth.cli", "notifications", "receive", *args],
            env=env,
            cwd=REPO,
            stdout=o,
            stderr=e,
            text=True,
        )


@pytest.fixture
def receiver(request, tmp_path: Path) -> Iterator[Running]:  # type: ignore[no-untyped-def]
    """The command, listening; parametrized indirectly, `request.param` adds its arguments."""
    port = free_port()
    proc = start(tmp_path, "--port", str(port), *getattr(request, "param", ()))
    running = Running(
        proc, f"http://127.0.0.1:{port}/hooks", tmp_path / "out.jsonl", tmp_path / "err.log"
    )
    try:
        deadline = time.monotonic() + 60
        while '"listening"' not in running.err.read_text():
            assert proc.poll() is None, running.err.read_text()
            assert time.monotonic() < deadline, "the receiver did not listen"
            time.sleep(0.05)
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def envelope(n: int) -> tuple[str, str]:
    webhook_id = f"ntf_{n}"
    body = {
        "id": webhook_id,
        "type": "account.credits.balance_depleted",
        "timestamp": "2026-12-03T10:00:00.000000Z",
        "data": {"accountId": "acct_1", "amount": "0", "type": "units"},
    }
    return webhook_id, json.dumps(body)


def test_a_bad_signature_is_refused_and_printed_nowhere(receiver: Running) -> None:
    webhook_id, body = envelope(1)
    assert receiver.post(webhook_id, body, secrets=(OTHER,)) == 401  # another endpoint's secret
    signed = headers(webhook_id, body, (SECRET,), dt.datetime.now(dt.UTC))
    tampered = body.replace('"0"', '"50"')
    assert httpx.post(receiver.url, content=tampered, headers=signed).status_code == 401
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)  # a replay of an old POST
    assert receiver.post(webhook_id, body, at=stale) == 401
    assert httpx.post(receiver.url, content=body).status_code == 401  # no signature at all
    # Signed, but no JSON object: 400.
    assert receiver.post(webhook_id, "not json") == 400
    assert receiver.post(webhook_id, "[1, 2]") == 400
    # None of these counts: the next valid delivery is this id's first attempt.
    assert receiver.post(webhook_id, body) == 204
    assert [(x["webhook_id"], x["attempt"]) for x in receiver.lines()] == [(webhook_id, 1)]
    assert receiver.stop() == 0
    assert receiver.err.read_text().count('"refused"') == 6


@pytest.mark.parametrize("receiver", [("--fail-first", "2")], indirect=True, ids=["fail-2"])
def test_the_first_n_valid_deliveries_are_answered_500_then_204(receiver: Running) -> None:
    first, body = envelope(1)
    second, other = envelope(2)
    assert receiver.post(first, body, secrets=(OTHER,)) == 401  # counts for nothing
    assert [receiver.post(first, body) for _ in range(3)] == [500, 500, 204]
    assert receiver.post(second, other) == 204  # N deliveries in all, not N per message
    assert receiver.post(first, body) == 204  # a resend: the same id, its 4th attempt
    got = [(x["webhook_id"], x["attempt"], x["status"]) for x in receiver.lines()]
    assert got == [
        (first, 1, 500),
        (first, 2, 500),
        (first, 3, 204),
        (second, 1, 204),
        (first, 4, 204),
    ]
    assert receiver.stop() == 0


def test_one_json_line_per_delivery_with_the_parsed_body(receiver: Running) -> None:
    webhook_id, body = envelope(7)
    before = dt.datetime.now(dt.UTC)
    # After a rotation the header carries the new secret's signature and the old one's: a
    # receiver still on the old secret verifies.
    assert receiver.post(webhook_id, body, secrets=(OTHER, SECRET)) == 204
    lines = receiver.out.read_text().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["body"] == json.loads(body)
    assert line["webhook_id"] == webhook_id and line["attempt"] == 1 and line["status"] == 204
    assert int(line["timestamp"]) >= int(before.timestamp())
    assert set(line) == {"webhook_id", "attempt", "status", "timestamp", "body"}
    assert receiver.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_it_cleanly(receiver: Running, sig: int) -> None:
    assert receiver.post(*envelope(1)) == 204
    assert receiver.stop(sig) == 0
    assert "Traceback" not in receiver.err.read_text()
    assert '"stopped"' in receiver.err.read_text()
    assert len(receiver.lines()) == 1


def test_the_secret_comes_from_the_environment_not_the_command_line(receiver: Running) -> None:
    cmdline = Path(f"/proc/{receiver.proc.pid}/cmdline").read_bytes()
    assert SECRET.encode() not in cmdline
    assert receiver.post(*envelope(1)) == 204


@pytest.mark.parametrize(
    "secret", ["", "whsec_", "whsec_!!!!"], ids=["none", "empty", "not-base64"]
)
def test_a_missing_or_malformed_secret_is_a_configuration_error(
    tmp_path: Path, secret: str
) -> None:
    proc = start(tmp_path, "--port", str(free_port()), secret=secret)
    assert proc.wait(timeout=60) == 2
    err = (tmp_path / "err.log").read_text()
    assert err.startswith("configuration error: ") and "Traceback" not in err
    assert (tmp_path / "out.jsonl").read_text() == ""


@pytest.mark.parametrize("secret", ["short", "whsec_", "whsec_!!!!"])
def test_a_malformed_secret_on_the_command_line_is_one_plain_line_naming_what_is_expected(
    tmp_path: Path, secret: str
) -> None:
    """`--secret short`: one line that says what a secret looks like and nothing else (it
    ended with the library's exception class name, `: Error`), exit 2."""
    proc = start(tmp_path, "--port", str(free_port()), "--secret", secret, secret="")
    assert proc.wait(timeout=60) == 2
    lines = (tmp_path / "err.log").read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("configuration error: ") and "whsec_" in lines[0]
    assert not re.search(r"\b\w*(Error|Exception)\b", lines[0]), lines[0]
    shown = secret.removeprefix("whsec_")  # the secret itself is never printed
    assert not shown or shown not in lines[0].removeprefix("configuration error: ")
    assert (tmp_path / "out.jsonl").read_text() == ""


def test_a_taken_port_is_one_line_and_exit_1(receiver: Running, tmp_path: Path) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    second = tmp_path / "second"
    second.mkdir()
    proc = start(second, "--port", port)
    assert proc.wait(timeout=60) == 1
    assert (second / "err.log").read_text().startswith(f"cannot listen on 127.0.0.1:{port}")


def test_it_listens_again_on_its_port_right_after_a_stop(receiver: Running, tmp_path: Path) -> None:
    """A stop closes the connections the delivery process keeps alive, which leaves them in
    TIME_WAIT on the receiver's port for a minute: the next receiver still binds it."""
    port = receiver.url.split(":")[2].split("/")[0]
    with httpx.Client() as kept_alive:  # as the senders' client: the connection stays open
        webhook_id, body = envelope(1)
        signed = headers(webhook_id, body, (SECRET,), dt.datetime.now(dt.UTC))
        assert kept_alive.post(receiver.url, content=body, headers=signed).status_code == 204
        assert receiver.stop() == 0  # the receiver closes first: its side waits
    again = tmp_path / "again"
    again.mkdir()
    proc = start(again, "--port", port)
    try:
        deadline = time.monotonic() + 60
        while '"listening"' not in (again / "err.log").read_text():
            assert proc.poll() is None, (again / "err.log").read_text()
            assert time.monotonic() < deadline, "the second receiver did not listen"
            time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0


# A stop asked for before uvicorn has taken the signals over (the window between the
# `listening` line and uvicorn's own handlers): uvicorn's serve is entered only after SIGTERM
# has arrived. Run as a script so the signal and a hang stay in their own process.
_EARLY_STOP = """
import signal, sys
import uvicorn
from tollbooth.notifications import receiver

original = uvicorn.Server.serve

async def late(self, sockets=None):
    signal.raise_signal(signal.SIGTERM)
    await original(self, sockets)

uvicorn.Server.serve = late
receiver.serve(
    receiver.Receiver(receiver.webhook(sys.argv[1]), 0), receiver.bind("127.0.0.1", 0)
)
"""


def test_a_stop_that_arrives_before_the_server_takes_the_signals_still_ends_it() -> None:
    """SIGTERM right after `listening` (before uvicorn installs its handlers) is not lost:
    the receiver ends, exit 0, instead of running on with the signal swallowed."""
    proc = subprocess.Popen([sys.executable, "-c", _EARLY_STOP, SECRET], cwd=REPO, text=True)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0


def test_a_sender_that_hangs_up_mid_body_is_one_warning_not_a_traceback(receiver: Running) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(receiver.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /hooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"id": '
        )
        time.sleep(0.3)  # then the sender goes away, 993 bytes short
    webhook_id, body = envelope(1)
    assert receiver.post(webhook_id, body) == 204  # still serving
    assert receiver.stop() == 0
    err = receiver.err.read_text()
    assert "Traceback" not in err and '"level": "ERROR"' not in err, err
    assert "hung up" in err
    assert [line["webhook_id"] for line in receiver.lines()] == [webhook_id]
