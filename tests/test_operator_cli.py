"""The operator commands against a database they cannot use: one plain error line, exit 1.

`tollbooth webhooks list|replay`, `reconcile` and `notifications ...` run from an operator's
shell; a database that does not answer, or one never migrated, is an operator's mistake to be
told in one error line naming the database (password hidden) and a hint to migrate, as
`catalog apply` does, never a traceback dumped as a JSON log record.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_env
from tests.devstack import free_port
from tollbooth import cli

COMMANDS = [
    ["webhooks", "list"],
    ["webhooks", "replay", "--event-id", "evt_1"],
    ["webhooks", "replay", "--failed"],
    ["reconcile"],
    ["notifications", "messages", "ep_1"],
    ["notifications", "attempts", "ep_1"],
    ["notifications", "resend", "ep_1", "--since", "2025-01-01T00:00:00Z"],
]


def _closed_port() -> int:
    """Nothing listens there: a port of this worker's share, not one from port 0 (which the
    kernel may meanwhile hand a server of another test)."""
    return free_port()


def _unmigrated(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'empty.db'}"


def _unreachable(tmp_path: Path) -> str:
    return f"postgresql://tollbooth:s3cret-pw@127.0.0.1:{_closed_port()}/billing"


@pytest.mark.parametrize("database", [_unmigrated, _unreachable], ids=["unmigrated", "unreachable"])
@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_a_database_it_cannot_use_is_one_error_line_and_exit_1(  # type: ignore[no-untyped-def]
    argv, database, tmp_path, monkeypatch, capsys
):
    url = database(tmp_path)
    env = make_env(url, BILLING_DATA_DIR=str(tmp_path / "data"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[-2:][0].startswith("error: database "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert "s3cret-pw" not in captured.err + captured.out
    assert "tollbooth migrate" in captured.err


@pytest.mark.parametrize("value", ["", "  "])
def test_replay_of_an_empty_event_id_is_a_usage_error(value, tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    # An empty id names no event; before anything is read it is refused, exit 2 (never
    # "replayed 0: 0 change(s)" and exit 0).
    env = make_env(_unmigrated(tmp_path), BILLING_DATA_DIR=str(tmp_path / "data"))
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    assert cli.main(["webhooks", "replay", "--event-id", value]) == 2
    assert "--event-id" in capsys.readouterr().err


def test_webhooks_list_prints_one_line_per_event_even_for_a_multi_line_error(  # type: ignore[no-untyped-def]
    tmp_path, monkeypatch, capsys
):
    # A failed event's last_error is one line now, but a row stored by an older release may hold
    # SQLAlchemy's several ("...\n[SQL: ...]"). The list is one event a line, tab-separated.
    from tests.devstack import migrated_sqlite
    from tollbooth.db import Database
    from tollbooth.webhooks import repository

    url = migrated_sqlite(tmp_path / "billing.db")
    database = Database(url)
    try:
        with database.transaction() as session:
            for event_id in ("evt_a", "evt_b"):
                repository.insert_event(
                    session,
                    event_id=event_id,
                    type_="invoice.paid",
                    api_version="",
                    livemode=False,
                    created=None,
                    payload=b"{}",
                )
            repository.mark_failed(
                session, "evt_a", "OperationalError: lost\n[SQL: SELECT 1]\n\t(x)", None
            )
    finally:
        database.dispose()
    env = make_env(url, BILLING_DATA_DIR=str(tmp_path / "data"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["webhooks", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    assert all(len(line.split("\t")) == 6 for line in lines), lines
    failed = next(line for line in lines if line.startswith("evt_a\t"))
    assert failed.split("\t")[-1] == "OperationalError: lost [SQL: SELECT 1] (x)"
