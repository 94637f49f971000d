"""Store first, then apply (issue 14, finding 4): every verified event is committed before its
effects run; a failure is recorded on the event and retried with backoff by the server itself;
operators list events by status and replay failed ones (gRPC, REST, CLI)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import event, exc, update

from billing.v1 import catalog_pb2, webhook_pb2, webhook_pb2_grpc
from tests.checkout.conftest import shop  # noqa: F401 - fixture
from tests.checkout.support import Shop, World, events_of, signed_send, start_world, wait_for
from tests.conftest import SERVICE_MD, WEBHOOK_SECRET, make_env
from tests.devstack import migrated_sqlite
from tollbooth import cli
from tollbooth.app import Deps, inbox, inbox_worker
from tollbooth.config import Settings
from tollbooth.db import Database
from tollbooth.db.models import CreditGrant, StripeEvent
from tollbooth.db.types import utcnow
from tollbooth.webhooks import repository, service
from tollbooth.webhooks.signature import header

GRANTS = [
    catalog_pb2.CreditGrantSpec(
        credit_type="api_calls", amount="100", on_purchase=True, on_renewal=True
    )
]
FAILED = webhook_pb2.STRIPE_EVENT_STATUS_FAILED
APPLIED = webhook_pb2.STRIPE_EVENT_STATUS_APPLIED
IGNORED = webhook_pb2.STRIPE_EVENT_STATUS_IGNORED


@pytest.fixture
def quiet(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    # The worker's first retry after 0.5 s, not 10 (the retry test waits for it).
    w = start_world(database_url, tmp_path, deliver=False, BILLING_INBOX_RETRY_FIRST_MS="500")
    yield w
    w.stop()


def paid_checkout(world: World) -> tuple[str, str]:
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    return account, stripe_id


def stored(world: World, event_id: str) -> StripeEvent:
    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(StripeEvent, event_id)
        assert row is not None
        session.expunge(row)
        return row


class GrantFault:
    """The first `times` inserts of a credit grant fail as a lost connection would."""

    def __init__(self, world: World, times: int = 1) -> None:
        self.engine = world.deps.db.engine
        self.left = times
        self.hits = 0

    def __call__(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO CREDIT_GRANTS") and self.left:
            self.left -= 1
            self.hits += 1
            raise exc.OperationalError(statement, parameters, Exception("connection lost"))

    def __enter__(self) -> GrantFault:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *args: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self)


def operator(world: World) -> webhook_pb2_grpc.StripeEventServiceStub:
    return webhook_pb2_grpc.StripeEventServiceStub(world.channel)


def test_backoff_doubles_from_ten_seconds_caps_at_an_hour_and_stops_after_max_attempts():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    delays = [service.backoff(n, now) for n in range(1, service.MAX_ATTEMPTS + 1)]
    seconds = [(d - now).total_seconds() for d in delays if d is not None]
    assert seconds[:4] == [10, 20, 40, 80]
    assert max(seconds) == service.BACKOFF_MAX_SEC
    assert delays[-1] is None  # the last allowed attempt failed: no automatic retry


def test_the_first_retry_delay_is_the_setting_and_doubles_from_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    delays = [service.backoff(n, now, first_sec=0.5) for n in range(1, 5)]
    assert [(d - now).total_seconds() for d in delays if d is not None] == [0.5, 1, 2, 4]
    url = migrated_sqlite(tmp_path / "billing.db")
    assert Settings.from_env(make_env(url)).inbox_retry_first_ms == 10_000
    deps = Deps.build(Settings.from_env(make_env(url, BILLING_INBOX_RETRY_FIRST_MS="500")))
    try:
        assert inbox(deps).retry_first_sec == 0.5
        assert inbox_worker(deps).inbox.retry_first_sec == 0.5
    finally:
        deps.db.dispose()


def test_the_servers_worker_retries_a_failed_event_by_itself(quiet: World):
    account, stripe_id = paid_checkout(quiet)
    completed = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    with GrantFault(quiet) as fault:
        assert signed_send(quiet, json.dumps(completed).encode()) == 200
    assert fault.hits == 1
    assert stored(quiet, completed["id"]).status == "failed"
    worker = inbox_worker(quiet.deps, interval_sec=0.2).start()
    try:
        wait_for(lambda: stored(quiet, completed["id"]).status == "applied", 60, "the retry")
    finally:
        worker.stop()
    assert quiet.balance(account, "api_calls") == "100"
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 1


def test_an_event_that_keeps_failing_is_listed_failed_with_its_error_and_replayed(quiet: World):
    account, stripe_id = paid_checkout(quiet)
    completed = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    with GrantFault(quiet, times=100):
        assert signed_send(quiet, json.dumps(completed).encode()) == 200
        with quiet.deps.db.transaction() as session:  # it has failed all but one attempt
            session.execute(
                update(StripeEvent)
                .where(StripeEvent.event_id == completed["id"])
                .values(attempts=service.MAX_ATTEMPTS - 1)
            )
        far = utcnow() + dt.timedelta(days=1)
        assert [o.status for _, o in inbox_worker(quiet.deps).run_once(now=far)] == ["failed"]
    row = stored(quiet, completed["id"])
    assert (row.attempts, row.next_attempt_at) == (service.MAX_ATTEMPTS, None)
    assert inbox_worker(quiet.deps).run_once(now=far + dt.timedelta(days=30)) == []
    listed = operator(quiet).ListStripeEvents(
        webhook_pb2.ListStripeEventsRequest(status=FAILED), metadata=SERVICE_MD, timeout=10
    )
    assert [(e.event_id, e.attempts) for e in listed.events] == [
        (completed["id"], service.MAX_ATTEMPTS)
    ]
    # One clean line: the class and the reason, never SQLAlchemy's [SQL: ...] or its parameters.
    last_error = listed.events[0].last_error
    assert last_error.startswith("OperationalError: ") and "connection lost" in last_error
    assert "\n" not in last_error and "[SQL" not in last_error and "INSERT" not in last_error
    assert "parameters" not in last_error
    assert not listed.events[0].HasField("next_attempt_at")
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 0
    replayed = operator(quiet).ReplayStripeEvents(
        webhook_pb2.ReplayStripeEventsRequest(all_failed=True), metadata=SERVICE_MD, timeout=30
    )
    assert [(e.event_id, e.status) for e in replayed.events] == [(completed["id"], APPLIED)]
    assert quiet.balance(account, "api_calls") == "100"
    again = operator(quiet).ReplayStripeEvents(
        webhook_pb2.ReplayStripeEventsRequest(event_id=completed["id"]),
        metadata=SERVICE_MD,
        timeout=30,
    )
    assert again.events[0].status == APPLIED
    assert quiet.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
    remaining = operator(quiet).ListStripeEvents(
        webhook_pb2.ListStripeEventsRequest(status=FAILED), metadata=SERVICE_MD, timeout=10
    )
    assert list(remaining.events) == []


def test_replay_needs_one_target_and_a_known_event(quiet: World):
    import grpc

    from tests.helpers import error_reason

    # A blank event_id names no event: no target. A tab or line break is a control
    # character, refused at the edge like in every one-line field.
    for blank, reason in (
        ("", "REPLAY_TARGET_REQUIRED"),
        ("   ", "REPLAY_TARGET_REQUIRED"),
        ("\t\n", "FIELD_INVALID"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            operator(quiet).ReplayStripeEvents(
                webhook_pb2.ReplayStripeEventsRequest(event_id=blank),
                metadata=SERVICE_MD,
                timeout=10,
            )
        assert error_reason(err.value) == reason, repr(blank)
    with pytest.raises(grpc.RpcError) as err:
        operator(quiet).ReplayStripeEvents(
            webhook_pb2.ReplayStripeEventsRequest(event_id="evt_nope"),
            metadata=SERVICE_MD,
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_event_list_pages_newest_first(quiet: World):
    ids = [f"evt_page_{n}" for n in range(5)]
    for ident in ids:
        body = json.dumps({"id": ident, "object": "event", "type": "x.y", "data": {}}).encode()
        assert signed_send(quiet, body) == 200
    seen: list[str] = []
    token = ""
    while True:
        page = operator(quiet).ListStripeEvents(
            webhook_pb2.ListStripeEventsRequest(status=IGNORED, page_size=2, page_token=token),
            metadata=SERVICE_MD,
            timeout=10,
        )
        seen.extend(e.event_id for e in page.events)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))


@pytest.mark.postgres
def test_two_replicas_claim_disjoint_due_events_with_skip_locked(pg_url: str, tmp_path):  # type: ignore[no-untyped-def]
    first, second = Database(pg_url), Database(pg_url)
    try:
        tag = uuid.uuid4().hex[:8]
        with first.transaction() as session:
            for n in range(6):
                repository.insert_event(
                    session,
                    event_id=f"evt_{tag}_{n}",
                    type_="x.y",
                    api_version="",
                    livemode=False,
                    created=None,
                    payload=b"{}",
                    next_attempt_at=utcnow() - dt.timedelta(seconds=1),
                )
        now = utcnow()
        lease = utcnow() + dt.timedelta(minutes=5)
        claimed: dict[str, list[str]] = {}
        holding, done = threading.Event(), threading.Event()

        def replica_one() -> None:
            with first.transaction() as session:
                claimed["one"] = repository.claim_due(session, now, lease, 3)
                holding.set()
                done.wait(30)  # its transaction (and row locks) still open

        thread = threading.Thread(target=replica_one)
        thread.start()
        assert holding.wait(30)
        with second.transaction() as session:
            claimed["two"] = repository.claim_due(session, now, lease, 10)
        done.set()
        thread.join(30)
        ours = {f"evt_{tag}_{n}" for n in range(6)}
        one, two = set(claimed["one"]) & ours, set(claimed["two"]) & ours
        assert len(one) == 3 and one.isdisjoint(two) and one | two == ours
        with second.transaction() as session:  # leased: nobody takes them again meanwhile
            assert set(repository.claim_due(session, now, lease, 10)) & ours == set()
    finally:
        first.dispose()
        second.dispose()


def test_rest_lists_stripe_events_by_status_and_replays_one(shop: Shop):  # noqa: F811
    ident = f"evt_rest_{uuid.uuid4().hex[:10]}"
    body = json.dumps(
        {"id": ident, "object": "event", "type": "radar.value_list.created", "data": {}}
    ).encode()
    sent = shop.stack.request(
        "POST",
        "/v1/billing/webhooks",
        body,
        {"Stripe-Signature": header(body, WEBHOOK_SECRET)},
    )
    assert sent.status == 200, sent.body
    listed = shop.request("GET", "/mgt/v1/stripe/events?status=STRIPE_EVENT_STATUS_IGNORED")
    assert listed.status == 200, listed.body
    mine = [e for e in listed.json()["events"] if e["event_id"] == ident]
    assert mine and mine[0]["last_error"] == "no handler for radar.value_list.created"
    replayed = shop.request("POST", "/mgt/v1/stripe/events:replay", {"event_id": ident})
    assert replayed.status == 200, replayed.body
    assert replayed.json()["events"][0]["status"] == "STRIPE_EVENT_STATUS_IGNORED"
    missing = shop.request("POST", "/mgt/v1/stripe/events:replay", {"event_id": "evt_none"})
    assert missing.status == 404
    unsigned = shop.request("GET", "/mgt/v1/stripe/events", token="not-a-token")
    assert unsigned.status in (401, 403)


def test_cli_lists_failed_events_and_replays_them(quiet: World, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    from tests.conftest import make_env

    env = make_env(
        quiet.settings.database_url, BILLING_SANDBOX_PORT=str(quiet.settings.sandbox_port)
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    account, stripe_id = paid_checkout(quiet)
    completed = events_of(quiet, "checkout.session.completed", stripe_id)[0]
    with GrantFault(quiet):
        assert signed_send(quiet, json.dumps(completed).encode()) == 200
    capsys.readouterr()
    assert cli.main(["webhooks", "list", "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert completed["id"] in out and "OperationalError" in out and "attempts=1" in out
    assert cli.main(["webhooks", "replay", "--failed"]) == 0
    assert "replayed 1:" in capsys.readouterr().out
    assert quiet.balance(account, "api_calls") == "100"
    assert cli.main(["webhooks", "list", "--status", "failed"]) == 0
    assert capsys.readouterr().out == ""
