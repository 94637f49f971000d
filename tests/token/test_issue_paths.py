"""IssueToken's known-principal read, two ways: one plain statement on PostgreSQL
(`accounts.repository.known_by_principal`) and the ORM lookup in a session (SQLite's path,
and PostgreSQL's before). Same answers, same refusals, same "must write" for the same inputs."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from tests.conftest import make_env
from tollbooth.accounts.repository import by_principal, insert_if_absent, known_by_principal
from tollbooth.accounts.service import ensure_account
from tollbooth.auth.tokens import DEFAULT_SCOPES, TokenCodec
from tollbooth.config import Settings
from tollbooth.db import Database
from tollbooth.db.models import BillingAccount
from tollbooth.db.types import utcnow
from tollbooth.deps import Deps
from tollbooth.errors import DomainError
from tollbooth.token.service import TokenRequest, issue_known

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(pg_url: str) -> Iterator[tuple[Database, TokenCodec]]:
    deps = Deps.build(Settings.from_env(make_env(pg_url)))
    yield deps.db, deps.codec
    deps.db.dispose()


def _answer(codec: TokenCodec, fn: Any) -> Any:
    """What the call says: the token's account, principal, scopes and lifetime (as the codec
    reads the token back); None for "must write"; the refusal's reason."""
    try:
        got = fn()
    except DomainError as exc:
        return exc.reason
    if got is None:
        return None
    claims = codec.verify(got.access_token)
    assert claims.billing_account_id == got.billing_account_id
    assert claims.principal_id == got.principal_id
    ttl = round((got.expires_at - utcnow()).total_seconds(), -1)
    return (got.billing_account_id, got.principal_id, tuple(got.scopes), ttl, got.account_created)


def _both(db: Database, codec: TokenCodec, req: TokenRequest) -> tuple[Any, Any]:
    plain = _answer(codec, lambda: issue_known(codec, req, lambda p: known_by_principal(db, p)))
    with db.transaction(readonly=True) as s:
        full = _answer(codec, lambda: issue_known(codec, req, lambda p: by_principal(s, p)))
    return plain, full


def test_both_lookups_answer_alike(pg) -> None:  # type: ignore[no-untyped-def]
    db, codec = pg
    tag = uuid.uuid4().hex[:8]
    alias, archived, bare = f"user-{tag}", f"gone-{tag}", f"acct_{tag}"
    with db.transaction() as s:
        account, _ = ensure_account(s, alias, "a@example.com")
        ensure_account(s, archived)
        insert_if_absent(s, bare, None, None, account_id=bare)  # no alias: named by its id
        s.flush()
        s.execute(
            update(BillingAccount)
            .where(BillingAccount.principal_id == archived)
            .values(archived_at=utcnow())
        )
    base = TokenRequest(
        principal_id=alias, user_id="u1", scopes=[], ttl_sec=600, ttl_default=900, ttl_max=3600
    )
    default_scopes = tuple(DEFAULT_SCOPES)
    cases: list[tuple[dict[str, Any], Any]] = [
        ({}, (account.id, alias, default_scopes, 600, False)),
        ({"principal_id": f"  {alias} "}, (account.id, alias, default_scopes, 600, False)),
        ({"email": "a@example.com"}, (account.id, alias, default_scopes, 600, False)),
        ({"scopes": ["credits:read"]}, (account.id, alias, ("credits:read",), 600, False)),
        ({"ttl_sec": 0}, (account.id, alias, default_scopes, 900, False)),
        ({"principal_id": bare}, (bare, bare, default_scopes, 600, False)),
        ({"name": "Bea"}, None),  # contact details to fill: the write path
        ({"principal_id": f"new-{tag}"}, None),  # unknown: the write path creates it
        ({"principal_id": archived}, "ACCOUNT_ARCHIVED"),
        ({"principal_id": account.id}, "INVALID_ARGUMENT"),  # an alias'd account's id
        ({"principal_id": "acct_missing"}, "INVALID_ARGUMENT"),
        ({"principal_id": ""}, "FIELD_REQUIRED"),
        ({"principal_id": "bad principal!"}, "INVALID_ARGUMENT"),
        ({"scopes": ["nope"]}, "INVALID_ARGUMENT"),
        ({"ttl_sec": -1}, "INVALID_ARGUMENT"),
        ({"user_id": "u" * 201}, "INVALID_ARGUMENT"),
    ]
    for change, expected in cases:
        req = dataclasses.replace(base, **change)
        assert _both(db, codec, req) == (expected, expected), change
