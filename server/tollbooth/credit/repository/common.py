"""Helpers shared by the credit repository's modules."""

from __future__ import annotations

from typing import Any


def arrays(keys: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(account, credit type) keys as two arrays, in key order (PostgreSQL's unnest)."""
    accounts, types = zip(*sorted(keys), strict=True)
    return {"accounts": list(accounts), "types": list(types)}


def fresh(stmt: Any) -> Any:
    """Rows as the database has them now, even if this session loaded them before a lock."""
    return stmt.execution_options(populate_existing=True)
