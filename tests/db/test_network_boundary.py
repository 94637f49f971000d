"""No database transaction is held across a call to a network peer (DESIGN, "Standards").

`Database.transaction` counts the transactions a thread holds; the two ways out to a peer
(the Stripe client's every HTTP request, a notification's POST) check it first. The test
suite runs strict (tests/conftest.py sets TOLLBOOTH_STRICT_NETWORK_BOUNDARY=1): any path of
any test that calls a peer inside a transaction fails. Outside the suite it is logged."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.devstack import free_port
from tollbooth.db import (
    STRICT_BOUNDARY_ENV,
    Database,
    TransactionAcrossNetworkCall,
    transactions_held,
)
from tollbooth.db.types import utcnow
from tollbooth.errors import DomainError
from tollbooth.notifications.delivery import Job, send
from tollbooth.provider.client import StripeProvider


def _closed_provider() -> StripeProvider:
    """A provider whose every request fails to connect: nothing listens on its port."""
    return StripeProvider(
        "sk_test_boundary", f"http://127.0.0.1:{free_port()}", max_network_retries=0
    )


def _job() -> Job:
    return Job(
        delivery_id="dlv_boundary",
        endpoint_id="ep_boundary",
        attempt=1,
        notification_id="msg_boundary",
        url=f"http://127.0.0.1:{free_port()}/hooks",
        body="{}",
        secrets=("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",),
        leased_until=utcnow(),
    )


def test_the_suite_runs_strict() -> None:
    import os

    assert os.environ.get(STRICT_BOUNDARY_ENV) == "1"


def test_a_stripe_request_inside_a_transaction_is_refused_before_it_is_sent(
    db: Database,
) -> None:
    provider = _closed_provider()
    with pytest.raises(TransactionAcrossNetworkCall, match="payment provider"):
        with db.transaction() as session:
            assert transactions_held() == 1
            session.connection()
            provider.retrieve_customer("cus_boundary")
    assert transactions_held() == 0
    # Outside a transaction the same request goes out (and fails to connect, as it must).
    with pytest.raises(DomainError) as err:
        provider.retrieve_customer("cus_boundary")
    assert err.value.reason == "PROVIDER_UNAVAILABLE"


def test_a_read_only_transaction_counts_too_and_nesting_unwinds(db: Database) -> None:
    provider = _closed_provider()
    with db.transaction(readonly=True):
        with db.transaction():
            assert transactions_held() == 2
        assert transactions_held() == 1
        with pytest.raises(TransactionAcrossNetworkCall):
            provider.retrieve_customer("cus_boundary")
    assert transactions_held() == 0


def test_a_failed_block_gives_its_count_back(db: Database) -> None:
    with pytest.raises(ValueError):
        with db.transaction():
            raise ValueError("boom")
    assert transactions_held() == 0


def test_a_notification_post_inside_a_transaction_is_refused(db: Database) -> None:
    with httpx.Client(timeout=2) as client:
        with db.transaction():
            with pytest.raises(TransactionAcrossNetworkCall, match="notification endpoint"):
                send(client, _job())
        outcome = send(client, _job())  # outside: sent, and refused by the closed port
    assert outcome.status_code == 0 and outcome.error


def test_outside_the_suite_it_is_logged_not_raised(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(STRICT_BOUNDARY_ENV)
    provider = _closed_provider()
    with caplog.at_level(logging.ERROR, logger="tollbooth.db"):
        with db.transaction():
            with pytest.raises(DomainError) as err:
                provider.retrieve_customer("cus_boundary")
    assert err.value.reason == "PROVIDER_UNAVAILABLE"
    assert any("inside 1 open database transaction" in r.getMessage() for r in caplog.records)
