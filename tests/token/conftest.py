from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import make_env
from tollbooth.devstack import Stack, start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """Server, sidecar and a real Envoy process, on a SQLite file, for this module."""
    tmp = tmp_path_factory.mktemp("stack")
    url = f"sqlite:///{tmp / 'billing.db'}"
    s = start_stack(url, make_env(url), tmp)
    yield s
    s.close()
