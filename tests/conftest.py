"""Shared fixtures: databases (SQLite always, PostgreSQL when configured), a real gRPC server.

PostgreSQL tests need BILLING_TEST_POSTGRES_URL (for example
postgresql://postgres@127.0.0.1:5432/test). Each test run creates its own database there and
drops it at the end. Without the variable they skip, saying why; `.ci/run` makes them mandatory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text

from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db import STRICT_BOUNDARY_ENV, Database
from tollbooth.db.migrate import upgrade
from tollbooth.db.models import Base

# Every test, and every server process a test starts (they inherit the environment): a call
# to Stripe or a notification receiver made inside an open database transaction raises.
os.environ[STRICT_BOUNDARY_ENV] = "1"

SERVICE_KEY = "test-service-key"
OTHER_SERVICE_KEY = "test-service-key-rotated"
WEBHOOK_SECRET = "whsec_test_secret"
OPERATOR_KEY = "test-operator-key-0123456789"
PG_ENV = "BILLING_TEST_POSTGRES_URL"
CHROMIUM = "/usr/bin/chromium"
# Screenshots of the browser tests.
ARTIFACTS = Path(__file__).resolve().parents[1] / "var" / "test-artifacts"


def make_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        "BILLING_DATABASE_URL": database_url,
        "BILLING_SERVICE_KEYS": f"{SERVICE_KEY},{OTHER_SERVICE_KEY}",
        "BILLING_OPERATOR_KEY": OPERATOR_KEY,
        "BILLING_JWT_KEYS": "k2:test-signing-key-two-0123456789abcdef,"
        "k1:test-signing-key-one-0123456789abcdef",
        "BILLING_JWT_SIGNING_KID": "k2",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BILLING_GRPC_WORKERS": "16",
        # Metrics off unless a test asks: parallel stacks would share the default port.
        "BILLING_METRICS_PORT": "0",
        # Where checkout and portal tests send buyers back.
        "BILLING_REDIRECT_ORIGINS": "https://app.example",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    """A throw-away PostgreSQL database for this test run, migrated once."""
    admin_url = os.environ.get(PG_ENV, "").strip()
    if not admin_url:
        if os.environ.get("BILLING_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_ENV} is required here (BILLING_TEST_REQUIRE_POSTGRES=1)")
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://postgres@127.0.0.1/test)")
    from tests.devstack import throwaway_postgres

    with throwaway_postgres(admin_url, "tollbooth_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def pg_shared_url(pg_base_url: str) -> Iterator[str]:
    """A second PostgreSQL database for this test run, migrated once and never emptied: servers
    shared by a module run on it, and their tests keep apart by creating their own accounts."""
    from tests.devstack import throwaway_postgres

    with throwaway_postgres(os.environ[PG_ENV].strip(), "tollbooth_shared") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A migrated database shared by one module's tests: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        from tests.devstack import migrated_sqlite

        return migrated_sqlite(tmp_path_factory.mktemp("shared") / "billing.db")
    return str(request.getfixturevalue("pg_shared_url"))


@pytest.fixture(scope="module")
def shared_deps(shared_database_url: str) -> Iterator[Deps]:
    """A server's dependencies on the module's shared database."""
    deps = Deps.build(Settings.from_env(make_env(shared_database_url)))
    yield deps
    deps.db.dispose()


@pytest.fixture(scope="module")
def shared_channel(shared_deps: Deps) -> Iterator[grpc.Channel]:
    """One real billing server per module (and database), and a channel to it."""
    from tests.devstack import serving

    with serving(shared_deps) as ch:
        yield ch


@pytest.fixture(scope="module")
def replica_channels(pg_shared_url: str) -> Iterator[list[grpc.Channel]]:
    """Two `serve-grpc` replicas on the shared PostgreSQL database, one channel to each,
    started once per module (concurrency sweeps: each test makes its own objects)."""
    from tests.devstack import grpc_replicas

    with grpc_replicas(make_env(pg_shared_url)) as ports:
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in ports]
        try:
            for ch in channels:
                grpc.channel_ready_future(ch).result(timeout=30)
            yield channels
        finally:
            for ch in channels:
                ch.close()


def _truncate(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A migrated, empty database: a SQLite file, then (when configured) PostgreSQL."""
    if request.param == "sqlite":
        from tests.devstack import migrated_sqlite

        yield migrated_sqlite(tmp_path / "billing.db")
    else:
        url = request.getfixturevalue("pg_base_url")
        _truncate(url)
        yield url


@pytest.fixture
def pg_url(pg_base_url: str) -> str:
    """PostgreSQL only (concurrency proofs), emptied for this test."""
    _truncate(pg_base_url)
    return pg_base_url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.from_env(make_env(database_url))


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def deps(settings: Settings, db: Database) -> Deps:
    return Deps.build(settings, db)


@pytest.fixture
def grpc_port(deps: Deps) -> Iterator[int]:
    """A real billing server on a free loopback port."""
    from tests.devstack import grpc_server

    with grpc_server(deps) as port:
        yield port


@pytest.fixture
def channel(grpc_port: int) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


SERVICE_MD = (("x-api-key", SERVICE_KEY),)


def bearer_md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Server, sidecar and a real Envoy process, on a SQLite file, shared by one test module."""
    from tests.devstack import migrated_sqlite, start_stack

    tmp = tmp_path_factory.mktemp("stack")
    url = migrated_sqlite(tmp / "billing.db")
    s = start_stack(url, make_env(url), tmp)
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, Debian's package (never a downloaded browser), one per module.

    Without /usr/bin/chromium the test skips, unless BILLING_TEST_REQUIRE_BROWSER=1 (as in
    .ci/run), which makes it fail instead."""
    if not os.path.exists(CHROMIUM):
        reason = f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("BILLING_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + "; BILLING_TEST_REQUIRE_BROWSER=1 makes it mandatory")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()
