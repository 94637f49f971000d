"""Exactly once at the provider boundary (issue 14, checkout side).

One open checkout per account and subscription group, with two real concurrent gRPC clients;
retries with the same request_id after a provider timeout; no provider call inside a database
transaction (a held sandbox call, and an unrelated write that completes meanwhile).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
import stripe

from billing.v1 import catalog_pb2, checkout_pb2, checkout_pb2_grpc, credit_pb2
from tests.checkout.support import World, start_world, transactions_open, wait_for
from tests.conftest import SERVICE_MD, bearer_md
from tests.devstack import grpc_server
from tests.helpers import error_reason
from tollbooth.db.models import CheckoutSession
from tollbooth.db.types import utcnow

CREDITS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="1000", on_purchase=True)]
CHECKOUT_PATH = "/v1/checkout/sessions"
# A reconcile run that gives up on a late provider answer at once.
IMPATIENT = {"STRIPE_TIMEOUT_SEC": "1", "STRIPE_MAX_NETWORK_RETRIES": "0"}


@pytest.fixture
def pg_world(request: pytest.FixtureRequest, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    from tests.conftest import _truncate

    url = request.getfixturevalue("pg_base_url")
    _truncate(url)
    w = start_world(url, tmp_path)
    yield w
    w.stop()


@pytest.fixture
def impatient_world(tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """SQLite; the provider client gives up after 1 s and never retries by itself."""
    from tests.devstack import migrated_sqlite

    w = start_world(
        migrated_sqlite(tmp_path / "billing.db"),
        tmp_path,
        STRIPE_TIMEOUT_SEC="1",
        STRIPE_MAX_NETWORK_RETRIES="0",
    )
    yield w
    w.stop()


def tab(world: World, token: str, lookup_key: str, request_id: str = "") -> Any:
    """A buyer's browser tab: its own channel (a real, separate gRPC client)."""
    channel = grpc.insecure_channel(world.grpc_target)
    try:
        return checkout_pb2_grpc.CheckoutServiceStub(channel).CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                items=[checkout_pb2.CheckoutItem(lookup_key=lookup_key)],
                success_url="https://app.example/ok?cs={CHECKOUT_SESSION_ID}",
                cancel_url="https://app.example/pricing",
                request_id=request_id,
            ),
            metadata=bearer_md(token),
            timeout=60,
        )
    finally:
        channel.close()


def open_sessions(world: World, customer: str) -> list[str]:
    listed = world.stripe.v1.checkout.sessions.list(params={"customer": customer, "limit": 100})
    return [s.id for s in listed.data if s.status == "open"]


def customer_of(world: World, account: str) -> str:
    from tollbooth.db.models import BillingAccount

    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(BillingAccount, account)
        assert row is not None and row.stripe_customer_id
        return row.stripe_customer_id


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [f.result() for f in [pool.submit(run, c) for c in calls]]


# -- one open checkout per account and group (finding 1) --------------------------------------


def test_two_tabs_buying_pro_at_once_get_one_session_and_one_plan(world: World) -> None:
    world.price("pro", group="plan", grants=CREDITS)
    token, account = world.token()
    # The first tab's provider call is held a moment, so the second plans while it is open.
    world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=1.0)
    first, second = at_once(
        lambda: tab(world, token, "pro", "tab-1"), lambda: tab(world, token, "pro", "tab-2")
    )
    assert first.session.checkout_session_id == second.session.checkout_session_id
    stripe_id = first.session.stripe_checkout_session_id
    assert stripe_id and second.session.stripe_checkout_session_id == stripe_id
    assert open_sessions(world, customer_of(world, account)) == [stripe_id]

    world.pay(stripe_id)
    world.settled()
    assert world.balance(account, "api_calls") == "1000"
    listed = world.checkout.ListSubscriptions(
        checkout_pb2.ListSubscriptionsRequest(), metadata=bearer_md(token), timeout=10
    )
    assert len(listed.subscriptions) == 1


def test_two_tabs_on_two_replicas_sharing_postgres_get_one_open_session(pg_world: World) -> None:
    """The slot is enforced by the database, not by one process: each tab talks to its own
    server replica (its own engine and pool) on the same PostgreSQL database."""
    from dataclasses import replace

    from tollbooth.app import Deps
    from tollbooth.db import Database

    world = pg_world
    world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    deps = Deps.build(world.settings, Database(world.deps.db.url))
    try:
        with grpc_server(deps) as port:
            other = replace(world, grpc_target=f"127.0.0.1:{port}")
            world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=1.0)
            answers = at_once(
                lambda: tab(world, token, "pro", "replica-1"),
                lambda: tab(other, token, "team", "replica-2"),
            )
    finally:
        deps.db.dispose()
    assert all(a.WhichOneof("next_action") == "session" for a in answers)
    still_open = open_sessions(world, customer_of(world, account))
    assert len(still_open) == 1
    assert still_open[0] in {a.session.stripe_checkout_session_id for a in answers}


def test_one_request_sent_twice_at_once_to_two_replicas_makes_one_session(pg_world: World) -> None:
    """The same request (one request_id, one body) from two concurrent clients, each on its
    own replica of one PostgreSQL database, while the provider is slow: one intent, one
    session at the provider. Each answer is that session, or UNAVAILABLE (the provider
    reported the other's call with the same key in progress: `idempotency_key_in_use`), never
    a refusal or a second session; a retry then gets the session."""
    from dataclasses import replace

    from tollbooth.app import Deps
    from tollbooth.db import Database

    world = pg_world
    world.price("pro", group="plan")
    token, account = world.token()
    deps = Deps.build(world.settings, Database(world.deps.db.url))

    def attempt(target: World) -> Any:
        try:
            return tab(target, token, "pro", "twice")
        except grpc.RpcError as err:
            return err

    try:
        with grpc_server(deps) as port:
            other = replace(world, grpc_target=f"127.0.0.1:{port}")
            world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=2.0)
            answers = at_once(lambda: attempt(world), lambda: attempt(other))
    finally:
        deps.db.dispose()
    done = tab(world, token, "pro", "twice")
    for answer in answers:
        if isinstance(answer, grpc.RpcError):
            assert answer.code() == grpc.StatusCode.UNAVAILABLE, answer.details()
            assert error_reason(answer) == "PROVIDER_UNAVAILABLE"
        else:
            assert answer == done
    made = world.stripe.v1.checkout.sessions.list(
        params={"customer": customer_of(world, account), "limit": 100}
    )
    assert [s.id for s in made.data] == [done.session.stripe_checkout_session_id]
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 1


def test_pro_then_team_expires_the_pro_session_at_the_provider_first(world: World) -> None:
    world.price("pro", group="plan", grants=CREDITS)
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    pro = world.buy(token, "pro", request_id="pro-1")
    team = world.buy(token, "team", request_id="team-1")
    customer = customer_of(world, account)
    assert open_sessions(world, customer) == [team.session.stripe_checkout_session_id]
    expired = world.stripe.v1.checkout.sessions.retrieve(pro.session.stripe_checkout_session_id)
    assert expired.status == "expired"
    got = world.checkout.GetCheckoutSession(
        checkout_pb2.GetCheckoutSessionRequest(checkout_session_id=pro.session.checkout_session_id),
        metadata=bearer_md(token),
        timeout=10,
    )
    assert got.status == checkout_pb2.CHECKOUT_SESSION_STATUS_EXPIRED and got.url == ""
    # The expired session cannot be paid any more: one plan at most.
    with pytest.raises(stripe.InvalidRequestError):
        world.pay(pro.session.stripe_checkout_session_id)


def test_two_tabs_pro_and_team_at_once_leave_one_open_session(world: World) -> None:
    world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=1.0)
    answers = at_once(
        lambda: tab(world, token, "pro", "tab-pro"), lambda: tab(world, token, "team", "tab-team")
    )
    assert all(a.WhichOneof("next_action") == "session" for a in answers)
    still_open = open_sessions(world, customer_of(world, account))
    assert len(still_open) == 1
    assert still_open[0] in {a.session.stripe_checkout_session_id for a in answers}
    with world.deps.db.transaction(readonly=True) as session:
        live = session.scalars(
            sa.select(CheckoutSession.stripe_checkout_session_id).where(
                CheckoutSession.billing_account_id == account,
                CheckoutSession.status.in_(("open", "pending")),
            )
        ).all()
    assert list(live) == still_open


def test_a_session_paid_before_its_webhook_arrives_makes_the_next_checkout_the_portal(
    world: World,
) -> None:
    world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    pro = world.buy(token, "pro")
    world.gate.open.clear()  # the webhooks of the payment wait
    world.pay(pro.session.stripe_checkout_session_id)
    team = world.buy(token, "team")
    assert team.WhichOneof("next_action") == "portal"
    assert open_sessions(world, customer_of(world, account)) == []
    world.gate.open.set()
    world.settled()
    assert world.status(token).plan == "pro"


def test_with_an_active_plan_a_second_tab_of_the_group_gets_the_portal_not_a_session(
    world: World,
) -> None:
    world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    world.pay(world.buy(token, "pro").session.stripe_checkout_session_id)
    world.settled()
    answers = at_once(lambda: tab(world, token, "team", "t1"), lambda: tab(world, token, "pro"))
    assert [a.WhichOneof("next_action") for a in answers] == ["portal", "portal"]
    assert open_sessions(world, customer_of(world, account)) == []


# -- deterministic keys and parameters, retries (finding 2) -----------------------------------


def test_a_retry_after_a_provider_timeout_succeeds_with_the_same_session(
    impatient_world: World,
) -> None:
    world = impatient_world
    world.price("pro", group="plan")
    token, account = world.token()
    # The provider creates the session but answers after the client gave up.
    stall = world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=5.0, after=True)
    with pytest.raises(grpc.RpcError) as err:
        world.buy(token, "pro", request_id="buy-1")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    stall.release.set()
    again = world.buy(token, "pro", request_id="buy-1")
    assert again.WhichOneof("next_action") == "session"
    created = world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
    assert [s.id for s in created] == [again.session.stripe_checkout_session_id]
    replay = world.buy(token, "pro", request_id="buy-1")
    assert replay.session.checkout_session_id == again.session.checkout_session_id


def test_an_intent_left_pending_by_a_timeout_is_completed_by_the_next_tab(
    impatient_world: World,
) -> None:
    world = impatient_world
    world.price("pro", group="plan")
    token, account = world.token()
    stall = world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=5.0, after=True)
    with pytest.raises(grpc.RpcError):
        world.buy(token, "pro", request_id="tab-a")
    stall.release.set()
    with world.deps.db.transaction(readonly=True) as session:
        statuses = session.scalars(
            sa.select(CheckoutSession.status).where(CheckoutSession.billing_account_id == account)
        ).all()
    assert list(statuses) == ["pending"]
    other_tab = world.buy(token, "pro", request_id="tab-b")
    first_tab = world.buy(token, "pro", request_id="tab-a")
    assert other_tab.session.checkout_session_id == first_tab.session.checkout_session_id
    assert open_sessions(world, customer_of(world, account)) == [
        first_tab.session.stripe_checkout_session_id
    ]


def _old_enough_to_sweep(world: World, account: str, age: dt.timedelta | None = None) -> None:
    """Backdate the account's checkout intents past the sweeper's grace period (`age` old when
    given: recorded, and last touched, that long ago)."""
    from tollbooth.checkout import intents

    when = utcnow() - (age or intents.STALE_AFTER + dt.timedelta(minutes=1))
    with world.deps.db.transaction() as session:
        session.execute(
            sa.update(CheckoutSession)
            .where(CheckoutSession.billing_account_id == account)
            .values(created_at=when, updated_at=when)
        )


def test_reconcile_sweeps_an_intent_left_pending_and_a_late_retry_gets_its_session(
    impatient_world: World,
) -> None:
    from tollbooth import app

    world = impatient_world
    world.price("pro", group="plan")
    token, account = world.token()
    stall = world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=5.0, after=True)
    with pytest.raises(grpc.RpcError):
        world.buy(token, "pro", request_id="swept")
    stall.release.set()
    _old_enough_to_sweep(world, account)
    report = app.reconcile(world.settings)
    assert report.failed == []
    [line] = [c for c in report.changed if c.startswith("checkout ")]
    assert "pending -> open" in line
    late = world.buy(token, "pro", request_id="swept")
    assert late.session.stripe_checkout_session_id in line
    created = world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
    assert [s.id for s in created] == [late.session.stripe_checkout_session_id]


def test_reconcile_does_not_send_the_pending_checkout_of_an_archived_account(
    impatient_world: World,
) -> None:
    from billing.v1 import account_pb2, account_pb2_grpc
    from tests.helpers import keyed
    from tollbooth import app

    world = impatient_world
    world.price("pro", group="plan")
    token, account = world.token()
    # The provider down for the first attempt: the intent stays pending, nothing at Stripe.
    world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=0, status=500)
    with pytest.raises(grpc.RpcError):
        world.buy(token, "pro", request_id="archived")
    account_pb2_grpc.AccountServiceStub(world.channel).ArchiveAccount(
        keyed(account_pb2.ArchiveAccountRequest(account=account)), metadata=SERVICE_MD, timeout=30
    )
    _old_enough_to_sweep(world, account)
    report = app.reconcile(world.settings)
    assert [c for c in report.changed + report.failed if c.startswith("checkout ")] == []
    [line] = [c for c in report.left_alone if c.startswith("checkout ")]
    assert f"account {account} is archived" in line
    with world.deps.db.transaction(readonly=True) as session:
        rows = session.execute(
            sa.select(CheckoutSession.status, CheckoutSession.stripe_checkout_session_id).where(
                CheckoutSession.billing_account_id == account
            )
        ).all()
    assert [tuple(r) for r in rows] == [("pending", None)]
    assert world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data == []


@pytest.fixture
def sweep_world(pg_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """PostgreSQL; the provider client never retries by itself, and waits out held calls."""
    w = start_world(pg_url, tmp_path, STRIPE_TIMEOUT_SEC="60", STRIPE_MAX_NETWORK_RETRIES="0")
    yield w
    w.stop()


def _checkouts(world: World, account: str) -> list[tuple[Any, ...]]:
    with world.deps.db.transaction(readonly=True) as session:
        rows = session.execute(
            sa.select(
                CheckoutSession.status,
                CheckoutSession.stripe_checkout_session_id,
                CheckoutSession.updated_at,
            ).where(CheckoutSession.billing_account_id == account)
        ).all()
    return [tuple(r) for r in rows]


def test_reconcile_leaves_a_checkout_pending_past_the_key_lifetime_alone_and_reports_it(
    sweep_world: World, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Past the provider's idempotency-key lifetime a retry could create a second session (a
    second payment): the sweep sends nothing and reports it, as it does for payment intents."""
    from tests.checkout.support import operator_command
    from tollbooth.provider.keys import KEY_LIFETIME

    world = sweep_world
    world.price("pro", group="plan")
    token, account = world.token()
    # The provider down for the first attempt: the intent stays pending, nothing at Stripe.
    world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=0, status=500)
    with pytest.raises(grpc.RpcError):
        world.buy(token, "pro", request_id="old")
    _old_enough_to_sweep(world, account, KEY_LIFETIME + dt.timedelta(minutes=5))
    before = _checkouts(world, account)
    assert [r[:2] for r in before] == [("pending", None)]

    code, out, err = operator_command(world, monkeypatch, capsys, "reconcile")
    assert code == 0, err  # nothing failed: it is an operator's to look up
    [line] = [x for x in err.splitlines() if x.startswith("LEFT ALONE checkout ")]
    assert "pending since" in line and "not sent again" in line
    assert line.endswith("look it up by metadata tollbooth_checkout_id")
    assert "0 change(s), 0 failure(s), 1 left alone" in out
    assert _checkouts(world, account) == before  # untouched
    assert world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data == []


def test_two_reconcile_runs_at_once_report_the_sweep_s_completion_once(
    sweep_world: World,
) -> None:
    """Two `reconcile` runs at once both send the pending checkout (the same key: one session
    at the provider); only the run whose transaction moved it from pending reports it."""
    from tollbooth import app

    world = sweep_world
    world.price("pro", group="plan")
    token, account = world.token()
    world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=0, status=500)
    with pytest.raises(grpc.RpcError):
        world.buy(token, "pro", request_id="twice")
    _old_enough_to_sweep(world, account)
    held = [world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=60.0, after=True) for _ in "ab"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        # A run whose call meets the other's in progress at the provider (409, as on Stripe)
        # sends it again a moment later, once the other's is answered (held after it).
        settings = world.settings.model_copy(update={"stripe_max_network_retries": 2})
        runs = [pool.submit(app.reconcile, settings) for _ in range(2)]
        try:  # both runs read it pending and sent it, neither has recorded the answer yet
            assert all(stall.entered.wait(30) for stall in held)
        finally:
            for stall in held:
                stall.release.set()
        reports = [run.result(timeout=60) for run in runs]
    [session] = world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
    assert all(r.failed == [] and r.left_alone == [] for r in reports)
    changed = [line for r in reports for line in r.changed if line.startswith("checkout ")]
    assert len(changed) == 1 and f"pending -> open ({session.id})" in changed[0]
    assert [r[:2] for r in _checkouts(world, account)] == [("open", session.id)]


def _made_late_then_relinked(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: Any, request_id: str
) -> tuple[str, str]:
    """A checkout of `pro` whose sweep reached the provider with its answer lost (the session
    is made there), then the account's provider customer relinked by an operator: the next
    attempt's parameters differ, so the provider refuses the key. The token and account."""
    from tests.checkout.support import operator_command
    from tollbooth.db.models import BillingAccount

    token, account = world.token()
    world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=0, status=500)
    with pytest.raises(grpc.RpcError):
        world.buy(token, "pro", request_id=request_id)
    _old_enough_to_sweep(world, account)
    stall = world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=60.0, after=True)
    try:  # made at the provider, the answer comes late
        code, _, err = operator_command(world, monkeypatch, capsys, "reconcile", **IMPATIENT)
    finally:
        stall.release.set()
    assert code == 1 and "FAILED checkout " in err
    other = world.stripe.v1.customers.create(params={"metadata": {"billing_account_id": account}})
    with world.deps.db.transaction() as session:
        billed = session.get(BillingAccount, account)
        assert billed is not None and billed.stripe_customer_id not in (None, other.id)
        billed.stripe_customer_id = other.id  # an operator relinked the account
    return token, account


def test_reconcile_leaves_a_checkout_alone_when_a_changed_customer_gets_its_key_refused(
    sweep_world: World, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A sweep's first attempt reached the provider (its answer lost), then the account's
    provider customer changed: the next attempt's parameters differ and the provider refuses
    the key. Reported LEFT ALONE with the reason on every run (exit code 0), not FAILED."""
    from tests.checkout.support import operator_command

    world = sweep_world
    world.price("pro", group="plan")
    _, account = _made_late_then_relinked(world, monkeypatch, capsys, "moved")
    [made] = world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data

    for _ in range(2):  # every run alike
        code, out, err = operator_command(world, monkeypatch, capsys, "reconcile", **IMPATIENT)
        assert code == 0, err
        [line] = [x for x in err.splitlines() if x.startswith("LEFT ALONE checkout ")]
        assert "refused its idempotency key" in line
        assert line.endswith("look it up by metadata tollbooth_checkout_id")
        assert "0 change(s), 0 failure(s), 1 left alone" in out
    assert [r[:2] for r in _checkouts(world, account)] == [("pending", None)]
    assert [s.id for s in world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data] == [
        made.id
    ]


def test_a_takeover_refused_for_the_other_checkouts_key_does_not_blame_this_request_id(
    sweep_world: World, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Another tab's checkout of the group reached the provider (its answer lost), then the
    account's provider customer changed: taking its place needs its session, and the provider
    refuses its key. The new request is told that, not that its own request_id was reused."""
    world = sweep_world
    world.price("pro", group="plan")
    world.price("max", group="plan")
    token, _ = _made_late_then_relinked(world, monkeypatch, capsys, "tab-1")

    with pytest.raises(grpc.RpcError) as refused:
        world.buy(token, "max", request_id="tab-2")
    assert error_reason(refused.value) == "IDEMPOTENCY_KEY_REUSED"
    details = refused.value.details() or ""
    assert "request_id" not in details, details
    assert "another open checkout" in details, details


def test_the_same_request_id_with_other_items_is_refused(sqlite_world: World) -> None:
    world = sqlite_world
    world.price("pro", group="plan")
    world.price("extra", group="other")
    token, _ = world.token()
    world.buy(token, "pro", request_id="same")
    with pytest.raises(grpc.RpcError) as err:
        world.buy(token, "extra", request_id="same")
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"


@pytest.fixture
def no_retry_world(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """SQLite and PostgreSQL; the provider client never retries by itself."""
    w = start_world(database_url, tmp_path, STRIPE_MAX_NETWORK_RETRIES="0")
    yield w
    w.stop()


def test_the_same_request_id_with_another_customer_email_is_refused(
    no_retry_world: World,
) -> None:
    """customer_email is part of what a request asks for: a retry under the same request_id
    that names another e-mail (or none) is a different body (IDEMPOTENCY_KEY_REUSED), never
    a replay of the first attempt's intent. The first attempt fails at the provider, so no
    response is stored and the retry meets only the intent it recorded."""
    world = no_retry_world
    world.price("pro", group="plan")
    token, _ = world.token()

    def buy(email: str) -> checkout_pb2.CreateCheckoutSessionResponse:
        return world.checkout.CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                items=[checkout_pb2.CheckoutItem(lookup_key="pro", quantity=1)],
                success_url="https://app.example/ok",
                cancel_url="https://app.example/pricing",
                request_id="same-email",
                customer_email=email,
            ),
            metadata=bearer_md(token),
            timeout=30,
        )

    world.sandbox.stalls.add("POST", CHECKOUT_PATH, seconds=0, status=500)
    with pytest.raises(grpc.RpcError) as failed:
        buy("first@example.com")
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value.details()
    for other in ("second@example.com", ""):
        with pytest.raises(grpc.RpcError) as err:
            buy(other)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
    made = buy("first@example.com")  # the same body completes the first attempt
    assert made.session.checkout_session_id
    assert buy("first@example.com").session.checkout_session_id == made.session.checkout_session_id


# -- no provider call inside a transaction (finding 3) -----------------------------------------


def _grant(world: World, account: str) -> credit_pb2.CreditGrant:
    return world.credits.GrantCredits(
        credit_pb2.GrantCreditsRequest(
            account=account, credit_type="units", amount="5", request_id=uuid.uuid4().hex
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )


def _portal(world: World, token: str) -> Any:
    return world.checkout.CreatePortalSession(
        checkout_pb2.CreatePortalSessionRequest(
            return_url="https://app.example/account", request_id="portal-1"
        ),
        metadata=bearer_md(token),
        timeout=60,
    )


def _sync(world: World) -> list[str]:
    from tollbooth.catalog.as_code import sync_stripe
    from tollbooth.provider.client import StripeProvider

    return sync_stripe(world.deps.db, StripeProvider.from_settings(world.settings))


def _held(world: World, operation: str, token: str) -> tuple[str, Callable[[], Any]]:
    """The provider path an operation calls, and the operation."""
    if operation == "portal":
        world.billed(token, "pro")  # the account has something to manage
        return "/v1/billing_portal/sessions", lambda: _portal(world, token)
    if operation == "catalog sync":
        world.price("later", group="later")
        return "/v1/prices", lambda: _sync(world)
    return CHECKOUT_PATH, lambda: world.buy(token, "pro", request_id="held")


OPERATIONS = ["checkout", "portal", "catalog sync"]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_unrelated_write_completes_while_a_provider_call_is_held(
    sqlite_world: World, operation: str
) -> None:
    world = sqlite_world
    world.price("pro", group="plan")
    token, _ = world.token()
    _, other = world.token()
    path, call = _held(world, operation, token)
    stall = world.sandbox.stalls.add("POST", path, seconds=30.0)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(call)
        assert stall.entered.wait(10)
        granted = _grant(world, other)  # SQLite: would wait for the held call's transaction
        assert granted.billing_account_id == other and granted.grant_id
        assert not pending.done()  # the provider call is still held
        stall.release.set()
        assert pending.result(timeout=30)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_no_transaction_is_open_during_a_held_provider_call_on_postgres(
    pg_world: World, operation: str
) -> None:
    world = pg_world
    world.price("pro", group="plan")
    token, _ = world.token()
    path, call = _held(world, operation, token)
    world.settled()
    world.gate.open.clear()  # no webhook transaction runs meanwhile: only ours could be open
    stall = world.sandbox.stalls.add("POST", path, seconds=30.0)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(call)
            assert stall.entered.wait(10)
            assert transactions_open(world.deps.db.url) == 0
            assert not pending.done()
            stall.release.set()
            assert pending.result(timeout=30)
    finally:
        world.gate.open.set()


def test_concurrent_creates_with_one_request_id_and_other_items_get_one_session_no_500(
    pg_world: World,
) -> None:
    """Two tabs send the same request_id with different quantities at the same moment. Both
    plan before either has committed its intent (held so here: a third transaction holds the
    intent's id until both wait on it); the loser must read the winner's intent and be refused
    IDEMPOTENCY_KEY_REUSED, not fail on the primary key with INTERNAL."""
    from tollbooth.checkout.intents import checkout_id_for

    world = pg_world
    price = world.price("pack", recurring=False).price_id
    token, account = world.token()
    ours = checkout_id_for(f"acct:{account}|CreateCheckoutSessionRequest", account, "same-rid")
    admin = sa.create_engine(world.deps.db.url)

    def create(quantity: int) -> Any:
        channel = grpc.insecure_channel(world.grpc_target)
        try:
            return checkout_pb2_grpc.CheckoutServiceStub(channel).CreateCheckoutSession(
                checkout_pb2.CreateCheckoutSessionRequest(
                    line_items=[checkout_pb2.CheckoutLineItem(price=price, quantity=quantity)],
                    success_url="https://app.example/ok",
                    request_id="same-rid",
                ),
                metadata=bearer_md(token),
                timeout=60,
            )
        except grpc.RpcError as err:
            return err
        finally:
            channel.close()

    def waiting_on_a_lock() -> int:
        with admin.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'"
                    )
                ).scalar_one()
            )

    try:
        with admin.connect() as holder, ThreadPoolExecutor(max_workers=2) as pool:
            blocker = holder.begin()
            holder.execute(
                sa.text(
                    "INSERT INTO checkout_sessions (id, billing_account_id, status,"
                    " payment_status, mode, items, amount_total, currency, client_reference,"
                    " success_url, cancel_url, fingerprint, created_at, updated_at) VALUES"
                    " (:id, :account, 'pending', 'unpaid', 'payment', '[]', 0, 'usd', '',"
                    " '', '', '', now(), now())"
                ),
                {"id": ours, "account": account},
            )
            answers = [pool.submit(create, q) for q in (1, 2)]
            wait_for(lambda: waiting_on_a_lock() == 2, what="both creates to wait on the intent")
            blocker.rollback()
            results = [a.result(timeout=60) for a in answers]
    finally:
        admin.dispose()
    errors_ = [r for r in results if isinstance(r, grpc.RpcError)]
    sessions = [r for r in results if not isinstance(r, grpc.RpcError)]
    assert [error_reason(e) for e in errors_] == ["IDEMPOTENCY_KEY_REUSED"]
    assert len(sessions) == 1 and sessions[0].session.checkout_session_id == ours
    assert world.count(CheckoutSession, CheckoutSession.billing_account_id == account) == 1


# -- a request the provider refuses holds nothing ----------------------------------------------


def test_a_checkout_the_provider_refuses_does_not_block_the_group(world: World) -> None:
    """Stripe refusing a checkout (here: its price was archived in Stripe's dashboard) is 400
    PROVIDER_REQUEST_INVALID and leaves no intent behind: the refused request must not keep the
    account's slot of the group, or every later checkout of the group (another plan, a retry)
    would try to complete or expire it first and fail with the same refusal, for ever (the
    sweeper too)."""
    pro = world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    probe = world.buy(token, "pro", request_id="probe")  # links pro to a provider price
    linked = world.catalog.GetPrice(
        catalog_pb2.GetPriceRequest(price_id=pro.price_id), metadata=SERVICE_MD, timeout=10
    )
    world.stripe.v1.checkout.sessions.expire(probe.session.stripe_checkout_session_id)
    # Its expiry recorded: a probe still open here is the live holder the next buy reuses.
    world.settled()
    world.stripe.v1.prices.update(linked.stripe_price_id, params={"active": False})

    for request_id in ("refused", ""):
        with pytest.raises(grpc.RpcError) as err:
            world.buy(token, "pro", request_id=request_id)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(err.value) == "PROVIDER_REQUEST_INVALID"
    with world.deps.db.transaction(readonly=True) as session:
        pending = session.scalars(
            sa.select(CheckoutSession.id).where(
                CheckoutSession.billing_account_id == account, CheckoutSession.status == "pending"
            )
        ).all()
    assert list(pending) == []
    # Another plan of the group is sold at once, and is the only open session.
    team = world.buy(token, "team", request_id="team")
    assert team.WhichOneof("next_action") == "session"
    assert open_sessions(world, customer_of(world, account)) == [
        team.session.stripe_checkout_session_id
    ]
    # The refused request_id, retried, is refused again (nothing was stored under it).
    with pytest.raises(grpc.RpcError) as err:
        world.buy(token, "pro", request_id="refused")
    assert error_reason(err.value) == "PROVIDER_REQUEST_INVALID"


def test_an_upper_case_scheme_is_sent_to_the_provider_in_lower_case(world: World) -> None:
    """`HTTPS://APP.EXAMPLE/ok` is on the allow-list (a scheme and a host are case-blind); the
    provider gets the scheme in lower case, the form every URL check accepts."""
    world.price("pro", group="plan")
    token, _ = world.token()
    made = world.checkout.CreateCheckoutSession(
        checkout_pb2.CreateCheckoutSessionRequest(
            items=[checkout_pb2.CheckoutItem(lookup_key="pro")],
            success_url="HTTPS://APP.EXAMPLE/ok?cs={CHECKOUT_SESSION_ID}",
            cancel_url="Https://app.example/pricing",
        ),
        metadata=bearer_md(token),
        timeout=30,
    )
    remote = world.stripe.v1.checkout.sessions.retrieve(made.session.stripe_checkout_session_id)
    assert remote.success_url == "https://APP.EXAMPLE/ok?cs={CHECKOUT_SESSION_ID}"
    assert remote.cancel_url == "https://app.example/pricing"
