"""PostgreSQL ending the server's session on its own (`idle_in_transaction_session_timeout`,
SQLSTATE 25P03, set by an operator on the role, the database or the URL's `options`): the
ingest transaction sat idle longer than allowed (here: the burn's planning in Python, between
the insert of the events and the burn's writes, made slow), PostgreSQL closed the connection,
and the server's next statement meets that. It is the database going away under the call, as a
terminated backend is: the caller gets UNAVAILABLE SERVICE_UNAVAILABLE (send the events again),
not INTERNAL; nothing of the batch is stored; the resend, fast again, stores and burns once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import make_url

from tests.credit.lost_connection import Served, served_with_pids
from tests.helpers import error_reason
from tests.usage.burn_support import balance
from tests.usage.support import ACCEPTED, DUPLICATE
from tests.usage.test_connection_lost import EVENTS, _batch, _funded, _stored
from tollbooth.db import normalize_url
from tollbooth.usage import service

pytestmark = pytest.mark.postgres

# Long enough that no other transaction of the test idles that long, even on a loaded machine.
TIMEOUT_MS = 1000


@pytest.fixture
def served(pg_url: str) -> Iterator[Served]:
    """A server whose sessions PostgreSQL ends after TIMEOUT_MS idle in a transaction."""
    url = (
        make_url(normalize_url(pg_url))
        .update_query_dict({"options": f"-c idle_in_transaction_session_timeout={TIMEOUT_MS}"})
        .render_as_string(hide_password=False)
    )
    with served_with_pids(url) as it:
        yield it


def test_a_session_ended_for_idling_in_its_transaction_is_unavailable_and_the_resend_burns_once(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel, deps, _pids, _url = served
    acct, events = _funded(channel)
    burn = service.burn_credits
    slowed: list[int] = []

    def slow_burn(*args: Any, **kwargs: Any) -> Any:
        if not slowed:  # the first batch only: its transaction idles past the timeout
            slowed.append(1)
            time.sleep(TIMEOUT_MS / 1000 * 2.5)
        return burn(*args, **kwargs)

    monkeypatch.setattr(service, "burn_credits", slow_burn)
    with pytest.raises(grpc.RpcError) as err:
        _batch(channel, events)
    assert slowed == [1]
    assert (err.value.code(), error_reason(err.value)) == (
        grpc.StatusCode.UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    ), err.value.details()
    assert _stored(deps, acct) == 0
    assert _batch(channel, events) == [ACCEPTED] * EVENTS
    assert _batch(channel, events) == [DUPLICATE] * EVENTS
    assert balance(channel, acct) == ("95", "0")
