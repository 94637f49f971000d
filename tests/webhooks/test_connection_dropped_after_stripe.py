"""A checkout whose PostgreSQL connection is dropped after a provider call, at the write that
records what the provider did (the server's own backend terminated from another session, just
before the named repository write runs on it): the caller gets UNAVAILABLE
SERVICE_UNAVAILABLE, the next calls get a live connection, and the retry with the same
request_id answers one session, the same on every retry, never a second one at the provider.

- `mark_checkout` of a plain checkout: the provider created the session, its recording drops;
  the retry finds it again by its idempotency key;
- a second checkout of the same subscription group takes the slot over from a first one still
  open (README: the earlier tab's session is expired): dropped when recording the first one's
  expiry (`mark_checkout` after `expire`), when handing the slot over (`hand_over_slot`), and
  when recording the new session (`mark_checkout` of ours). The first session ends expired,
  the second is the one open session.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text

from tests.checkout.support import World
from tests.helpers import error_reason
from tollbooth.checkout import repository

pytestmark = pytest.mark.postgres


def _drop_at(world: World, monkeypatch: pytest.MonkeyPatch, name: str, nth: int) -> list[int]:
    """The `nth` call of `repository.<name>` (from now on) runs on a connection killed just
    before it; the list of killed backends, for the test to check."""
    real = getattr(repository, name)
    calls: list[int] = []
    killed: list[int] = []
    killer = create_engine(world.deps.db.url)

    def dropped(session: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == nth:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with killer.connect() as admin:
                ended = admin.execute(text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid})
                assert ended.scalar()
            killer.dispose()
            killed.append(pid)
        return real(session, *args, **kwargs)

    monkeypatch.setattr(repository, name, dropped)
    return killed


def _unavailable(world: World, token: str, lookup_key: str, request_id: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        world.buy(token, lookup_key, request_id=request_id)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert error_reason(err.value) == "SERVICE_UNAVAILABLE"


def test_a_checkout_dropped_while_recording_the_providers_session_retries_into_that_one(
    pg_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = pg_world
    world.price("pro", group="plan")
    token, _account = world.token()
    killed = _drop_at(world, monkeypatch, "mark_checkout", 1)
    _unavailable(world, token, "pro", "dropped-after-stripe")
    assert len(killed) == 1
    again = world.buy(token, "pro", request_id="dropped-after-stripe")
    assert world.buy(token, "pro", request_id="dropped-after-stripe").session == again.session
    listed = world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
    assert [s.id for s in listed] == [again.session.stripe_checkout_session_id]


@pytest.mark.parametrize(
    ("name", "nth"),
    [("mark_checkout", 1), ("hand_over_slot", 1), ("mark_checkout", 2)],
    ids=["recording-the-expiry", "handing-the-slot-over", "recording-the-new-session"],
)
def test_a_takeover_dropped_after_a_provider_call_retries_into_one_open_session(
    pg_world: World, monkeypatch: pytest.MonkeyPatch, name: str, nth: int
) -> None:
    world = pg_world
    world.price("pro", group="plan")
    world.price("max", group="plan", amount=4900)
    token, _account = world.token()
    first = world.buy(token, "pro", request_id="first-tab").session.stripe_checkout_session_id
    killed = _drop_at(world, monkeypatch, name, nth)
    _unavailable(world, token, "max", "second-tab")
    assert len(killed) == 1
    again = world.buy(token, "max", request_id="second-tab")
    assert world.buy(token, "max", request_id="second-tab").session == again.session
    second = again.session.stripe_checkout_session_id
    listed = {
        s.id: s.status for s in world.stripe.v1.checkout.sessions.list(params={"limit": 100}).data
    }
    assert listed == {first: "expired", second: "open"}
