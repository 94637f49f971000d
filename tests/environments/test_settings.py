"""The live environment's settings: off unless configured; refused, with one plain line naming
what is wrong, when half-configured or sharing a database, key or secret with test; `migrate`
migrates both databases; and an environment on a live-mode key expects live-mode events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect

from tests.conftest import SERVICE_KEY, WEBHOOK_SECRET, make_env
from tests.devstack import free_port, grpc_server, migrated_sqlite
from tollbooth import environments
from tollbooth.app import Deps, start_sidecar
from tollbooth.config import ConfigError, Settings
from tollbooth.webhooks.signature import header

LIVE_SECRET = "whsec_live_one"


def live(db: Path, **extra: str) -> dict[str, str]:
    return {
        "BILLING_LIVE_DATABASE_URL": f"sqlite:///{db}",
        "BILLING_LIVE_STRIPE_API_KEY": "sk_live_0123456789abcdef",
        "BILLING_LIVE_STRIPE_WEBHOOK_SECRET": LIVE_SECRET,
        "BILLING_LIVE_SERVICE_KEYS": "live-service-key-0123456789",
        "BILLING_LIVE_JWT_KEYS": "L1:live-signing-key-0123456789abcdefghij",
        **extra,
    }


def test_without_live_variables_one_test_environment_is_served(tmp_path: Path) -> None:
    settings = Settings.from_env(make_env(f"sqlite:///{tmp_path / 't.db'}"))
    assert list(environments.of(settings)) == ["test"] and not settings.live_configured
    deps = Deps.build(settings)
    assert deps.environment == "test" and deps.others == {}
    deps.dispose()


def test_the_live_view_has_the_live_values_and_nothing_of_test(tmp_path: Path) -> None:
    settings = Settings.from_env(
        make_env(f"sqlite:///{tmp_path / 't.db'}", **live(tmp_path / "l.db"))
    )
    view = environments.view(settings, "live")
    assert view.database_url == f"sqlite:///{tmp_path / 'l.db'}"
    assert view.service_keys == ("live-service-key-0123456789",)
    assert view.jwt_keys == {"L1": "live-signing-key-0123456789abcdefghij"}
    assert view.jwt_signing_kid == "L1" and view.webhook_secrets == (LIVE_SECRET,)
    assert view.stripe_api_key == "sk_live_0123456789abcdef" and not view.live_configured
    assert environments.livemode(view) and not environments.livemode(settings)


@pytest.mark.parametrize(
    "change,named",
    [
        ({"BILLING_LIVE_SERVICE_KEYS": ""}, "BILLING_LIVE_SERVICE_KEYS"),
        ({"BILLING_LIVE_JWT_KEYS": ""}, "BILLING_LIVE_JWT_KEYS"),
        ({"BILLING_LIVE_STRIPE_WEBHOOK_SECRET": ""}, "BILLING_LIVE_STRIPE_WEBHOOK_SECRET"),
        ({"BILLING_LIVE_DATABASE_URL": ""}, "BILLING_LIVE_DATABASE_URL"),
        ({"BILLING_LIVE_STRIPE_API_KEY": "sk_test_abc"}, "BILLING_LIVE_STRIPE_API_KEY"),
        ({"BILLING_LIVE_SERVICE_KEYS": SERVICE_KEY}, "BILLING_LIVE_SERVICE_KEYS"),
        ({"BILLING_LIVE_SERVICE_KEYS": "short"}, "BILLING_LIVE_SERVICE_KEYS"),
        (
            {"BILLING_LIVE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET},
            "BILLING_LIVE_STRIPE_WEBHOOK_SECRET",
        ),
        (
            {"BILLING_LIVE_JWT_KEYS": "k9:test-signing-key-one-0123456789abcdef"},
            "BILLING_LIVE_JWT_KEYS",
        ),
        ({"BILLING_LIVE_JWT_SIGNING_KID": "nope"}, "BILLING_LIVE_JWT_SIGNING_KID"),
        ({"STRIPE_API_KEY": "sk_live_the_test_one"}, "STRIPE_API_KEY"),
        ({"BILLING_LIVE_STRIPE_API_BASE": "127.0.0.1:12111"}, "BILLING_LIVE_STRIPE_API_BASE"),
        ({"BILLING_LIVE_STRIPE_API_BASE": "file:///etc"}, "BILLING_LIVE_STRIPE_API_BASE"),
        (
            {"BILLING_LIVE_STRIPE_API_KEY": "pk_live_x", "BILLING_LIVE_STRIPE_API_BASE": ""},
            "BILLING_LIVE_STRIPE_API_KEY",
        ),
        (
            {
                "BILLING_LIVE_STRIPE_API_KEY": "anything",
                "BILLING_LIVE_STRIPE_API_BASE": "http://127.0.0.1:12111",
            },
            "BILLING_LIVE_STRIPE_API_KEY must be a Stripe secret",
        ),
    ],
)
def test_half_configured_or_shared_is_refused_naming_it(
    tmp_path: Path, change: dict[str, str], named: str
) -> None:
    env = make_env(f"sqlite:///{tmp_path / 't.db'}", **live(tmp_path / "l.db", **change))
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert named in str(err.value)


def test_the_test_database_is_not_a_live_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    with pytest.raises(ConfigError, match="BILLING_LIVE_DATABASE_URL is the test"):
        Settings.from_env(make_env(url, **live(tmp_path / "t.db")))


def test_a_test_mode_live_key_needs_a_stand_in(tmp_path: Path) -> None:
    env = live(tmp_path / "l.db", BILLING_LIVE_STRIPE_API_KEY="sk_test_other")
    with pytest.raises(ConfigError, match="BILLING_LIVE_STRIPE_API_BASE"):
        Settings.from_env(make_env(f"sqlite:///{tmp_path / 't.db'}", **env))
    env["BILLING_LIVE_STRIPE_API_BASE"] = "http://127.0.0.1:12111/"
    view = environments.view(
        Settings.from_env(make_env(f"sqlite:///{tmp_path / 't.db'}", **env)), "live"
    )
    assert view.stripe_api_base == "http://127.0.0.1:12111" and not environments.livemode(view)


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "BILLING_DATA_DIR": str(tmp_path), **env}
    full.pop("STRIPE_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "tollbooth.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_refuses_a_half_configured_live_environment_in_one_plain_line(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "run", BILLING_LIVE_DATABASE_URL=f"sqlite:///{tmp_path / 'l.db'}")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error: ")
    assert "half-configured" in lines[0] and "BILLING_LIVE_STRIPE_API_KEY" in lines[0]
    assert not (tmp_path / "l.db").exists() and not (tmp_path / "billing.db").exists()


def test_migrate_migrates_both_databases(tmp_path: Path) -> None:
    test_db, live_db = tmp_path / "t.db", tmp_path / "l.db"
    proc = run_cli(tmp_path, "migrate", **make_env(f"sqlite:///{test_db}", **live(live_db)))
    assert proc.returncode == 0, proc.stderr
    for db in (test_db, live_db):
        engine = create_engine(f"sqlite:///{db}")
        try:
            assert {"billing_accounts", "stripe_events", "alembic_version"} <= set(
                inspect(engine).get_table_names()
            ), db
        finally:
            engine.dispose()


def test_operator_commands_take_the_environment(tmp_path: Path) -> None:
    test_db, live_db = tmp_path / "t.db", tmp_path / "l.db"
    env = make_env(
        migrated_sqlite(test_db), **live(Path(migrated_sqlite(live_db).removeprefix("sqlite:///")))
    )
    for name in ("test", "live"):
        proc = run_cli(tmp_path, "webhooks", "list", "--environment", name, **env)
        assert proc.returncode == 0, proc.stderr
    alone = make_env(migrated_sqlite(tmp_path / "alone.db"))
    proc = run_cli(tmp_path, "webhooks", "list", "--environment", "live", **alone)
    assert proc.returncode == 2 and "the live environment is not configured" in proc.stderr


def test_a_live_mode_key_expects_live_mode_events(tmp_path: Path) -> None:
    """The live environment on a live-mode key: its events have livemode true; a test-mode
    event signed with its secret is refused and stored nowhere."""
    test_url, live_url = migrated_sqlite(tmp_path / "t.db"), migrated_sqlite(tmp_path / "l.db")
    settings = Settings.from_env(
        make_env(test_url, **live(Path(live_url.removeprefix("sqlite:///"))))
    )
    deps = Deps.build(settings)
    with grpc_server(deps) as port:
        sidecar_port = free_port()
        sidecar = start_sidecar(settings, sidecar_port, target=f"127.0.0.1:{port}")
        try:

            def send(livemode: bool, secret: str) -> tuple[int, str]:
                event_id = f"evt_{livemode}_{secret[-3:]}_{free_port()}"
                body = json.dumps(
                    {
                        "id": event_id,
                        "object": "event",
                        "type": "tollbooth.probe",
                        "livemode": livemode,
                        "created": 1,
                    }
                ).encode()
                reply = httpx.post(
                    f"http://127.0.0.1:{sidecar_port}/v1/billing/webhooks",
                    content=body,
                    headers={"Stripe-Signature": header(body, secret)},
                    timeout=30,
                )
                return reply.status_code, event_id

            def stored(url: str, event_id: str) -> bool:
                engine = create_engine(url)
                try:
                    with engine.connect() as conn:
                        from sqlalchemy import text

                        return bool(
                            conn.execute(
                                text("SELECT count(*) FROM stripe_events WHERE event_id = :e"),
                                {"e": event_id},
                            ).scalar()
                        )
                finally:
                    engine.dispose()

            status, accepted = send(True, LIVE_SECRET)
            assert status == 200 and stored(live_url, accepted) and not stored(test_url, accepted)
            status, refused = send(False, LIVE_SECRET)
            assert status == 400 and not stored(live_url, refused) and not stored(test_url, refused)
            status, test_event = send(False, WEBHOOK_SECRET)
            assert (
                status == 200 and stored(test_url, test_event) and not stored(live_url, test_event)
            )
            status, refused = send(True, WEBHOOK_SECRET)
            assert status == 400 and not stored(test_url, refused) and not stored(live_url, refused)
        finally:
            sidecar.stop()
            deps.dispose()


@pytest.mark.parametrize(
    "test_url,live_url",
    [
        ("sqlite:///t.db", "sqlite:///{tmp}/t.db"),  # relative to the working directory
        ("sqlite:///{tmp}/t.db", "sqlite:///{tmp}/sub/../t.db"),
        ("postgresql://u@127.0.0.1/billing", "postgresql://u@127.0.0.1:5432/billing"),
        ("postgresql://u@localhost/billing", "postgresql://u@127.0.0.1/billing"),
        ("postgresql://u@db.internal/billing", "postgresql://other@DB.internal/billing"),
        ("postgresql://u@db.internal/billing", "postgresql+psycopg://u@db.internal/billing"),
        (
            "postgresql://u@db.internal/billing",
            "postgresql://u@db.internal/billing?sslmode=require",
        ),
    ],
)
def test_one_database_named_two_ways_is_not_a_live_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_url: str, live_url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    env = make_env(test_url.format(tmp=tmp_path), **live(tmp_path / "l.db"))
    env["BILLING_LIVE_DATABASE_URL"] = live_url.format(tmp=tmp_path)
    with pytest.raises(ConfigError, match="BILLING_LIVE_DATABASE_URL is the test"):
        Settings.from_env(env)


def test_two_databases_on_one_server_are_two_environments(tmp_path: Path) -> None:
    env = make_env("postgresql://u@127.0.0.1:5432/billing", **live(tmp_path / "l.db"))
    env["BILLING_LIVE_DATABASE_URL"] = "postgresql://u@127.0.0.1:5432/billing_live"
    assert Settings.from_env(env).live_configured
