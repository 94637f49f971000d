"""An archived account takes no new credit reservation: ReserveCredits is refused with
ACCOUNT_ARCHIVED (FAILED_PRECONDITION, as GrantCredits is) on both the pipelined and the
general path, and nothing is held. Reservations made before the archive still close."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from billing.v1 import account_pb2, account_pb2_grpc
from tests.conftest import SERVICE_MD
from tests.credit.support import account, balance, grant, reserve, stub
from tests.helpers import error_reason, keyed
from tollbooth.db import Database
from tollbooth.db.models import CreditReservation


def _archive(channel: grpc.Channel, acct: str) -> None:
    account_pb2_grpc.AccountServiceStub(channel).ArchiveAccount(
        keyed(account_pb2.ArchiveAccountRequest(account=acct)), metadata=SERVICE_MD, timeout=10
    )


def _held(db: Database, acct: str) -> int:
    """Reservations of the account (the module's database is shared by its tests)."""
    with db.transaction(readonly=True) as session:
        rows = session.scalars(
            select(CreditReservation).where(CreditReservation.billing_account_id == acct)
        )
        return len(rows.all())


def test_an_archived_account_takes_no_reservation(channel, db) -> None:  # type: ignore[no-untyped-def]
    acct = account(channel)[0]
    grant(channel, acct, "10")
    before = reserve(channel, acct, "3")
    _archive(channel, acct)
    for kw in ({}, {"ttl_seconds": 60}):
        with pytest.raises(grpc.RpcError) as exc:
            reserve(channel, acct, "2", **kw)
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(exc.value) == "ACCOUNT_ARCHIVED"
    assert _held(db, before.billing_account_id) == 1
    shown = balance(channel, acct)
    assert (shown.balance, shown.reserved) == ("7", "3")
    from billing.v1 import credit_pb2

    stub(channel).ReleaseReservation(
        keyed(
            credit_pb2.ReleaseReservationRequest(account=acct, reservation_id=before.reservation_id)
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )
    assert balance(channel, acct).balance == "10"


def test_an_archived_account_spends_nothing_new_but_a_debit_made_before_replays(channel) -> None:  # type: ignore[no-untyped-def]
    """DebitCredits on an archived account is refused with ACCOUNT_ARCHIVED, by id and by
    principal, and the balance stays (PostgreSQL: the one-call function hands it back and the
    pipelined path refuses it; SQLite: the general path). A debit acknowledged before the archive,
    sent again with its request_id, still answers what it answered (a replay, nothing new)."""
    from tests.credit.support import debit, rid

    principal, acct, _ = account(channel)
    grant(channel, acct, "10")
    key = rid()
    first = debit(channel, acct, "4", request_id=key)
    _archive(channel, acct)
    for ref in (acct, principal):
        with pytest.raises(grpc.RpcError) as exc:
            debit(channel, ref, "1")
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(exc.value) == "ACCOUNT_ARCHIVED"
    assert balance(channel, acct).balance == "6"
    again = debit(channel, acct, "4", request_id=key)
    assert again == first
    assert balance(channel, acct).balance == "6"
