"""Migrations apply on an empty database and match the models."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from tollbooth.db import normalize_url
from tollbooth.db.migrate import downgrade, upgrade
from tollbooth.db.models import Base


def test_migrations_create_every_model_table(database_url: str) -> None:
    engine = create_engine(normalize_url(database_url))
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables


def test_migrations_are_reversible_and_idempotent(database_url: str) -> None:
    upgrade(database_url)  # already at head: nothing to do, no error
    downgrade(database_url, "base")
    engine = create_engine(normalize_url(database_url))
    assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
    engine.dispose()
    upgrade(database_url)
    engine = create_engine(normalize_url(database_url))
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_migrated_columns_match_the_models(database_url: str) -> None:
    engine = create_engine(normalize_url(database_url))
    insp = inspect(engine)
    for name, table in Base.metadata.tables.items():
        migrated = {c["name"] for c in insp.get_columns(name)}
        assert {c.name for c in table.columns} == migrated, name
    engine.dispose()
