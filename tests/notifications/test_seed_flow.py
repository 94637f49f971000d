"""Seed 001 step 3 through Envoy on PostgreSQL: 50 trial credits debited to zero bring exactly
one signed `account.credits.balance_depleted` to a registered receiver, on its third attempt
after two 500s; none more while the balance stays at zero; resend works, from REST and the CLI.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from tests.conftest import SERVICE_KEY, make_env
from tollbooth import cli
from tollbooth.db.models import NotificationOutbox
from tollbooth.notifications.delivery import Deliverer, Policy

SERVICE = {"x-api-key": SERVICE_KEY}
FAST = Policy(timeout_sec=2, retry_first_sec=0.05, retry_max_sec=0.2, poll_sec=0.02)


@pytest.fixture
def pg_stack(pg_url: str, tmp_path) -> Iterator:  # type: ignore[no-untyped-def,type-arg]
    from tests.devstack import start_stack

    s = start_stack(pg_url, make_env(pg_url), tmp_path)
    yield s
    s.close()


class Running:
    """A delivery process's loop in a thread of the test, on the stack's database."""

    def __init__(self, stack) -> None:  # type: ignore[no-untyped-def]
        self.deliverer = Deliverer(stack.deps.db, FAST)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.deliverer.run, args=(self.stop,))
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.deliverer.close()


def key() -> str:
    return uuid.uuid4().hex


@pytest.mark.envoy
@pytest.mark.timeout(300)
def test_trial_credits_debited_to_zero_notify_once_through_envoy(
    pg_stack, receiver, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    stack = pg_stack
    receiver.fail_first = 2  # the receiver answers 500 twice
    made = stack.request(
        "POST",
        "/mgt/v1/notifications/endpoints",
        {
            "endpoint": {
                "url": receiver.url,
                "eventTypes": ["account.credits.balance_depleted"],
                "description": "upgrade prompts",
            },
            "requestId": key(),
        },
        SERVICE,
    )
    assert made.status == 200, made.body
    receiver.secret = made.json()["secret"]
    endpoint_id = made.json()["endpoint"]["endpoint_id"]

    issued = stack.request(
        "POST",
        "/mgt/v1/token/issue",
        {"principal_id": f"user-{key()[:8]}", "scopes": ["credits:read"]},
        SERVICE,
    ).json()
    acct = issued["billing_account_id"]
    grant = {"creditType": "units", "amount": "50", "reason": "Trial", "requestId": key()}
    resp = stack.request("POST", f"/mgt/v1/accounts/{acct}/credits/grants", grant, SERVICE)
    assert resp.status == 200, resp.body
    running = Running(stack)
    try:
        for _ in range(5):
            debit = {"creditType": "units", "amount": "10", "requestId": key()}
            resp = stack.request("POST", f"/mgt/v1/accounts/{acct}/credits/debits", debit, SERVICE)
            assert resp.status == 200, resp.body
        balance = stack.request(
            "GET", f"/mgt/v1/accounts/{acct}/credits/balance?type=units", headers=SERVICE
        ).json()
        assert balance["balance"] == "0"
        receiver.wait_for(1)
        # the balance stays at zero: refused debits, and nothing more is sent
        for _ in range(2):
            debit = {"creditType": "units", "amount": "1", "requestId": key()}
            resp = stack.request("POST", f"/mgt/v1/accounts/{acct}/credits/debits", debit, SERVICE)
            assert resp.status >= 400
        with stack.deps.db.transaction(readonly=True) as s:
            depletions = s.scalar(
                select(func.count())
                .select_from(NotificationOutbox)
                .where(NotificationOutbox.billing_account_id == acct)
                .where(NotificationOutbox.type == "credits.balance_depleted")
            )
            unpositioned = s.scalar(
                select(func.count())
                .select_from(NotificationOutbox)
                .where(NotificationOutbox.position.is_(None))
            )
        assert depletions == 1
        deadline = time.monotonic() + 30  # let the process pick up anything else there is
        while unpositioned and time.monotonic() < deadline:
            time.sleep(0.1)
            with stack.deps.db.transaction(readonly=True) as s:
                unpositioned = s.scalar(
                    select(func.count())
                    .select_from(NotificationOutbox)
                    .where(NotificationOutbox.position.is_(None))
                )
        assert len(receiver.accepted) == 1
        msg = receiver.accepted[0]
        assert set(msg) == {"id", "type", "timestamp", "data"}
        assert msg["type"] == "account.credits.balance_depleted"
        assert msg["data"] == {"accountId": acct, "amount": "0", "type": "units"}
        assert msg["timestamp"].endswith("Z")
        ntf = msg["id"]
        assert receiver.posts[ntf] == 3 and receiver.rejected_signatures == 0

        # inspection over REST: the message is delivered after three attempts (the sender
        # records the delivery after the receiver has answered: wait for that write)
        deadline = time.monotonic() + 30
        while True:
            listed = stack.request(
                "GET",
                f"/mgt/v1/notifications/endpoints/{endpoint_id}/messages"
                "?state=NOTIFICATION_MESSAGE_STATE_DELIVERED",
                headers=SERVICE,
            ).json()
            if listed.get("messages") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [
            (m["notification"]["notification_id"], m["attempts"]) for m in listed["messages"]
        ] == [(ntf, 3)]
        attempts = stack.request(
            "GET", f"/mgt/v1/notifications/endpoints/{endpoint_id}/attempts", headers=SERVICE
        ).json()["attempts"]
        assert [a["status_code"] for a in attempts] == [204, 500, 500]  # newest first

        # resend over REST: the same message (same webhook-id) arrives again
        resent = stack.request(
            "POST",
            f"/mgt/v1/notifications/endpoints/{endpoint_id}/messages/{ntf}:resend",
            {"requestId": key()},
            SERVICE,
        )
        assert resent.status == 200, resent.body
        deadline = time.monotonic() + 60
        while receiver.ok_posts[ntf] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.ok_posts[ntf] == 2

        # resend from the command line (an operator on the same database)
        for k, v in make_env(stack.settings.database_url).items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("BILLING_DATA_DIR", str(stack.tmp))
        code = cli.main(["notifications", "resend", endpoint_id, "--notification-id", ntf])
        assert (code, capsys.readouterr().out.strip()) == (0, "queued 1 message(s) again")
        deadline = time.monotonic() + 60
        while receiver.ok_posts[ntf] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.ok_posts[ntf] == 3
        assert len(receiver.accepted) == 1  # deduplicated by webhook-id at the receiver
    finally:
        running.close()
    code = cli.main(["notifications", "attempts", endpoint_id, "--notification-id", ntf])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [r["status_code"] for r in rows] == [204, 204, 204, 500, 500]
    code = cli.main(["notifications", "messages", endpoint_id, "--state", "delivered"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [(r["notification_id"], r["type"]) for r in rows] == [
        (ntf, "account.credits.balance_depleted")
    ]


@pytest.mark.envoy
def test_bad_endpoint_over_rest_is_a_400_with_a_reason(pg_stack) -> None:  # type: ignore[no-untyped-def]
    resp = pg_stack.request(
        "POST",
        "/mgt/v1/notifications/endpoints",
        {"endpoint": {"url": "javascript:alert(1)"}, "requestId": key()},
        SERVICE,
    )
    assert resp.status == 400 and resp.reason == "URL_INVALID"
    listed = pg_stack.request("GET", "/mgt/v1/notifications/endpoints", headers=SERVICE).json()
    assert listed["endpoints"] == []
