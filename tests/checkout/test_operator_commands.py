"""`tollbooth webhooks replay` and `tollbooth reconcile`, run as an operator runs them."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from billing.v1 import catalog_pb2
from tests.checkout.support import World, events_of, operator_command, start_world
from tollbooth.db.models import CreditGrant, StripeEvent, Subscription

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="10", on_purchase=True)]


def run(world: World, monkeypatch, capsys, *argv: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    code, out, _ = operator_command(world, monkeypatch, capsys, *argv)
    return code, out


def bought(world: World) -> tuple[str, str]:
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    world.settled()
    return account, stripe_id


def test_replaying_every_stored_event_changes_nothing_already_applied(
    world: World, monkeypatch, capsys
):  # type: ignore[no-untyped-def]
    account, _ = bought(world)
    stored = world.count(StripeEvent)
    code, out = run(world, monkeypatch, capsys, "webhooks", "replay")
    assert code == 0
    assert f"replayed {stored}: 0 change(s), 0 failure(s)" in out
    assert world.count(CreditGrant, CreditGrant.billing_account_id == account) == 1


def test_replaying_one_unprocessed_event_applies_it(tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    from tests.devstack import migrated_sqlite

    world = start_world(migrated_sqlite(tmp_path / "billing.db"), tmp_path, deliver=False)
    try:
        world.price("pro", grants=GRANTS)
        token, account = world.token()
        stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
        world.pay(stripe_id)
        completed = events_of(world, "checkout.session.completed", stripe_id)[0]
        import json

        from tollbooth.webhooks import repository

        with world.deps.db.transaction() as session:  # stored by a version without handlers
            repository.insert_event(
                session,
                event_id=completed["id"],
                type_=completed["type"],
                api_version="",
                livemode=False,
                created=None,
                payload=json.dumps(completed).encode(),
            )
        code, out = run(
            world, monkeypatch, capsys, "webhooks", "replay", "--event-id", completed["id"]
        )
        assert code == 0 and "fulfilled" in out
        assert world.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
        code, out = run(
            world, monkeypatch, capsys, "webhooks", "replay", "--since", "2000-01-01T00:00:00Z"
        )
        assert code == 0 and "0 change(s)" in out
        assert world.count(CreditGrant, CreditGrant.billing_account_id == account) == 1
        code, _ = run(world, monkeypatch, capsys, "webhooks", "replay", "--event-id", "evt_nope")
        assert code == 1
    finally:
        world.stop()


def test_reconcile_repairs_drift_and_finds_subscriptions_we_never_heard_of(
    world: World, monkeypatch, capsys
):  # type: ignore[no-untyped-def]
    account, _ = bought(world)
    with world.deps.db.transaction() as session:  # drift: a lost event, a stale row
        session.execute(update(Subscription).values(state="past_due", cancel_at_period_end=True))
    world.gate.open.clear()  # the provider changes, and we hear nothing of it
    sub = world.stripe.v1.subscriptions.list(params={"limit": 1}).data[0]
    world.stripe.v1.subscriptions.update(sub.id, params={"metadata": {"x": "1"}})
    code, out = run(world, monkeypatch, capsys, "reconcile")
    assert code == 0
    assert f"subscription {sub.id} updated: cancel_at_period_end, state" in out
    assert "reconciled 1: 1 change(s), 0 failure(s)" in out
    with world.deps.db.transaction(readonly=True) as session:
        row = session.scalars(select(Subscription)).one()
        assert (row.state, row.cancel_at_period_end) == ("active", False)
    with world.deps.db.transaction() as session:  # forget it entirely
        session.execute(Subscription.__table__.delete())
    code, out = run(world, monkeypatch, capsys, "reconcile")
    assert code == 0 and f"subscription {sub.id} created: active" in out
    code, out = run(world, monkeypatch, capsys, "reconcile")
    assert "0 change(s)" in out
    assert account


@pytest.mark.parametrize("argv", [["webhooks", "replay", "--since", "yesterday"]])
def test_replay_refuses_a_time_it_cannot_read(world: World, monkeypatch, capsys, argv):  # type: ignore[no-untyped-def]
    code, _ = run(world, monkeypatch, capsys, *argv)
    assert code == 2


def test_two_reconciles_at_once_repair_a_drift_once_and_report_it_once(world: World) -> None:  # type: ignore[no-untyped-def]
    """Two operators run `reconcile` together: both read the subscription from the provider
    before either writes; one creates the forgotten row and reports it, the other finds it
    written and reports nothing, and neither counts a failure."""
    from concurrent.futures import ThreadPoolExecutor

    from tollbooth import app

    bought(world)
    world.gate.open.clear()
    with world.deps.db.transaction() as session:  # forgotten: a lost event, a restored backup
        session.execute(Subscription.__table__.delete())
    sub = world.stripe.v1.subscriptions.list(params={"limit": 1}).data[0]
    held = [
        world.sandbox.stalls.add("GET", f"/v1/subscriptions/{sub.id}", seconds=60.0, after=True)
        for _ in range(2)
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(app.reconcile, world.settings) for _ in range(2)]
        try:  # both have read it, neither has written
            assert all(stall.entered.wait(30) for stall in held)
        finally:
            for stall in held:
                stall.release.set()
        reports = [run.result(timeout=60) for run in runs]
    assert [r.failed for r in reports] == [[], []]
    changed = [line for r in reports for line in r.changed if sub.id in line]
    assert changed == [f"subscription {sub.id} created: active"], changed
    assert world.count(Subscription) == 1
