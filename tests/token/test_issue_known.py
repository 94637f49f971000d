"""IssueToken for a known principal reads one row and writes nothing (no transaction: on
PostgreSQL one plain statement, no BEGIN or COMMIT);
concurrent calls on PostgreSQL all answer the one account."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from billing.v1 import token_pb2, token_pb2_grpc
from tests.conftest import SERVICE_MD, make_env
from tests.credit.wire import Recorder, serve_recorded
from tests.devstack import serving
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db import Database


def issue(channel, **fields):  # type: ignore[no-untyped-def]
    stub = token_pb2_grpc.TokenServiceStub(channel)
    return stub.IssueToken(token_pb2.IssueTokenRequest(**fields), metadata=SERVICE_MD, timeout=30)


@pytest.fixture
def recorded(pg_url: str) -> Iterator[tuple[grpc.Channel, Database, Recorder]]:
    yield from serve_recorded(pg_url)


@pytest.fixture
def pg_channel(pg_url: str) -> Iterator[tuple[grpc.Channel, Database]]:
    settings = Settings.from_env(make_env(pg_url))
    db = Database(settings.database_url)
    with serving(Deps.build(settings, db)) as ch:
        yield ch, db
    db.dispose()


def test_known_principal_on_postgres_is_one_plain_statement(recorded) -> None:  # type: ignore[no-untyped-def]
    """On the wire: the account's lookup alone (no BEGIN, no COMMIT, no session)."""
    channel, _, rec = recorded
    first = issue(channel, principal_id="known-1", email="a@example.com")
    for fields in (
        {"principal_id": "known-1", "email": "a@example.com", "user_id": "u2"},
        {"principal_id": "known-1", "scopes": ["credits:read"]},
    ):
        again, statements, trips = rec.call(lambda fields=fields: issue(channel, **fields))
        assert not again.account_created
        assert again.billing_account_id == first.billing_account_id
        assert len(statements) == 1, statements
        assert statements[0].lstrip().upper().startswith("SELECT"), statements
        assert "billing_accounts" in statements[0]
        assert trips == 1, statements
        assert rec.sessions == 0


def test_an_unknown_principal_keeps_the_write_transaction(recorded) -> None:  # type: ignore[no-untyped-def]
    channel, _, rec = recorded
    got, statements, _ = rec.call(lambda: issue(channel, principal_id="brand-new"))
    assert got.account_created
    assert any(s.lstrip().upper().startswith("INSERT") for s in statements), statements
    assert rec.sessions == 1


def test_known_principal_still_fills_missing_contact_details(pg_channel) -> None:  # type: ignore[no-untyped-def]
    channel, db = pg_channel
    issue(channel, principal_id="known-2")
    issue(channel, principal_id="known-2", email="b@example.com", name="Bea")
    from sqlalchemy import text

    with db.engine.connect() as conn:
        row = conn.execute(
            text("SELECT email, name FROM billing_accounts WHERE principal_id = 'known-2'")
        ).one()
    assert tuple(row) == ("b@example.com", "Bea")


def test_concurrent_issue_on_postgres_answers_one_account(pg_channel) -> None:  # type: ignore[no-untyped-def]
    channel, _ = pg_channel
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda i: issue(channel, principal_id="crowd"), range(200)))
    assert len({a.billing_account_id for a in answers}) == 1
    assert sum(a.account_created for a in answers) == 1
