"""PostgreSQL connections dropped mid-apply (pg_terminate_backend of the server's own backend,
on this test's database only): the event stays, failed, and its retry applies it once; a
checkout whose connection is dropped answers UNAVAILABLE and its retry creates one session."""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
from sqlalchemy import create_engine, text

from billing.v1 import catalog_pb2, webhook_pb2, webhook_pb2_grpc
from tests.checkout.support import World, events_of, signed_send, wait_for
from tests.conftest import SERVICE_MD
from tests.helpers import error_reason
from tollbooth.db.models import StripeEvent

GRANTS = [catalog_pb2.CreditGrantSpec(credit_type="api_calls", amount="100", on_purchase=True)]


def _blocked_on(admin, table_row_lock_holder_pid: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Backends of this database waiting for a lock the admin's transaction holds."""
    return list(
        admin.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND :holder = ANY(pg_blocking_pids(pid))"
            ),
            {"holder": table_row_lock_holder_pid},
        ).scalars()
    )


def _while_locked(world: World, sql: str, params: dict, call) -> tuple[object, int]:  # type: ignore[no-untyped-def, type-arg]
    """Run `call` in a thread while `sql` (a SELECT … FOR UPDATE) holds its rows; terminate the
    server backend that waits for them; then let go. The call's outcome, and how many were cut."""
    engine = create_engine(world.deps.db.url)
    outcome: dict[str, object] = {}
    try:
        with engine.connect() as admin:
            trans = admin.begin()
            admin.execute(text(sql), params)
            me = int(admin.execute(text("SELECT pg_backend_pid()")).scalar_one())

            def run() -> None:
                try:
                    outcome["value"] = call()
                except Exception as exc:  # noqa: BLE001 - inspected by the test
                    outcome["value"] = exc

            worker = threading.Thread(target=run)
            worker.start()
            waiting = wait_for(lambda: _blocked_on(admin, me), 30, "the server to wait")
            with engine.connect() as killer:
                for pid in waiting:
                    killer.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            time.sleep(0.2)
            trans.rollback()
            worker.join(60)
            assert not worker.is_alive()
            return outcome["value"], len(waiting)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_connection_dropped_mid_apply_leaves_the_event_failed_and_its_retry_grants_once(
    pg_world: World,
) -> None:
    world = pg_world
    world.price("pro", grants=GRANTS)
    token, account = world.token()
    stripe_id = world.buy(token, "pro").session.stripe_checkout_session_id
    world.pay(stripe_id)
    event = events_of(world, "checkout.session.completed", stripe_id)[0]
    body = json.dumps(event).encode()
    status, cut = _while_locked(
        world,
        "SELECT id FROM billing_accounts WHERE id = :a FOR UPDATE",
        {"a": account},
        lambda: signed_send(world, body),
    )
    assert cut >= 1
    assert status == 200  # stored first: the drop only fails the apply

    def state() -> str:
        with world.deps.db.transaction(readonly=True) as session:
            row = session.get(StripeEvent, event["id"])
            return row.status if row else "missing"

    wait_for(lambda: state() in ("failed", "applied"), 30, "the apply to finish")
    if state() == "failed":
        assert world.balance(account, "api_calls") == "0"
        stub = webhook_pb2_grpc.StripeEventServiceStub(world.channel)
        stub.ReplayStripeEvents(
            webhook_pb2.ReplayStripeEventsRequest(event_id=event["id"]),
            metadata=SERVICE_MD,
            timeout=30,
        )
    assert state() == "applied"
    assert world.balance(account, "api_calls") == "100"
    assert signed_send(world, body) == 200  # a redelivery changes nothing
    assert world.balance(account, "api_calls") == "100"
    assert world.notifications(account).count("credits.granted") == 1


@pytest.mark.postgres
def test_a_checkout_whose_connection_is_dropped_is_unavailable_and_its_retry_opens_one_session(
    pg_world: World,
) -> None:
    world = pg_world
    world.price("pro", group="plan")
    token, account = world.token()
    outcome, cut = _while_locked(
        world,
        "SELECT id FROM billing_accounts WHERE id = :a FOR UPDATE",
        {"a": account},
        lambda: world.buy(token, "pro", request_id="dropped"),
    )
    assert cut >= 1
    assert isinstance(outcome, grpc.RpcError), outcome
    assert outcome.code() == grpc.StatusCode.UNAVAILABLE, outcome.details()
    assert error_reason(outcome) == "SERVICE_UNAVAILABLE"
    again = world.buy(token, "pro", request_id="dropped")
    assert world.buy(token, "pro", request_id="dropped").session == again.session
    listed = world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
    assert [s.id for s in listed] == [again.session.stripe_checkout_session_id]
