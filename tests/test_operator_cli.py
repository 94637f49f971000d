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


@pytest.mark.parametrize(
    ("argv", "said"),
    [([], "no stored events"), (["--status", "failed"], "no stored events of status failed")],
)
def test_webhooks_list_with_nothing_to_list_says_so_on_stderr(  # type: ignore[no-untyped-def]
    argv, said, tmp_path, monkeypatch, capsys
):
    # The README's `webhooks list --status failed` on a fresh stack printed nothing at all, which
    # reads as a hang or a broken command; stdout stays empty (one event a line, for scripts).
    from tests.devstack import migrated_sqlite

    env = make_env(migrated_sqlite(tmp_path / "billing.db"), BILLING_DATA_DIR=str(tmp_path / "d"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["webhooks", "list", *argv]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines()[-1] == said


# -- a schema that is not this code's alembic head ---------------------------------------------

# The revision before head (an older release's schema) and one no release of this code wrote.
OLDER, NEWER = "0026", "9999_from_a_newer_release"


def _stamp(url: str, revision: str) -> None:
    from sqlalchemy import create_engine, text

    from tollbooth.db import normalize_url

    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


@pytest.fixture
def stamped(database_url):  # type: ignore[no-untyped-def]
    """The migrated test database, its recorded revision set by the test; head again after."""
    from tollbooth.db.migrate import head

    try:
        yield lambda revision: _stamp(database_url, revision)
    finally:
        _stamp(database_url, head())


def _operator_env(url: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for key, value in make_env(url, BILLING_DATA_DIR=str(tmp_path / "data")).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)


SCHEMA_COMMANDS = [
    *COMMANDS,
    ["webhooks", "replay", "--since", "2025-01-01T00:00:00Z"],
    [
        "catalog",
        "apply",
        str(
            Path(__file__).resolve().parents[1]
            / "server"
            / "tollbooth"
            / "catalog"
            / "example_catalog.yaml"
        ),
    ],
]


@pytest.mark.parametrize(("revision", "word"), [(OLDER, "older"), (NEWER, "newer")])
@pytest.mark.parametrize("argv", SCHEMA_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_an_operator_command_refuses_a_schema_not_at_head_in_one_line(  # type: ignore[no-untyped-def]
    argv, revision, word, database_url, stamped, tmp_path, monkeypatch, capsys
):
    # Before, each ran on whatever schema it found: `reconcile` on an older or a newer
    # release's schema printed "reconciled 0: ..." and exited 0.
    from tollbooth.db import Database
    from tollbooth.db.migrate import head
    from tollbooth.db.models import Product

    stamped(revision)
    _operator_env(database_url, tmp_path, monkeypatch)
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert err[0].startswith("error: database ") and word in err[0], err
    assert revision in err[0] and head() in err[0]
    assert captured.out == ""
    db = Database(database_url)
    try:
        with db.transaction(readonly=True) as session:
            assert session.query(Product).count() == 0  # catalog apply wrote nothing
    finally:
        db.dispose()


def test_replay_on_an_older_schema_touches_no_event(
    stamped, database_url, tmp_path, monkeypatch, capsys
):  # type: ignore[no-untyped-def]
    from tollbooth.db import Database
    from tollbooth.webhooks import repository

    database = Database(database_url)
    try:
        with database.transaction() as session:
            repository.insert_event(
                session,
                event_id="evt_old",
                type_="invoice.paid",
                api_version="",
                livemode=False,
                created=None,
                payload=b"{}",
            )
            repository.mark_failed(session, "evt_old", "boom", None)
        before = _event(database, "evt_old")
        stamped(OLDER)
        _operator_env(database_url, tmp_path, monkeypatch)
        assert cli.main(["webhooks", "replay", "--failed"]) == 1
        assert "older" in capsys.readouterr().err
        assert _event(database, "evt_old") == before
    finally:
        database.dispose()


def _event(database, event_id: str) -> tuple[object, ...]:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    with database.transaction(readonly=True) as session:
        row = session.execute(
            text("SELECT status, attempts, last_error FROM stripe_events WHERE event_id = :e"),
            {"e": event_id},
        ).one()
    return tuple(row)


def test_migrate_upgrades_an_older_schema_and_refuses_a_newer_one(  # type: ignore[no-untyped-def]
    tmp_path, monkeypatch, capsys
):
    from tests.devstack import migrated_sqlite
    from tollbooth.db.migrate import current, downgrade, head

    url = migrated_sqlite(tmp_path / "billing.db")
    _operator_env(url, tmp_path, monkeypatch)
    downgrade(url, OLDER)
    assert cli.main(["migrate"]) == 0
    assert current(url) == (head(),)
    capsys.readouterr()
    _stamp(url, NEWER)
    assert cli.main(["migrate"]) == 1  # before: alembic's CommandError as a JSON traceback
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("error: test database ") and "newer" in err[-1], captured.err
    assert "Traceback" not in captured.err + captured.out
    assert current(url) == (NEWER,)


@pytest.mark.parametrize(
    ("argv", "revision", "word"),
    [
        (["serve-grpc"], None, "never migrated"),
        (["serve-grpc"], OLDER, "older"),
        (["serve-grpc"], NEWER, "newer"),
        (["serve-notifications"], None, "never migrated"),
        (["serve-sidecar"], None, "never migrated"),
        (["serve-sidecar"], NEWER, "newer"),
    ],
    ids=[
        "grpc-unmigrated",
        "grpc-older",
        "grpc-newer",
        "notifications-unmigrated",
        "sidecar-unmigrated",
        "sidecar-newer",
    ],
)
def test_a_serving_command_refuses_a_schema_not_at_head(argv, revision, word, tmp_path):  # type: ignore[no-untyped-def]
    # Before, `serve-grpc` on a database never migrated listened and logged "no such table"
    # tracebacks every two seconds (the inbox worker), answering INTERNAL to every RPC; and
    # `serve-sidecar` (its console and webhook inbox read and write that database) served on.
    import os
    import subprocess
    import sys

    from tests.devstack import migrated_sqlite

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    if revision is not None:
        url = migrated_sqlite(tmp_path / "billing.db")
        _stamp(url, revision)
    env = {
        **os.environ,
        **make_env(
            url,
            BILLING_DATA_DIR=str(tmp_path / "data"),
            BILLING_GRPC_PORT=str(free_port()),
            BILLING_SIDECAR_PORT=str(free_port()),
        ),
    }
    env.pop("STRIPE_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tollbooth.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: test database "), proc.stderr
    assert word in err[0]
    assert "Traceback" not in proc.stdout + proc.stderr


# -- --since: ISO 8601, UTC when no offset is named, never in the future ------------------------


def _future() -> str:
    import datetime as dt

    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("value", "word"),
    [
        (_future, "in the future"),
        (lambda: "2999-01-01", "in the future"),
        (lambda: "9999-12-31T23:59:59-14:00", "out of range"),
        (lambda: "0001-01-01T00:00:00+14:00", "out of range"),
    ],
    ids=["tomorrow", "naive-2999", "past-year-9999-in-utc", "before-year-1-in-utc"],
)
@pytest.mark.parametrize(
    "argv",
    [["webhooks", "replay"], ["notifications", "resend", "ep_1"]],
    ids=["replay", "resend"],
)
def test_a_since_in_the_future_or_out_of_range_is_a_usage_error(  # type: ignore[no-untyped-def]
    argv, value, word, tmp_path, monkeypatch, capsys
):
    # Before: a future --since selected nothing and replay printed "replayed 0" with exit 0, as
    # if all were well; a time outside UTC's range was reported as a database error, exit 1.
    from tests.devstack import migrated_sqlite

    _operator_env(migrated_sqlite(tmp_path / "billing.db"), tmp_path, monkeypatch)
    assert cli.main([*argv, "--since", value()]) == 2
    captured = capsys.readouterr()
    assert "--since" in captured.err and word in captured.err, captured.err
    assert "database" not in captured.err and captured.out == ""


def test_a_since_without_an_offset_is_utc_whatever_the_local_zone(tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    import datetime as dt
    import time

    from tests.devstack import migrated_sqlite
    from tollbooth.db import Database
    from tollbooth.webhooks import repository

    url = migrated_sqlite(tmp_path / "billing.db")
    database = Database(url)
    try:
        with database.transaction() as session:
            repository.insert_event(
                session,
                event_id="evt_now",
                type_="tollbooth.unknown_type",
                api_version="",
                livemode=False,
                created=None,
                payload=b"{}",
            )
    finally:
        database.dispose()
    _operator_env(url, tmp_path, monkeypatch)
    # UTC-8: read as local time, a minute ago in UTC would be 8 hours ahead (the future).
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        naive = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
        assert cli.main(["webhooks", "replay", "--since", naive]) == 0
    finally:
        monkeypatch.undo()
        time.tzset()
    assert "replayed 1:" in capsys.readouterr().out


@pytest.mark.parametrize("run_dir", [True, False], ids=["BILLING_RUN_DIR", "data-dir"])
def test_gateway_config_writes_where_make_run_does(run_dir, tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    # With no --out, envoy.yaml goes where the supervisor writes it: BILLING_RUN_DIR when set,
    # else run/ in the data directory (was: always the repository's var/run).
    data = tmp_path / "data"
    extra = {"BILLING_DATA_DIR": str(data)}
    if run_dir:
        extra["BILLING_RUN_DIR"] = str(tmp_path / "elsewhere")
    for key, value in make_env(_unmigrated(tmp_path), **extra).items():
        monkeypatch.setenv(key, value)
    assert cli.main(["gateway-config"]) == 0
    expected = (tmp_path / "elsewhere" if run_dir else data / "run") / "envoy.yaml"
    assert capsys.readouterr().out.strip() == str(expected)
    assert "static_resources" in expected.read_text()
    out = tmp_path / "explicit"
    assert cli.main(["gateway-config", "--out", str(out)]) == 0
    assert (out / "envoy.yaml").is_file()


NOT_UTF8 = "evt_\udcff"  # how Python hands over a command-line byte that is not UTF-8 (0xff)


@pytest.mark.parametrize(
    "argv",
    [
        ["webhooks", "replay", "--event-id", NOT_UTF8],
        ["notifications", "messages", NOT_UTF8],
        ["notifications", "attempts", NOT_UTF8],
        ["notifications", "resend", NOT_UTF8, "--notification-id", "msg_1"],
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_an_argument_that_is_not_utf8_is_a_usage_error(argv, tmp_path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    # A shell passes any bytes; one that is not UTF-8 names nothing we store. It is refused
    # before anything is read, exit 2, in one line: never an uncaught UnicodeEncodeError.
    from tests.devstack import migrated_sqlite

    url = migrated_sqlite(tmp_path / "billing.db")
    env = make_env(url, BILLING_DATA_DIR=str(tmp_path / "data"))
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "not UTF-8" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert "UnicodeEncodeError" not in captured.err + captured.out
