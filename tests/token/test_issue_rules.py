"""IssueToken inputs: scopes, TTL, principal rules; concurrency on PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import func, select

from billing.v1 import token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD, make_env
from tests.devstack import grpc_server
from tests.helpers import error_reason
from tollbooth.db.models import BillingAccount


def issue(channel, **fields):  # type: ignore[no-untyped-def]
    stub = token_pb2_grpc.TokenServiceStub(channel)
    return stub.IssueToken(token_pb2.IssueTokenRequest(**fields), metadata=SERVICE_MD, timeout=30)


def invalid(channel, **fields) -> str | None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        issue(channel, **fields)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return error_reason(exc.value)


def test_default_scopes_and_ttl(channel, deps):  # type: ignore[no-untyped-def]
    resp = issue(channel, principal_id="p1")
    # Read scopes only: scopes that move money must be asked for.
    assert list(resp.scopes) == ["billing:read", "credits:read", "usage:read"]
    claims = deps.codec.verify(resp.access_token)
    assert claims.expires_at == resp.expire_time.ToDatetime(tzinfo=claims.expires_at.tzinfo)
    assert set(claims.scopes) == set(resp.scopes)
    import jwt

    payload = jwt.decode(resp.access_token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 900


def test_requested_scopes_are_granted_exactly(channel, deps):  # type: ignore[no-untyped-def]
    resp = issue(channel, principal_id="p1", scopes=["portal"])
    assert list(resp.scopes) == ["portal"]
    assert deps.codec.verify(resp.access_token).scopes == frozenset({"portal"})


def test_unknown_scope_is_invalid(channel):  # type: ignore[no-untyped-def]
    assert invalid(channel, principal_id="p1", scopes=["admin"]) == "INVALID_ARGUMENT"


def test_unknown_scopes_are_not_echoed_whole(channel):  # type: ignore[no-untyped-def]
    """README "Input rules": errors never echo more than 64 characters of an input. Many long
    unknown scopes once came back whole in the message (through Envoy, a trailer so large that
    the gateway answered 503 instead of the 400)."""
    scopes = [f"{i:04d}" + "Z" * 900 for i in range(50)]
    with pytest.raises(grpc.RpcError) as exc:
        issue(channel, principal_id="p1", scopes=scopes)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = exc.value.details() or ""
    assert "Z" * 65 not in message
    assert len(message) < 1000
    assert "0000" + "Z" * 60 in message  # the first unknown scope is still named, bounded


def test_ttl_is_capped_by_configuration(channel, deps):  # type: ignore[no-untyped-def]
    import jwt

    resp = issue(channel, principal_id="p1", session_ttl_seconds=10 * 24 * 3600)
    payload = jwt.decode(resp.access_token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == deps.settings.token_ttl_max


def test_negative_ttl_is_invalid(channel):  # type: ignore[no-untyped-def]
    assert invalid(channel, principal_id="p1", session_ttl_seconds=-5) == "INVALID_ARGUMENT"


@pytest.mark.parametrize("spelling", ["session_ttl_seconds", "session_ttl_sec"])
def test_a_negative_ttl_names_the_field_the_caller_sent(channel, spelling):  # type: ignore[no-untyped-def]
    """The deprecated `session_ttl_sec` (seed 000's) is refused under its own name, not the
    new spelling the caller never sent."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    with pytest.raises(grpc.RpcError) as exc:
        issue(channel, principal_id="p1", **{spelling: -5})
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(exc.value)
    assert status is not None
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert [i.metadata["field"] for i in infos] == [spelling]
    assert exc.value.details().startswith(f"{spelling} must not be negative")


@pytest.mark.parametrize("principal", ["acct_0123", "has space", "x" * 201, "/etc/passwd"])
def test_bad_principal_is_invalid_and_creates_nothing(channel, db, principal):  # type: ignore[no-untyped-def]
    assert invalid(channel, principal_id=principal) == "INVALID_ARGUMENT"
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(BillingAccount)) == 0


@pytest.mark.parametrize(("field", "limit"), [("user_id", 200), ("email", 320), ("name", 200)])
def test_an_over_long_contact_field_is_field_invalid_at_any_length_naming_it(  # type: ignore[no-untyped-def]
    channel, db, field, limit
):
    """One character over the contract's limit gets the same answer as a thousand over
    (FIELD_INVALID naming the field, from the edge), not INVALID_ARGUMENT with no field
    ("email or name is too long") below 1,000 characters, and creates no account."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    for length in (limit + 1, 1001):
        with pytest.raises(grpc.RpcError) as exc:
            issue(channel, principal_id="p-long", **{field: "x" * length})
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(exc.value) == "FIELD_INVALID", length
        status = rpc_status.from_call(exc.value)
        assert status is not None
        infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
        info = error_details_pb2.ErrorInfo()
        infos[0].Unpack(info)
        assert info.metadata["field"] == field
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(BillingAccount)) == 0


def test_mapping_is_immutable_and_contact_details_fill_once(channel, db):  # type: ignore[no-untyped-def]
    first = issue(channel, principal_id="p1", email="a@example.com")
    second = issue(channel, principal_id="p1", email="b@example.com", name="B")
    assert first.billing_account_id == second.billing_account_id
    with db.transaction() as s:
        row = s.get(BillingAccount, first.billing_account_id)
        assert (row.principal_id, row.email, row.name) == ("p1", "a@example.com", "B")


def test_distinct_principals_get_distinct_accounts(channel):  # type: ignore[no-untyped-def]
    assert (
        issue(channel, principal_id="a").billing_account_id
        != issue(channel, principal_id="b").billing_account_id
    )


@pytest.mark.postgres
def test_twenty_concurrent_first_calls_create_one_account(pg_url):  # type: ignore[no-untyped-def]
    from tollbooth.app import Deps
    from tollbooth.config import Settings
    from tollbooth.db import Database

    deps = Deps.build(Settings.from_env(make_env(pg_url)), Database(pg_url))
    try:
        with grpc_server(deps) as port:
            channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(20)]
            try:
                with ThreadPoolExecutor(20) as pool:
                    answers = list(pool.map(lambda ch: issue(ch, principal_id="race-1"), channels))
            finally:
                for ch in channels:
                    ch.close()
        assert len({a.billing_account_id for a in answers}) == 1
        assert sum(a.account_created for a in answers) == 1
        with deps.db.transaction() as s:
            n = s.scalar(
                select(func.count())
                .select_from(BillingAccount)
                .where(BillingAccount.principal_id == "race-1")
            )
        assert n == 1
    finally:
        deps.db.dispose()


def test_an_email_that_is_not_an_address_is_refused_and_creates_no_account(channel, deps):  # type: ignore[no-untyped-def]
    """IssueToken's `email` becomes the account's and so its Stripe customer's, which Stripe
    refuses unless it is an address ("Invalid email address"): committed unchecked, it made
    every later sync of the customer, and so every checkout of the account, fail. It is 400
    EMAIL_INVALID like every other e-mail field, and nothing is created."""
    bad = ("not-an-email", "a@@example.com", "a@example..com", ".a@example.com", "a@.example.com")
    for email in bad:
        assert invalid(channel, principal_id="mail-bad", email=email) == "EMAIL_INVALID", email
    with deps.db.transaction(readonly=True) as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(BillingAccount)
                .where(BillingAccount.principal_id == "mail-bad")
            )
            == 0
        )
    # An existing account's contact details are filled with a checked address only.
    issue(channel, principal_id="mail-known")
    assert invalid(channel, principal_id="mail-known", email="nobody") == "EMAIL_INVALID"
    issue(channel, principal_id="mail-known", email=" someone@example.com ")
    with deps.db.transaction(readonly=True) as session:
        stored = session.scalar(
            select(BillingAccount.email).where(BillingAccount.principal_id == "mail-known")
        )
    assert stored == "someone@example.com"
