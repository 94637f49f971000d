"""The envelope receivers get (seed 001's shape) and the retry schedule, without a database."""

from __future__ import annotations

import datetime as dt
import json

from tollbooth.db.models import NotificationOutbox
from tollbooth.notifications import envelope
from tollbooth.notifications.delivery import Policy, headers, retry_delay

AT = dt.datetime(2025, 3, 3, 17, 6, 7, 473879, tzinfo=dt.UTC)


def row(type_: str, payload: dict, account: str | None = "acc_abc123") -> NotificationOutbox:  # type: ignore[type-arg]
    return NotificationOutbox(
        id="ntf_1", type=type_, billing_account_id=account, payload=payload, created_at=AT
    )


def test_balance_depleted_is_exactly_seed_001s_payload() -> None:
    stored = row(
        "credits.balance_depleted",
        {
            "billing_account_id": "acc_abc123",
            "credit_type": "units",
            "balance": "0",
            "cause": "debit",
            "debit_id": "dbt_1",
            "occurred_at": AT.isoformat(),
        },
    )
    assert json.loads(envelope.body(stored)) == {
        "id": "ntf_1",
        "type": "account.credits.balance_depleted",
        "timestamp": "2025-03-03T17:06:07.473879Z",
        "data": {"accountId": "acc_abc123", "amount": "0", "type": "units"},
    }


def test_checkout_completed_has_seed_001s_fields_that_we_have() -> None:
    stored = row(
        "checkout.completed",
        {
            "checkout_session_id": "chk_xyz789",
            "amount_total": 4900,
            "currency": "usd",
            "client_reference": "your-internal-reference",
            "mode": "subscription",
        },
    )
    out = envelope.envelope(stored)
    assert out["type"] == "checkout.session.completed"
    assert {k: out["data"][k] for k in ("id", "accountId", "status", "amount", "currency")} == {
        "id": "chk_xyz789",
        "accountId": "acc_abc123",
        "status": "completed",
        "amount": "49.00",
        "currency": "USD",
    }
    assert out["data"]["passThroughToken"] == "your-internal-reference"


def test_zero_decimal_currency_amount_is_whole_units() -> None:
    assert envelope.major_units(500, "jpy") == "500"
    assert envelope.major_units(5, "usd") == "0.05"


def test_other_types_keep_their_names_and_camel_case_their_fields() -> None:
    out = envelope.envelope(row("subscription.updated", {"price_id": "price_1", "state": "active"}))
    assert out["type"] == "subscription.updated"
    assert out["data"] == {"accountId": "acc_abc123", "priceId": "price_1", "state": "active"}
    granted = envelope.envelope(row("credits.granted", {"amount": "50", "credit_type": "units"}))
    assert granted["type"] == "account.credits.granted"
    assert (granted["data"]["amount"], granted["data"]["type"]) == ("50", "units")


def test_retry_delay_doubles_from_the_first_and_is_capped_with_jitter() -> None:
    policy = Policy(retry_first_sec=1, retry_max_sec=8)
    low, high = (lambda: 0.0), (lambda: 0.999999)
    assert [retry_delay(n, policy, low) for n in (1, 2, 3, 4, 5, 9)] == [
        0.8,
        1.6,
        3.2,
        6.4,
        6.4,
        6.4,
    ]
    assert 1.19 < retry_delay(1, policy, high) < 1.2


def test_headers_carry_one_signature_per_secret() -> None:
    from standardwebhooks.webhooks import Webhook

    secrets = ("whsec_" + "A" * 32, "whsec_" + "B" * 32)
    h = headers("ntf_1", '{"a":1}', secrets, AT)
    assert h["webhook-id"] == "ntf_1" and h["webhook-timestamp"] == str(int(AT.timestamp()))
    sigs = h["webhook-signature"].split(" ")
    assert len(sigs) == 2
    for s, sig in zip(secrets, sigs, strict=True):
        assert Webhook(s).sign("ntf_1", AT, '{"a":1}') == sig


def test_every_money_figure_is_amount_and_currency_in_major_units() -> None:
    for type_, key in envelope.MONEY.items():
        data = envelope.envelope(row(type_, {key: 4900, "currency": "usd"}))["data"]
        assert (data["amount"], data["currency"]) == ("49.00", "USD"), type_
        assert not [k for k in data if k.startswith("amount") and k != "amount"], type_
    failed = envelope.envelope(row("invoice.payment_failed", {"attempt_count": 1}))["data"]
    assert (failed["amount"], failed["currency"], failed["attemptCount"]) == (None, None, 1)


def test_times_in_data_are_utc_ending_in_z_whatever_offset_was_stored() -> None:
    stored = {
        "current_period_end": "2026-04-01T02:00:00+02:00",
        "occurred_at": AT.isoformat(),
        "state": "2026-04-01T00:00:00+00:00",  # not a time field: left as it is
    }
    data = envelope.envelope(row("subscription.updated", stored))["data"]
    assert data["currentPeriodEnd"] == "2026-04-01T00:00:00.000000Z"
    assert data["occurredAt"] == "2025-03-03T17:06:07.473879Z"
    assert data["state"] == "2026-04-01T00:00:00+00:00"
