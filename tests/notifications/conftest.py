"""Fixtures shared by the notification tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notifications.support import Receiver, ReceiverServer


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A signature-checking HTTP receiver on loopback, stopped after the test."""
    r = Receiver()
    server = ReceiverServer(r)
    yield r
    server.close()
