"""The hand-over of an account's checkout slot of a subscription group, raced on PostgreSQL.

A slot left by a dead checkout (expired, withdrawn) is handed to the next one by a compare and
set. Two tabs of one account, on two `serve-grpc` replicas, that both find the same dead holder
must not both go on as if they had the slot: at most one payable session per account and group.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from billing.v1 import checkout_pb2, checkout_pb2_grpc
from tests.checkout.support import World, start_world, wait_for
from tests.conftest import bearer_md, make_env
from tests.devstack import grpc_replicas
from tollbooth.db.models import CheckoutSession


@pytest.fixture
def pg_world(request: pytest.FixtureRequest, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    from tests.conftest import _truncate

    url = request.getfixturevalue("pg_base_url")
    _truncate(url)
    w = start_world(url, tmp_path)
    yield w
    w.stop()


def tab(port: int, token: str, lookup_key: str, request_id: str) -> Any:
    """A buyer's browser tab: its own channel to its own replica."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
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


def payable(world: World, account: str) -> list[str]:
    """The account's sessions the provider would still take a payment for."""
    from tollbooth.db.models import BillingAccount

    with world.deps.db.transaction(readonly=True) as session:
        row = session.get(BillingAccount, account)
        assert row is not None and row.stripe_customer_id
        customer = row.stripe_customer_id
    listed = world.stripe.v1.checkout.sessions.list(params={"customer": customer, "limit": 100})
    return sorted(s.id for s in listed.data if s.status == "open")


def live_rows(world: World, account: str) -> list[str]:
    with world.deps.db.transaction(readonly=True) as session:
        return sorted(
            str(s)
            for s in session.scalars(
                sa.select(CheckoutSession.stripe_checkout_session_id).where(
                    CheckoutSession.billing_account_id == account,
                    CheckoutSession.status.in_(("open", "pending")),
                )
            )
        )


def test_two_tabs_taking_over_a_dead_holder_s_slot_leave_one_payable_session(
    pg_world: World,
) -> None:
    """Both tabs read the dead holder; the slot row is held (as a third request's hand-over
    would hold it) until both wait to hand it over, so their compare and sets run one after
    the other every time: the second finds the slot no longer the dead holder's. It used to
    ignore that and create its session too (two payable sessions of one group)."""
    world = pg_world
    world.price("pro", group="plan")
    world.price("team", group="plan", amount=9900)
    token, account = world.token()
    first = world.buy(token, "pro", request_id="abandoned")
    world.stripe.v1.checkout.sessions.expire(first.session.stripe_checkout_session_id)
    world.settled()
    assert payable(world, account) == []

    env = make_env(
        world.settings.database_url, BILLING_SANDBOX_PORT=str(world.settings.sandbox_port)
    )
    engine = sa.create_engine(world.settings.database_url)
    answers: dict[str, Any] = {}

    def run(port: int, key: str) -> None:
        try:
            answers[key] = tab(port, token, key, f"tab-{key}")
        except grpc.RpcError as err:  # reported by the assertion below
            answers[key] = err

    try:
        with grpc_replicas(env) as ports, engine.connect() as holder:
            with holder.begin():
                holder.execute(
                    sa.text(
                        "SELECT 1 FROM checkout_slots WHERE billing_account_id = :a FOR UPDATE"
                    ),
                    {"a": account},
                )
                threads = [
                    threading.Thread(target=run, args=(port, key))
                    for port, key in zip(ports, ("pro", "team"), strict=True)
                ]
                for t in threads:
                    t.start()

                def both_wait() -> bool:
                    # Another connection: a transaction sees one snapshot of pg_stat_activity.
                    with engine.connect() as watcher:
                        waiting = watcher.execute(
                            sa.text(
                                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type ="
                                " 'Lock' AND query LIKE 'UPDATE checkout_slots%'"
                            )
                        ).scalar_one()
                    return int(waiting) == 2

                wait_for(both_wait, 60, "both tabs to wait on the slot row")
            for t in threads:
                t.join(timeout=120)
    finally:
        engine.dispose()

    assert sorted(answers) == ["pro", "team"]
    for answer in answers.values():
        assert not isinstance(answer, grpc.RpcError), answer
        assert answer.WhichOneof("next_action") == "session"
    still = payable(world, account)
    assert len(still) == 1, still
    assert still[0] in {a.session.stripe_checkout_session_id for a in answers.values()}
    assert live_rows(world, account) == still
