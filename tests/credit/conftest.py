"""Credit fixtures: one server and one database per module (and backend); every test makes its
own accounts, so tests keep apart without a fresh server or an empty database each."""

from __future__ import annotations

import grpc
import pytest

from tollbooth.db import Database
from tollbooth.deps import Deps


@pytest.fixture(scope="module")
def channel(shared_channel: grpc.Channel) -> grpc.Channel:
    return shared_channel


@pytest.fixture(scope="module")
def db(shared_deps: Deps) -> Database:
    return shared_deps.db
