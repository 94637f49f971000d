"""Helpers shared by the credit repository's modules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, or_


def arrays(keys: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(account, credit type) keys as two arrays, in key order (PostgreSQL's unnest)."""
    accounts, types = zip(*sorted(keys), strict=True)
    return {"accounts": list(accounts), "types": list(types)}


def fresh(stmt: Any) -> Any:
    """Rows as the database has them now, even if this session loaded them before a lock."""
    return stmt.execution_options(populate_existing=True)


def after(columns: list[Any], values: list[Any], descending: bool) -> ColumnElement[bool]:
    """Strictly after `values` in the lexicographic order of `columns` (keyset paging)."""
    clauses = []
    for i, col in enumerate(columns):
        prefix = [c == v for c, v in zip(columns[:i], values[:i], strict=True)]
        step = col < values[i] if descending else col > values[i]
        clauses.append(and_(*prefix, step))
    return or_(*clauses)
