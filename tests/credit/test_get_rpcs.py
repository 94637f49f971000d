"""GetGrant, GetDebit and GetReservation: one object of the account by id, over gRPC and Envoy.

They take a service key, like their list and create siblings, and the account named owns the
object: another account's id answers exactly like an id that does not exist (NOT_FOUND, 404).
"""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
import pytest
from sqlalchemy import update

from billing.v1 import credit_pb2 as c
from tests.conftest import SERVICE_KEY, bearer_md
from tests.credit.support import account, balance, call, debit, fails, grant, reserve, rid
from tests.helpers import error_reason
from tollbooth.db.models import CreditBalance, CreditReservation

SERVICE = {"x-api-key": SERVICE_KEY}


def outcome(fn, *args, **kwargs) -> tuple[str, str | None]:  # type: ignore[no-untyped-def]
    try:
        fn(*args, **kwargs)
        return ("OK", None)
    except grpc.RpcError as err:
        return (err.code().name, error_reason(err))


def test_each_get_returns_what_its_write_returned(channel) -> None:  # type: ignore[no-untyped-def]
    principal, acct, _ = account(channel)
    granted = grant(channel, principal, "10", reason="trial")
    debited = debit(channel, principal, "3", reason="call")
    held = reserve(channel, principal, "2", reason="job")
    for ref in (acct, principal):
        got = call(channel, "GetGrant", c.GetGrantRequest(account=ref, grant_id=granted.grant_id))
        assert (got.grant_id, got.amount, got.reason) == (granted.grant_id, "10", "trial")
        assert (got.remaining, got.held) == ("5", "2")
        assert (
            call(channel, "GetDebit", c.GetDebitRequest(account=ref, debit_id=debited.debit_id))
            == debited
        )
        assert (
            call(
                channel,
                "GetReservation",
                c.GetReservationRequest(account=ref, reservation_id=held.reservation_id),
            )
            == held
        )


def test_a_commit_debit_and_a_settled_reservation_are_readable(channel) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    grant(channel, principal, "10")
    held = reserve(channel, principal, "4")
    committed = call(
        channel,
        "CommitReservation",
        c.CommitReservationRequest(
            account=principal, reservation_id=held.reservation_id, amount="3", request_id=rid()
        ),
    )
    got = call(
        channel,
        "GetReservation",
        c.GetReservationRequest(account=principal, reservation_id=held.reservation_id),
    )
    assert got == committed and got.state == c.RESERVATION_STATE_COMMITTED
    the_debit = call(
        channel, "GetDebit", c.GetDebitRequest(account=principal, debit_id=committed.debit_id)
    )
    assert (the_debit.debit_id, the_debit.amount, the_debit.balance_after) == (
        committed.debit_id,
        "3",
        "7",
    )


def test_another_accounts_ids_answer_like_missing_ones(channel) -> None:  # type: ignore[no-untyped-def]
    mine, _, my_token = account(channel)
    theirs, _, _ = account(channel)
    grant(channel, mine, "5")
    grant(channel, theirs, "5")
    ids = {
        "GetGrant": grant(channel, theirs, "1").grant_id,
        "GetDebit": debit(channel, theirs, "1").debit_id,
        "GetReservation": reserve(channel, theirs, "1").reservation_id,
    }
    requests = {
        "GetGrant": lambda ident: c.GetGrantRequest(account=mine, grant_id=ident),
        "GetDebit": lambda ident: c.GetDebitRequest(account=mine, debit_id=ident),
        "GetReservation": lambda ident: c.GetReservationRequest(account=mine, reservation_id=ident),
    }
    for method, request in requests.items():
        other = outcome(call, channel, method, request(ids[method]))
        missing = outcome(call, channel, method, request(ids[method][:4] + "0" * 24))
        assert other == missing == ("NOT_FOUND", "NOT_FOUND"), method
        # Service key only, like ListGrants, VoidGrant and CommitReservation.
        as_bearer = outcome(call, channel, method, request(ids[method]), bearer_md(my_token))
        assert as_bearer == ("PERMISSION_DENIED", "SERVICE_KEY_REQUIRED"), method
        # The owner reads it.
        owner_request = request(ids[method])
        owner_request.account = theirs
        assert outcome(call, channel, method, owner_request) == ("OK", None), method


def lapse(db, acct: str, reservation_id: str) -> None:  # type: ignore[no-untyped-def]
    """The hold's expiry moved a moment into the past, not yet recorded by any write (as if
    the clock had passed it)."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    with db.transaction() as session:
        session.execute(
            update(CreditReservation)
            .where(CreditReservation.id == reservation_id)
            .values(expire_at=past)
        )
        session.execute(
            update(CreditBalance)
            .where(CreditBalance.billing_account_id == acct)
            .values(next_event_at=past)
        )


def test_a_reservation_past_its_expiry_reads_expired_not_held(channel, db) -> None:  # type: ignore[no-untyped-def]
    """The hold has lapsed (its expiry moved a moment into the past, not yet recorded by a
    write): the balance no longer counts it and a commit is refused as expired, so
    GetReservation must not still call it held."""
    principal, acct, _ = account(channel)
    grant(channel, principal, "10")
    held = reserve(channel, principal, "4")
    lapse(db, acct, held.reservation_id)
    assert balance(channel, principal).reserved == "0"
    got = call(
        channel,
        "GetReservation",
        c.GetReservationRequest(account=principal, reservation_id=held.reservation_id),
    )
    assert got.state == c.RESERVATION_STATE_EXPIRED
    assert (got.reservation_id, got.amount, got.committed_amount) == (held.reservation_id, "4", "")
    fails(
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_CLOSED",
        call,
        channel,
        "CommitReservation",
        c.CommitReservationRequest(account=principal, reservation_id=held.reservation_id),
    )


def test_a_grant_whose_hold_lapsed_reads_its_credits_back_as_its_listing_does(channel, db) -> None:  # type: ignore[no-untyped-def]
    """A lapsed hold gives its credits back at its expiry: GetBalance and ListGrants say so,
    and GetGrant must too, not the held amount of before the lapse."""
    principal, acct, _ = account(channel)
    granted = grant(channel, principal, "10")
    held = reserve(channel, principal, "4")
    lapse(db, acct, held.reservation_id)
    got = call(channel, "GetGrant", c.GetGrantRequest(account=principal, grant_id=granted.grant_id))
    assert (got.remaining, got.held, got.state) == ("10", "0", c.GRANT_STATE_ACTIVE)
    listed = call(channel, "ListGrants", c.ListGrantsRequest(account=principal)).grants
    assert [(g.grant_id, g.remaining, g.held) for g in listed] == [(granted.grant_id, "10", "0")]
    now = balance(channel, principal)
    assert (now.balance, now.reserved) == ("10", "0")


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("GetGrant", c.GetGrantRequest(grant_id="")),
        ("GetDebit", c.GetDebitRequest(debit_id=" ")),
        ("GetReservation", c.GetReservationRequest(reservation_id="")),
    ],
)
def test_an_empty_id_is_field_required(channel, method, request_) -> None:  # type: ignore[no-untyped-def]
    principal, _, _ = account(channel)
    request_.account = principal
    fails(grpc.StatusCode.INVALID_ARGUMENT, "FIELD_REQUIRED", call, channel, method, request_)


# -- through Envoy --------------------------------------------------------------------------


def _post(stack, path: str, body: dict):  # type: ignore[no-untyped-def]
    resp = stack.request("POST", path, {**body, "request_id": uuid.uuid4().hex}, SERVICE)
    assert resp.status == 200, resp.body
    return resp.json()


@pytest.mark.envoy
def test_the_three_gets_through_envoy_and_404_for_another_account(stack) -> None:  # type: ignore[no-untyped-def]
    owners = []
    for _ in range(2):
        principal = f"get-{uuid.uuid4().hex[:8]}"
        issued = stack.request(
            "POST", "/mgt/v1/token/issue", {"principal_id": principal}, SERVICE
        ).json()
        owners.append((principal, issued["billing_account_id"]))
    (mine, my_id), (theirs, _) = owners
    base = f"/mgt/v1/accounts/{mine}/credits"
    g = _post(stack, f"{base}/grants", {"creditType": "units", "amount": "10"})
    d = _post(stack, f"{base}/debits", {"creditType": "units", "amount": "4"})
    r = _post(stack, f"{base}/reservations", {"creditType": "units", "amount": "1"})
    paths = {
        "grants": (g["grant_id"], g),
        "debits": (d["debit_id"], d),
        "reservations": (r["reservation_id"], r),
    }
    for kind, (ident, written) in paths.items():
        for ref in (mine, my_id):
            resp = stack.request(
                "GET", f"/mgt/v1/accounts/{ref}/credits/{kind}/{ident}", headers=SERVICE
            )
            assert resp.status == 200, resp.body
            body = resp.json()
            if kind == "grants":
                assert (body["grant_id"], body["remaining"]) == (ident, "5")
            else:
                assert body == written
        other = stack.request(
            "GET", f"/mgt/v1/accounts/{theirs}/credits/{kind}/{ident}", headers=SERVICE
        )
        assert (other.status, other.reason) == (404, "NOT_FOUND")
