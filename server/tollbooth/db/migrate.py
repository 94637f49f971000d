"""Alembic, driven from code: `make migrate` and `make run` call upgrade(); every other command
that uses a database asks schema_problem() first, so code never runs on a schema it was not
written for (one older, never migrated, or migrated by a newer release)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from tollbooth.db import normalize_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"  # alembic's default, which env.py keeps


class SchemaMismatch(RuntimeError):
    """The database's schema is one this code cannot migrate (a newer release migrated it)."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def _scripts() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def head() -> str:
    """The newest revision this code knows: the schema it was written for."""
    return str(_scripts().get_current_head())


def current(url: str) -> tuple[str, ...]:
    """The revision(s) the database is at; () when never migrated. SQLAlchemyError when the
    database does not answer."""
    engine = create_engine(normalize_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            # Read directly (alembic's MigrationContext logs at INFO on every command).
            if not inspect(conn).has_table(VERSION_TABLE):
                return ()
            rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
            return tuple(sorted(str(r) for r in rows))
    finally:
        engine.dispose()


def schema_problem(url: str) -> str | None:
    """None when the database is at this code's head; otherwise why not, in one line that
    says what to do. SQLAlchemyError when the database does not answer."""
    return _problem(current(url))


def _problem(revisions: tuple[str, ...]) -> str | None:
    newest = head()
    if revisions == (newest,):
        return None
    if not revisions:
        return f"never migrated (this code needs schema {newest}): run `tollbooth migrate`"
    scripts = _scripts()
    unknown = [r for r in revisions if _unknown(scripts, r)]
    shown = ", ".join(revisions)
    if unknown:
        return (
            f"schema {shown} is newer than this code knows (its newest is {newest}): a newer"
            " release migrated it; run that release (this one would misread its data)"
        )
    return f"schema {shown} is older than this code's {newest}: run `tollbooth migrate` first"


def _unknown(scripts: ScriptDirectory, revision: str) -> bool:
    try:
        return scripts.get_revision(revision) is None
    except Exception:  # alembic's ResolutionError and kin: not one of ours
        return True


def upgrade(url: str, revision: str = "head") -> None:
    from tollbooth.db import make_engine

    # Creates the SQLite file's folder when needed.
    make_engine(url).dispose()
    revisions = current(url)
    if any(_unknown(_scripts(), r) for r in revisions):
        problem = _problem(revisions)
        raise SchemaMismatch(f"cannot migrate: {problem}")
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
