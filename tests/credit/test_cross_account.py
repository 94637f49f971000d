"""Another account's grants, reservations and balance answer exactly like ids that do not exist."""

from __future__ import annotations

import grpc

from billing.v1 import credit_pb2 as c
from tests.conftest import bearer_md
from tests.credit.support import account, balance, call, grant, reserve, rid
from tests.helpers import error_reason


def outcome(fn, *args, **kwargs) -> tuple[str, str | None]:  # type: ignore[no-untyped-def]
    try:
        fn(*args, **kwargs)
        return ("OK", None)
    except grpc.RpcError as err:
        return (err.code().name, error_reason(err))


def test_a_bearer_gets_not_found_for_another_accounts_balance(channel) -> None:  # type: ignore[no-untyped-def]
    _, _, mine = account(channel)
    theirs, theirs_id, _ = account(channel)
    grant(channel, theirs, "5")
    md = bearer_md(mine)
    for method, request in (
        ("GetBalance", lambda a: c.GetBalanceRequest(account=a, type="units")),
        (
            "CheckAvailability",
            lambda a: c.CheckAvailabilityRequest(account=a, type="units", required="1"),
        ),
    ):
        other = outcome(call, channel, method, request(theirs_id), md)
        alias = outcome(call, channel, method, request(theirs), md)
        missing = outcome(call, channel, method, request("acct_000000000000000000000000"), md)
        assert other == alias == missing == ("NOT_FOUND", "NOT_FOUND")


def test_another_accounts_grant_and_reservation_ids_answer_like_missing_ones(channel) -> None:  # type: ignore[no-untyped-def]
    mine, _, my_token = account(channel)
    theirs, _, _ = account(channel)
    grant(channel, mine, "5")
    their_grant = grant(channel, theirs, "5").grant_id
    their_hold = reserve(channel, theirs, "2").reservation_id
    requests = {
        "VoidGrant": lambda ident: c.VoidGrantRequest(account=mine, grant_id=ident),
        "CommitReservation": lambda ident: c.CommitReservationRequest(
            account=mine, reservation_id=ident, request_id=rid()
        ),
        "ReleaseReservation": lambda ident: c.ReleaseReservationRequest(
            account=mine, reservation_id=ident
        ),
    }
    ids = {
        "VoidGrant": their_grant,
        "CommitReservation": their_hold,
        "ReleaseReservation": their_hold,
    }
    for method, request in requests.items():
        # With a service key acting on account A: B's id is NOT_FOUND, exactly like a made-up id.
        other = outcome(call, channel, method, request(ids[method]))
        missing = outcome(call, channel, method, request(ids[method][:4] + "0" * 24))
        assert other == missing == ("NOT_FOUND", "NOT_FOUND"), method
        # A's bearer token learns nothing either: these RPCs take a service key only.
        as_bearer = outcome(call, channel, method, request(ids[method]), bearer_md(my_token))
        as_bearer_missing = outcome(
            call, channel, method, request("x_missing"), bearer_md(my_token)
        )
        assert as_bearer == as_bearer_missing == ("PERMISSION_DENIED", "SERVICE_KEY_REQUIRED")
    # B's grant and hold are untouched.
    b = balance(channel, theirs)
    assert (b.balance, b.reserved) == ("3", "2")
