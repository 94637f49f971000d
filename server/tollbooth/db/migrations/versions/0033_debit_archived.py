"""PostgreSQL: `tollbooth_debit` hands an archived account's debit back (SQLSTATE TB001), so
the existing path refuses it with ACCOUNT_ARCHIVED as it refuses reservations, grants and
usage: an archived account spends nothing new (reservations made before still commit).

The function is 0030's, one check added after the account is resolved (the row is read
without a lock, as ingest reads it: a debit committing while the archive commits may be
taken). The text is 0030's own, changed in one place, so the two cannot drift apart; the
downgrade puts 0030's back. SQLite: nothing to do.

Revision ID: 0033
Revises: 0032
"""

import importlib

from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None

_BASE = importlib.import_module("tollbooth.db.migrations.versions.0030_debit_function").DEBIT
_RESOLVED = """    IF acct_id IS NULL THEN
        RAISE EXCEPTION 'tollbooth_debit: account' USING ERRCODE = 'TB001';
    END IF;
"""
_ARCHIVED = """    IF EXISTS (SELECT 1 FROM billing_accounts AS a
               WHERE a.id = acct_id AND a.archived_at IS NOT NULL) THEN
        RAISE EXCEPTION 'tollbooth_debit: archived' USING ERRCODE = 'TB001';
    END IF;
"""


def _replacing(text: str) -> str:
    head = "CREATE FUNCTION tollbooth_debit("
    assert text.count(head) == 1
    return text.replace(head, "CREATE OR REPLACE FUNCTION tollbooth_debit(")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    assert _BASE.count(_RESOLVED) == 1
    op.execute(_replacing(_BASE.replace(_RESOLVED, _RESOLVED + _ARCHIVED)))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_replacing(_BASE))
