"""Usage fixtures: a server whose usage limits come from the environment the test sets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import grpc
import pytest

from tests.devstack import grpc_server, serving
from tollbooth.app import Deps


@pytest.fixture
def channel_with_env(deps: Deps) -> Iterator[Callable[..., grpc.Channel]]:
    """`channel_with_env(BILLING_USAGE_MAX_BATCH="3")`: a channel to a server started with
    those variables set (usage limits are settings, read when the server starts)."""
    from tests.conftest import make_env
    from tollbooth.config import Settings

    stack = ExitStack()

    def make(**env: str) -> grpc.Channel:
        settings = Settings.from_env(make_env(deps.settings.database_url, **env))
        return stack.enter_context(serving(Deps.build(settings, deps.db)))

    with stack:
        yield make


@pytest.fixture
def pg_deps(pg_url: str) -> Iterator[Deps]:
    """A server's dependencies on PostgreSQL only (concurrency proofs)."""
    from tests.conftest import make_env
    from tollbooth.config import Settings
    from tollbooth.db import Database

    settings = Settings.from_env(make_env(pg_url))
    deps = Deps.build(settings, Database(pg_url))
    yield deps
    deps.db.dispose()


@pytest.fixture
def pg_port(pg_deps: Deps) -> Iterator[int]:
    with grpc_server(pg_deps) as port:
        yield port
