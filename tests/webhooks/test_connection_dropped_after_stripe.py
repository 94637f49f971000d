"""A checkout whose PostgreSQL connection is dropped after the provider created its session,
at the write that records it (`repository.mark_checkout`, the server's own backend terminated
from another session): the caller gets UNAVAILABLE SERVICE_UNAVAILABLE, the next calls get a
live connection, and the retry with the same request_id answers the one session the provider
made (found again by its idempotency key), never a second."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text

from tests.checkout.support import World
from tests.helpers import error_reason
from tollbooth.checkout import repository

pytestmark = pytest.mark.postgres


def test_a_checkout_dropped_while_recording_the_providers_session_retries_into_that_one(
    pg_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = pg_world
    world.price("pro", group="plan")
    token, _account = world.token()
    mark = repository.mark_checkout
    killed: list[int] = []
    killer = create_engine(world.deps.db.url)

    def mark_on_a_dropped_connection(session: Any, *args: Any, **kwargs: Any) -> Any:
        if not killed:  # the first call only: the retry records on a live connection
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with killer.connect() as admin:
                assert admin.execute(
                    text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid}
                ).scalar()
            killed.append(pid)
        return mark(session, *args, **kwargs)

    monkeypatch.setattr(repository, "mark_checkout", mark_on_a_dropped_connection)
    try:
        with pytest.raises(grpc.RpcError) as err:
            world.buy(token, "pro", request_id="dropped-after-stripe")
        assert killed
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
        assert error_reason(err.value) == "SERVICE_UNAVAILABLE"
        again = world.buy(token, "pro", request_id="dropped-after-stripe")
        assert world.buy(token, "pro", request_id="dropped-after-stripe").session == again.session
        listed = world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
        assert [s.id for s in listed] == [again.session.stripe_checkout_session_id]
    finally:
        killer.dispose()
