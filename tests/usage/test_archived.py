"""An archived account records no usage: IngestEvent is refused with ACCOUNT_ARCHIVED
(FAILED_PRECONDITION, as grants, tokens and checkouts are), and in a batch or a stream the
event is rejected with that reason while the others go on, as an unknown account's is. An
event stored before the archive stays a duplicate (the sender's retry of an acknowledged
event). Nothing is stored on refusal."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from billing.v1 import account_pb2, account_pb2_grpc, usage_pb2
from tests.conftest import SERVICE_MD
from tests.credit.support import grant
from tests.helpers import error_reason, keyed
from tests.usage.burn_support import balance, burning_metric
from tests.usage.support import ACCEPTED, DUPLICATE, REJECTED, account, event, ingest, usage_stub
from tollbooth.db import Database
from tollbooth.db.models import UsageEvent


def archive(channel: grpc.Channel, acct: str) -> None:
    account_pb2_grpc.AccountServiceStub(channel).ArchiveAccount(
        keyed(account_pb2.ArchiveAccountRequest(account=acct)), metadata=SERVICE_MD, timeout=10
    )


def stored(db: Database) -> set[str]:
    with db.transaction(readonly=True) as session:
        return set(session.scalars(select(UsageEvent.unique_id)))


def test_one_event_of_an_archived_account_is_refused_and_stores_nothing(channel, db) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel, "gone")
    archive(channel, acct)
    for ref in (acct, "gone"):  # by id and by alias
        with pytest.raises(grpc.RpcError) as exc:
            usage_stub(channel).IngestEvent(
                usage_pb2.IngestEventRequest(event=event("late", ref)),
                metadata=SERVICE_MD,
                timeout=10,
            )
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(exc.value) == "ACCOUNT_ARCHIVED"
    assert stored(db) == set()


def test_a_batch_rejects_the_archived_account_s_events_and_keeps_the_others(channel, db) -> None:  # type: ignore[no-untyped-def]
    live, gone = account(channel, "live"), account(channel, "gone")
    assert [r.status for r in ingest(channel, [event("before", gone)])] == [ACCEPTED]
    archive(channel, gone)
    results = ingest(
        channel,
        [event("a", live), event("b", gone), event("before", gone), event("c", live)],
    )
    assert [(r.unique_id, r.status, r.reason) for r in results] == [
        ("a", ACCEPTED, ""),
        ("b", REJECTED, "ACCOUNT_ARCHIVED"),
        ("before", DUPLICATE, ""),
        ("c", ACCEPTED, ""),
    ]
    assert stored(db) == {"a", "before", "c"}


def test_a_stream_rejects_the_archived_account_s_events_and_goes_on(channel, db) -> None:  # type: ignore[no-untyped-def]
    live, gone = account(channel, "live"), account(channel, "gone")
    archive(channel, gone)
    messages = [
        usage_pb2.StreamEventsRequest(event=event(u, a)) for u, a in (("x", gone), ("y", live))
    ]
    responses = usage_stub(channel).StreamEvents(iter(messages), metadata=SERVICE_MD, timeout=30)
    results = [r for response in responses for r in response.results]
    assert [(r.status, r.reason) for r in results] == [
        (REJECTED, "ACCOUNT_ARCHIVED"),
        (ACCEPTED, ""),
    ]
    assert stored(db) == {"y"}


def test_a_large_batch_and_a_repeat_within_it_reject_the_archived_account_s_events(
    channel, db
) -> None:  # type: ignore[no-untyped-def]
    # Past the few-rows statement (its staging table on PostgreSQL): the archive is read by the
    # inserting statement either way. A unique id repeated within the batch for the archived
    # account is rejected too (nothing of it was stored), not a duplicate of the first.
    live, gone = account(channel, "live"), account(channel, "gone")
    archive(channel, gone)
    batch = [event(f"l{i}", live) for i in range(20)] + [event("g", gone), event("g", gone)]
    results = ingest(channel, batch)
    assert [(r.unique_id, r.status) for r in results[:20]] == [
        (f"l{i}", ACCEPTED) for i in range(20)
    ]
    assert [(r.unique_id, r.status, r.reason) for r in results[20:]] == [
        ("g", REJECTED, "ACCOUNT_ARCHIVED"),
        ("g", REJECTED, "ACCOUNT_ARCHIVED"),
    ]
    assert stored(db) == {f"l{i}" for i in range(20)}


@pytest.mark.parametrize("padding", [0, 20], ids=["few-rows", "staging"])
def test_an_archived_account_s_event_never_takes_a_live_account_s_unique_id(
    channel, db, padding
) -> None:  # type: ignore[no-untyped-def]
    # A unique id is unique per account: the archived account's event of an id is rejected
    # (nothing of it stored) and the live account's event of that id, later in the batch, is
    # its own event: accepted and burning once; its repeat is a duplicate.
    live, gone = account(channel, "live"), account(channel, "gone")
    grant(channel, live, "10")
    burning_metric(channel, "calls", "1")
    archive(channel, gone)
    batch = [event(f"p{i}", live, name="other") for i in range(padding)]
    batch += [event("shared", gone), event("shared", live), event("shared", live)]
    results = ingest(channel, batch)
    assert [(r.unique_id, r.status, r.reason) for r in results[padding:]] == [
        ("shared", REJECTED, "ACCOUNT_ARCHIVED"),
        ("shared", ACCEPTED, ""),
        ("shared", DUPLICATE, ""),
    ]
    assert stored(db) == {f"p{i}" for i in range(padding)} | {"shared"}
    with db.transaction(readonly=True) as session:
        assert session.get(UsageEvent, ("shared", gone)) is None
        row = session.get(UsageEvent, ("shared", live))
        assert row is not None and row.billing_account_id == live
    assert balance(channel, live) == ("9", "0")  # one burn: the stored "shared"


def test_an_archived_account_s_event_is_no_duplicate_of_another_account_s(channel, db) -> None:  # type: ignore[no-untyped-def]
    # Stored before the archive means stored for this account: the live account's event of the
    # id makes the archived account's no retry of anything.
    live, gone = account(channel, "live"), account(channel, "gone")
    assert [r.status for r in ingest(channel, [event("x", live)])] == [ACCEPTED]
    archive(channel, gone)
    results = ingest(channel, [event("x", gone)])
    assert [(r.status, r.reason) for r in results] == [(REJECTED, "ACCOUNT_ARCHIVED")]
    with db.transaction(readonly=True) as session:
        assert session.get(UsageEvent, ("x", gone)) is None
