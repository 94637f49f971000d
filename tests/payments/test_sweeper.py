"""The sweeper of payment intents (`tollbooth reconcile`), on PostgreSQL with the sandbox.

An intent whose process died between committing its pending row and calling the provider, and
that no client retried, is completed by the sweep with the request's own idempotency key: the
provider ends up holding one payment intent for it, however often the sweep runs and whatever
client retry races it. Rows older than the key's lifetime are reported, never sent again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from billing.v1 import account_pb2, account_pb2_grpc
from tests.checkout.support import World, operator_command, start_world, transactions_open
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason, keyed
from tests.payments.support import (
    at_provider,
    backdate,
    crashed_after_commit,
    create_as_service,
    intent_row,
    token,
)
from tollbooth import app
from tollbooth.db.models import BillingAccount
from tollbooth.db.payment_intents import PaymentIntent
from tollbooth.payments import intents
from tollbooth.provider.keys import KEY_LIFETIME

pytestmark = pytest.mark.postgres

PATH = "/v1/payment_intents"
STALE = intents.STALE_AFTER + dt.timedelta(minutes=1)


@pytest.fixture
def make_world(pg_url: str, tmp_path) -> Iterator[Callable[..., World]]:  # type: ignore[no-untyped-def]
    """A world on PostgreSQL whose provider client never retries by itself (`env`: more)."""
    worlds: list[World] = []

    def make(**env: str) -> World:
        world = start_world(pg_url, tmp_path, STRIPE_MAX_NETWORK_RETRIES="0", **env)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.stop()


def left_by_a_crash(
    world: World, request_id: str, age: dt.timedelta | None = STALE
) -> tuple[str, str]:
    """A new account and the intent a crash left it (`age` old, when given): (account, our id)."""
    _, account = token(world)
    ours = crashed_after_commit(world, account, request_id)
    if age is not None:
        backdate(world, ours, age)
    return account, ours


def about(lines: list[str], intent_id: str) -> list[str]:
    return [line for line in lines if f"payment intent {intent_id}:" in line]


def completed(intent_id: str, stripe_id: str) -> str:
    return f"payment intent {intent_id}: pending -> requires_payment_method ({stripe_id})"


def test_a_row_left_by_a_crash_is_completed_by_the_sweep_and_a_late_retry_gets_it(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    account, ours = left_by_a_crash(world, "crash-1", age=None)

    fresh = app.reconcile(world.settings)  # within the grace period: maybe still in flight
    assert about(fresh.changed + fresh.failed + fresh.left_alone, ours) == []
    assert intent_row(world, ours).status == "pending" and at_provider(world, ours) == []

    backdate(world, ours, STALE)
    report = app.reconcile(world.settings)
    assert report.failed == [] and report.left_alone == []
    [stripe_id] = at_provider(world, ours)
    assert about(report.changed, ours) == [completed(ours, stripe_id)]
    remote = world.stripe.v1.payment_intents.retrieve(stripe_id)
    row = intent_row(world, ours)
    assert (row.status, row.stripe_payment_intent_id, row.client_secret) == (
        remote.status,
        stripe_id,
        remote.client_secret,
    )

    again = app.reconcile(world.settings)  # nothing left pending: nothing sent
    assert about(again.changed + again.failed, ours) == []
    late = create_as_service(world, account, "crash-1")  # the client comes back after all
    assert (late.payment_intent_id, late.stripe_payment_intent_id, late.client_secret) == (
        ours,
        stripe_id,
        remote.client_secret,
    )
    assert at_provider(world, ours) == [stripe_id]
    assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 1


def test_a_sweep_racing_a_client_retry_leaves_one_intent_and_no_transaction_open(
    make_world: Callable[..., World],
) -> None:
    """The client's retry arrives while the sweep's call with the same key is in progress at
    the provider: Stripe answers it 409 `idempotency_key_in_use`, so it is UNAVAILABLE (retry)
    and withdraws nothing; the sweep completes the intent, and the retry then gets it."""
    world = make_world(STRIPE_TIMEOUT_SEC="60")  # the held call must not time out
    account, ours = left_by_a_crash(world, "race-1")
    world.settled()
    world.gate.open.clear()  # no webhook transaction runs meanwhile: only ours could be open
    stall = world.sandbox.stalls.add("POST", PATH, seconds=60.0)  # the sweep's call, held
    with ThreadPoolExecutor(max_workers=1) as pool:
        sweeping = pool.submit(app.reconcile, world.settings)
        try:
            assert stall.entered.wait(10)
            assert transactions_open(world.deps.db.url) == 0
            with pytest.raises(grpc.RpcError) as err:
                create_as_service(world, account, "race-1")  # the key is in use
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
            assert not sweeping.done()
        finally:  # the sweep goes on (and the pool can be shut) whatever happened
            stall.release.set()
            world.gate.open.set()
        report = sweeping.result(timeout=60)
    assert report.failed == []
    late = create_as_service(world, account, "race-1")
    assert about(report.changed, ours) == [completed(ours, late.stripe_payment_intent_id)]
    assert at_provider(world, ours) == [late.stripe_payment_intent_id]
    row = intent_row(world, ours)
    assert (row.stripe_payment_intent_id, row.client_secret) == (
        late.stripe_payment_intent_id,
        late.client_secret,
    )
    assert world.count(PaymentIntent, PaymentIntent.billing_account_id == account) == 1


def test_a_provider_answering_late_leaves_the_row_pending_and_the_next_sweep_reuses_the_key(
    make_world: Callable[..., World],
) -> None:
    world = make_world(STRIPE_TIMEOUT_SEC="1")
    _, ours = left_by_a_crash(world, "slow-1")
    # The provider creates the intent but answers after the client gave up.
    stall = world.sandbox.stalls.add("POST", PATH, seconds=60.0, after=True)
    try:
        first = app.reconcile(world.settings)
    finally:
        stall.release.set()
    [failure] = about(first.failed, ours)
    assert "PROVIDER_UNAVAILABLE" in failure and about(first.changed, ours) == []
    row = intent_row(world, ours)
    assert (row.status, row.stripe_payment_intent_id) == ("pending", None)
    [stripe_id] = at_provider(world, ours)  # created at the provider; we never heard

    second = app.reconcile(world.settings)
    assert second.failed == []
    assert about(second.changed, ours) == [completed(ours, stripe_id)]
    assert at_provider(world, ours) == [stripe_id]
    assert intent_row(world, ours).stripe_payment_intent_id == stripe_id


def test_a_provider_5xx_leaves_the_row_pending_and_the_command_reports_it(
    make_world: Callable[..., World], monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    world = make_world()
    _, ours = left_by_a_crash(world, "down-1")
    world.sandbox.stalls.add("POST", PATH, seconds=0, status=500)
    code, out, err = operator_command(
        world, monkeypatch, capsys, "reconcile", STRIPE_MAX_NETWORK_RETRIES="0"
    )
    assert code == 1
    assert f"FAILED payment intent {ours}: PROVIDER_UNAVAILABLE" in err
    assert "0 change(s), 1 failure(s)" in out
    row = intent_row(world, ours)
    assert (row.status, row.stripe_payment_intent_id, row.client_secret) == ("pending", None, None)
    assert at_provider(world, ours) == []

    code, out, _ = operator_command(world, monkeypatch, capsys, "reconcile")  # provider back
    [stripe_id] = at_provider(world, ours)
    assert code == 0 and completed(ours, stripe_id) in out


def test_a_row_past_the_key_lifetime_is_reported_and_left_untouched(
    make_world: Callable[..., World], monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    world = make_world()
    account, ours = left_by_a_crash(world, "old-1", KEY_LIFETIME + dt.timedelta(minutes=5))
    before = intent_row(world, ours)
    code, out, err = operator_command(world, monkeypatch, capsys, "reconcile")
    assert code == 0  # nothing failed: it is an operator's to look up
    assert f"LEFT ALONE payment intent {ours}: pending since" in err
    assert "0 change(s), 0 failure(s), 1 left alone" in out
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [(r["logger"], r["level"]) for r in records if ours in r["message"]] == [
        ("tollbooth.payments", "WARNING")
    ]
    after = intent_row(world, ours)
    assert (after.status, after.stripe_payment_intent_id, after.client_secret) == (
        "pending",
        None,
        None,
    )
    assert after.updated_at == before.updated_at
    assert at_provider(world, ours) == []  # never created, so nothing to cancel either
    with world.deps.db.transaction(readonly=True) as session:
        billed = session.get(BillingAccount, account)
        assert billed is not None and billed.stripe_customer_id is None  # nothing sent at all


def test_an_archived_account_s_intent_is_not_sent_but_reported(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    account, ours = left_by_a_crash(world, "archived-1")
    account_pb2_grpc.AccountServiceStub(world.channel).ArchiveAccount(
        keyed(account_pb2.ArchiveAccountRequest(account=account)), metadata=SERVICE_MD, timeout=30
    )
    with pytest.raises(grpc.RpcError) as refused:  # the request path refuses it
        create_as_service(world, account, "archived-1")
    assert error_reason(refused.value) == "ACCOUNT_ARCHIVED"

    report = app.reconcile(world.settings)  # and so does the sweep: nothing sent
    assert about(report.changed + report.failed, ours) == []
    [line] = about(report.left_alone, ours)
    assert f"account {account} is archived" in line
    row = intent_row(world, ours)
    assert (row.status, row.stripe_payment_intent_id, row.client_secret) == ("pending", None, None)
    assert at_provider(world, ours) == []


def test_two_sweeps_at_once_report_the_completion_once(make_world: Callable[..., World]) -> None:
    """Two `reconcile` runs at once both send the intent (the same key: one intent at the
    provider); only the run whose transaction moved it from pending reports the change."""
    world = make_world(STRIPE_TIMEOUT_SEC="60")  # the held calls must not time out
    _, ours = left_by_a_crash(world, "twice-1")
    held = [world.sandbox.stalls.add("POST", PATH, seconds=60.0, after=True) for _ in range(2)]
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
    [stripe_id] = at_provider(world, ours)
    assert all(r.failed == [] and about(r.left_alone, ours) == [] for r in reports)
    changed = [line for r in reports for line in about(r.changed, ours)]
    assert changed == [completed(ours, stripe_id)]
    assert intent_row(world, ours).stripe_payment_intent_id == stripe_id


def test_a_key_refused_for_a_changed_customer_is_left_alone_not_failed(
    make_world: Callable[..., World], monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """The first attempt reached the provider (its answer lost), then the account's provider
    customer changed: the retry's parameters differ and the provider refuses the key. No run
    can complete it (until the key expires, and then the 24 h rule holds): reported LEFT
    ALONE with the reason, exit code 0, not a FAILED that repeats on every run."""
    world = make_world(STRIPE_TIMEOUT_SEC="1")
    account, ours = left_by_a_crash(world, "moved-1")
    stall = world.sandbox.stalls.add("POST", PATH, seconds=60.0, after=True)
    try:
        first = app.reconcile(world.settings)  # made at the provider; the answer comes late
    finally:
        stall.release.set()
    assert "PROVIDER_UNAVAILABLE" in about(first.failed, ours)[0]
    [made] = at_provider(world, ours)
    other = world.stripe.v1.customers.create(params={"metadata": {"billing_account_id": account}})
    with world.deps.db.transaction() as session:
        billed = session.get(BillingAccount, account)
        assert billed is not None and billed.stripe_customer_id not in (None, other.id)
        billed.stripe_customer_id = other.id  # an operator relinked the account

    for _ in range(2):  # every run alike
        code, out, err = operator_command(world, monkeypatch, capsys, "reconcile")
        assert code == 0, err
        [line] = [x for x in err.splitlines() if x.startswith(f"LEFT ALONE payment intent {ours}")]
        assert "refused its idempotency key" in line and line.endswith(intents.OURS)
        assert "0 change(s), 0 failure(s), 1 left alone" in out
    row = intent_row(world, ours)
    assert (row.status, row.stripe_payment_intent_id) == ("pending", None)
    assert at_provider(world, ours) == [made]  # the first attempt's, with the first customer
