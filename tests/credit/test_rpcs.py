"""Every CreditService RPC through a real gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, select

from billing.v1 import credit_pb2 as c
from tests.conftest import SERVICE_MD, bearer_md
from tests.credit.support import (
    account,
    balance,
    call,
    check_invariants,
    debit,
    error_metadata,
    fails,
    grant,
    reserve,
    rid,
    stub,
)
from tollbooth.db.models import CreditLedgerEntry, NotificationOutbox

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def in_days(days: float) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=days))
    return out


def availability(channel, acct: str, required: str, metadata=SERVICE_MD):  # type: ignore[no-untyped-def]
    return call(
        channel,
        "CheckAvailability",
        c.CheckAvailabilityRequest(account=acct, type="units", required=required),
        metadata,
    )


def ledger(channel, acct: str, **kw) -> list[c.LedgerEntry]:  # type: ignore[no-untyped-def]
    return list(
        call(channel, "ListLedgerEntries", c.ListLedgerEntriesRequest(account=acct, **kw)).entries
    )


def test_seed_001_grant_balance_and_availability(channel, db) -> None:  # type: ignore[no-untyped-def]
    principal, acct_id, _ = account(channel)
    g = grant(channel, principal, "50", reason="Welcome credits")
    assert (g.amount, g.remaining, g.state) == ("50", "50", c.GRANT_STATE_ACTIVE)
    assert g.billing_account_id == acct_id
    b = balance(channel, principal)
    assert (b.billing_account_id, b.credit_type, b.balance, b.reserved) == (
        acct_id,
        "units",
        "50",
        "0",
    )
    ok = availability(channel, acct_id, "10")
    assert (ok.available, ok.balance, ok.required, ok.shortfall) == (True, "50", "10", "0")
    short = availability(channel, principal, "60")
    assert (short.available, short.balance, short.required, short.shortfall) == (
        False,
        "50",
        "60",
        "10",
    )
    with db.transaction() as s:
        check_invariants(s, acct_id)


def test_a_bearer_reads_its_own_balance_without_naming_the_account(channel) -> None:  # type: ignore[no-untyped-def]
    principal, acct_id, token = account(channel)
    grant(channel, principal, "7.25")
    b = balance(channel, "", metadata=bearer_md(token))
    assert (b.billing_account_id, b.balance) == (acct_id, "7.25")
    assert availability(channel, "", "8", bearer_md(token)).shortfall == "0.75"


def test_an_unknown_credit_type_has_a_zero_balance(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    assert balance(channel, principal, "minutes").balance == "0"


def test_writes_require_request_id(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    grant(channel, principal, "5")
    fails(INVALID, "FIELD_REQUIRED", debit, channel, principal, "1", request_id="")
    fails(INVALID, "FIELD_REQUIRED", reserve, channel, principal, "1", request_id="")
    r = reserve(channel, principal, "1")
    fails(
        INVALID,
        "FIELD_REQUIRED",
        stub(channel).CommitReservation,
        c.CommitReservationRequest(account=principal, reservation_id=r.reservation_id),
        metadata=SERVICE_MD,
        timeout=10,
    )


def test_amounts_finer_than_the_documented_precision_are_refused(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    for bad in (
        "0.0000000000000000001",
        "123456789012345678901",
        "-1",
        "1e3",
        "NaN",
        "0",
        " 1",
        "1,5",
    ):
        fails(INVALID, "AMOUNT_INVALID", grant, channel, principal, bad)
    # 18 places, 20 integer digits, and trailing zeros beyond them are fine.
    assert grant(channel, principal, "0.000000000000000001").amount == "0.000000000000000001"
    assert grant(channel, principal, "1.50000000000000000000000").amount == "1.5"
    assert grant(channel, principal, "12345678901234567890").amount == "12345678901234567890"
    assert balance(channel, principal).balance == "12345678901234567891.500000000000000001"
    fails(INVALID, "AMOUNT_INVALID", debit, channel, principal, "0.0000000000000000001")


def test_an_over_long_reason_is_field_invalid_at_any_length(channel) -> None:  # type: ignore[no-untyped-def]
    """A reason holds at most 500 characters: one of 501 is refused with the same reason as one
    of 1001 (FIELD_INVALID, the edge's answer for any over-long string), and writes nothing."""
    principal, _, _ = account(channel)
    kept = grant(channel, principal, "5", reason="r" * 500)
    assert len(kept.reason) == 500
    for length in (501, 1001):
        reason = "r" * length
        for write in (grant, debit, reserve):
            fails(
                INVALID,
                "FIELD_INVALID",
                lambda w=write, r=reason: w(channel, principal, "1", reason=r),
            )
        fails(
            INVALID,
            "FIELD_INVALID",
            call,
            channel,
            "VoidGrant",
            c.VoidGrantRequest(account=principal, grant_id=kept.grant_id, reason=reason),
        )
    got = balance(channel, principal)
    assert (got.balance, got.reserved) == ("5", "0")


def test_a_debit_takes_grants_by_priority_then_soonest_expiry_then_age(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    old = grant(channel, principal, "3")
    late = grant(channel, principal, "3", expire_time=in_days(20))
    soon = grant(channel, principal, "3", expire_time=in_days(2))
    low = grant(channel, principal, "3", priority=1, expire_time=in_days(1))
    new = grant(channel, principal, "3")
    d = debit(channel, principal, "10.5")
    assert [(a.grant_id, a.amount) for a in d.allocations] == [
        (soon.grant_id, "3"),
        (late.grant_id, "3"),
        (old.grant_id, "3"),
        (new.grant_id, "1.5"),
    ]
    assert (d.amount, d.balance_after) == ("10.5", "4.5")
    listed = call(channel, "ListGrants", c.ListGrantsRequest(account=principal)).grants
    assert [g.grant_id for g in listed] == [new.grant_id, low.grant_id]  # active, in order
    every = call(
        channel,
        "ListGrants",
        c.ListGrantsRequest(account=principal, include_inactive=True, page_size=2),
    )
    ids = [g.grant_id for g in every.grants]
    while every.next_page_token:
        every = call(
            channel,
            "ListGrants",
            c.ListGrantsRequest(
                account=principal,
                include_inactive=True,
                page_size=2,
                page_token=every.next_page_token,
            ),
        )
        ids += [g.grant_id for g in every.grants]
    assert ids == [soon.grant_id, late.grant_id, old.grant_id, new.grant_id, low.grant_id]


def test_insufficient_credits_carries_the_shortfall_and_changes_nothing(channel, db) -> None:  # type: ignore[no-untyped-def]
    principal, acct_id, _ = account(channel)
    grant(channel, principal, "5")
    before = ledger(channel, principal)
    key = rid()
    err = fails(
        PRECONDITION, "INSUFFICIENT_CREDITS", debit, channel, principal, "7.5", request_id=key
    )
    assert error_metadata(err) == {
        "credit_type": "units",
        "balance": "5",
        "required": "7.5",
        "shortfall": "2.5",
    }
    assert balance(channel, principal).balance == "5"
    assert ledger(channel, principal) == before
    # The refused key was not used up: after a grant the same request succeeds.
    grant(channel, principal, "5")
    assert debit(channel, principal, "7.5", request_id=key).balance_after == "2.5"
    with db.transaction() as s:
        check_invariants(s, acct_id)


def test_a_debit_replay_after_the_balance_drained_returns_the_original(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    grant(channel, principal, "10")
    key = rid()
    first = debit(channel, principal, "10", request_id=key, reason="job 1")
    assert balance(channel, principal).balance == "0"
    again = debit(channel, principal, "10", request_id=key, reason="job 1")
    assert again == first
    assert len([e for e in ledger(channel, principal) if e.kind == c.LEDGER_ENTRY_KIND_DEBIT]) == 1


def test_the_same_key_with_another_amount_is_refused(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    grant(channel, principal, "10")
    key = rid()
    debit(channel, principal, "2", request_id=key)
    fails(INVALID, "IDEMPOTENCY_KEY_REUSED", debit, channel, principal, "3", request_id=key)
    assert balance(channel, principal).balance == "8"


def test_the_ledger_lists_newest_first_in_pages(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    g = grant(channel, principal, "10")
    d = debit(channel, principal, "4")
    r = reserve(channel, principal, "5")
    call(
        channel,
        "CommitReservation",
        c.CommitReservationRequest(
            account=principal, reservation_id=r.reservation_id, amount="2", request_id=rid()
        ),
    )
    call(channel, "VoidGrant", c.VoidGrantRequest(account=principal, grant_id=g.grant_id))
    page = call(
        channel, "ListLedgerEntries", c.ListLedgerEntriesRequest(account=principal, page_size=2)
    )
    first_token = page.next_page_token
    entries = list(page.entries)
    while page.next_page_token:
        page = call(
            channel,
            "ListLedgerEntries",
            c.ListLedgerEntriesRequest(
                account=principal, page_size=2, page_token=page.next_page_token
            ),
        )
        entries += page.entries
    K = c.LedgerEntryKind
    assert [(K.Name(e.kind), e.amount, e.balance_after) for e in entries] == [
        ("LEDGER_ENTRY_KIND_VOID", "-4", "0"),
        ("LEDGER_ENTRY_KIND_DEBIT", "-2", "4"),
        ("LEDGER_ENTRY_KIND_RELEASE", "5", "6"),
        ("LEDGER_ENTRY_KIND_RESERVATION", "-5", "1"),
        ("LEDGER_ENTRY_KIND_DEBIT", "-4", "6"),
        ("LEDGER_ENTRY_KIND_GRANT", "10", "10"),
    ]
    assert entries[-2].debit_id == d.debit_id and entries[-1].grant_id == g.grant_id
    fails(
        INVALID,
        "PAGE_TOKEN_INVALID",
        call,
        channel,
        "ListLedgerEntries",
        c.ListLedgerEntriesRequest(account=principal, credit_type="other", page_token=first_token),
    )


def test_void_removes_what_is_left_of_a_grant_once(channel, db) -> None:  # type: ignore[no-untyped-def]
    principal, acct_id, _ = account(channel)
    g = grant(channel, principal, "10")
    keep = grant(channel, principal, "1", priority=5)
    debit(channel, principal, "3")
    voided = call(
        channel,
        "VoidGrant",
        c.VoidGrantRequest(account=principal, grant_id=g.grant_id, reason="refund"),
    )
    assert (voided.state, voided.remaining) == (c.GRANT_STATE_VOIDED, "0")
    assert balance(channel, principal).balance == "1"
    fails(
        PRECONDITION,
        "GRANT_VOIDED",
        call,
        channel,
        "VoidGrant",
        c.VoidGrantRequest(account=principal, grant_id=g.grant_id),
    )
    fails(
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        call,
        channel,
        "VoidGrant",
        c.VoidGrantRequest(account=principal, grant_id="cgr_missing"),
    )
    assert keep.remaining == "1"
    with db.transaction() as s:
        check_invariants(s, acct_id)


def test_commit_debits_the_actual_cost_and_releases_the_rest(channel, db) -> None:  # type: ignore[no-untyped-def]
    principal, acct_id, _ = account(channel)
    grant(channel, principal, "10")
    r = reserve(channel, principal, "6", reason="render job", ttl_seconds=60)
    assert (r.state, r.amount) == (c.RESERVATION_STATE_HELD, "6")
    b = balance(channel, principal)
    assert (b.balance, b.reserved) == ("4", "6")
    done = call(
        channel,
        "CommitReservation",
        c.CommitReservationRequest(
            account=principal, reservation_id=r.reservation_id, amount="4.5", request_id=rid()
        ),
    )
    assert (done.state, done.committed_amount) == (c.RESERVATION_STATE_COMMITTED, "4.5")
    assert done.debit_id.startswith("dbt_")
    b = balance(channel, principal)
    assert (b.balance, b.reserved) == ("5.5", "0")
    fails(
        PRECONDITION,
        "RESERVATION_CLOSED",
        call,
        channel,
        "CommitReservation",
        c.CommitReservationRequest(
            account=principal, reservation_id=r.reservation_id, request_id=rid()
        ),
    )
    with db.transaction() as s:
        check_invariants(s, acct_id)


def test_a_commit_above_the_hold_is_refused(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    grant(channel, principal, "10")
    r = reserve(channel, principal, "2")
    fails(
        INVALID,
        "AMOUNT_INVALID",
        call,
        channel,
        "CommitReservation",
        c.CommitReservationRequest(
            account=principal, reservation_id=r.reservation_id, amount="2.1", request_id=rid()
        ),
    )
    assert balance(channel, principal).reserved == "2"


def test_release_gives_the_hold_back_and_is_idempotent(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    grant(channel, principal, "3")
    r = reserve(channel, principal, "3")
    fails(PRECONDITION, "INSUFFICIENT_CREDITS", reserve, channel, principal, "0.1")
    req = c.ReleaseReservationRequest(account=principal, reservation_id=r.reservation_id)
    assert call(channel, "ReleaseReservation", req).state == c.RESERVATION_STATE_RELEASED
    assert call(channel, "ReleaseReservation", req).state == c.RESERVATION_STATE_RELEASED
    b = balance(channel, principal)
    assert (b.balance, b.reserved) == ("3", "0")
    fails(
        PRECONDITION,
        "RESERVATION_CLOSED",
        call,
        channel,
        "CommitReservation",
        c.CommitReservationRequest(
            account=principal, reservation_id=r.reservation_id, request_id=rid()
        ),
    )


def depletions(db, acct_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    with db.transaction() as s:
        rows = s.execute(
            select(NotificationOutbox)
            .where(
                NotificationOutbox.billing_account_id == acct_id,
                NotificationOutbox.type == "credits.balance_depleted",
            )
            .order_by(NotificationOutbox.created_at)
        ).scalars()
        return [dict(r.payload, type=r.type) for r in rows]


def test_an_api_grant_is_announced_once_as_account_credits_granted(channel, db) -> None:  # type: ignore[no-untyped-def]
    principal, acct_id, _ = account(channel)
    key = rid()
    made = grant(channel, principal, "12.5", reason="Welcome credits", request_id=key)
    again = grant(channel, principal, "12.5", reason="Welcome credits", request_id=key)
    assert again.grant_id == made.grant_id  # the replay grants nothing more
    with db.transaction() as s:
        rows = s.scalars(
            select(NotificationOutbox).where(
                NotificationOutbox.billing_account_id == acct_id,
                NotificationOutbox.type == "credits.granted",
            )
        ).all()
        announced = [dict(r.payload) for r in rows]
    assert announced == [
        {
            "grant_id": made.grant_id,
            "credit_type": "units",
            "amount": "12.5",
            "reason": "Welcome credits",
            "request_id": key,
        }
    ]


def test_depletion_is_notified_once_per_transition(channel, db) -> None:  # type: ignore[no-untyped-def]
    principal, acct_id, _ = account(channel)
    grant(channel, principal, "5")
    debit(channel, principal, "2")
    assert depletions(db, acct_id) == []
    emptied = debit(channel, principal, "3")
    [first] = depletions(db, acct_id)
    assert first["type"] == "credits.balance_depleted"
    assert (first["billing_account_id"], first["credit_type"], first["debit_id"]) == (
        acct_id,
        "units",
        emptied.debit_id,
    )
    # Staying at zero writes nothing more.
    fails(PRECONDITION, "INSUFFICIENT_CREDITS", debit, channel, principal, "1")
    assert len(depletions(db, acct_id)) == 1
    # A new grant, held to zero (not consumed: no notification), then committed: a new one.
    grant(channel, principal, "4")
    r = reserve(channel, principal, "4")
    assert len(depletions(db, acct_id)) == 1
    done = call(
        channel,
        "CommitReservation",
        c.CommitReservationRequest(
            account=principal, reservation_id=r.reservation_id, request_id=rid()
        ),
    )
    second = depletions(db, acct_id)[1]
    assert second["debit_id"] == done.debit_id
    with db.transaction() as s:
        assert (
            s.execute(
                select(func.count())
                .select_from(CreditLedgerEntry)
                .where(CreditLedgerEntry.billing_account_id == acct_id)
            ).scalar()
            == 7
        )
        check_invariants(s, acct_id)


def test_a_grant_without_request_id_is_a_new_grant_each_call(channel) -> None:  # type: ignore[no-untyped-def]
    """Seed 001's grant sends no key: it is granted (on PostgreSQL's fast path's fallback
    too), and a second such call is a second grant; a keyed one still replays."""
    principal, _, _ = account(channel)
    one = grant(channel, principal, "50", reason="Welcome credits", request_id="")
    two = grant(channel, principal, "50", reason="Welcome credits", request_id="")
    assert one.grant_id != two.grant_id and one.request_id == two.request_id == ""
    keyed = grant(channel, principal, "5", request_id="k-1")
    assert grant(channel, principal, "5", request_id="k-1").grant_id == keyed.grant_id
    assert balance(channel, principal).balance == "105"
