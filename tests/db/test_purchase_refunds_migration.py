"""Migrations 0025/0026 on a database holding purchases: the rows stay, stay held, and a
purchase PaymentService recorded before 0025 learns the PaymentIntent that paid it (its
`payment_intents` row names it), so a full refund of that payment ends it as it ends a new one.
Before, such a purchase kept no PaymentIntent: its refund voided its credits (their metadata
names the payment) and left what it entitles held."""

from __future__ import annotations

import datetime as dt

from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, Integer, String, column, create_engine, select, table

from tollbooth.db import normalize_url
from tollbooth.db.migrate import alembic_config, downgrade, upgrade
from tollbooth.db.types import UTCDateTime

ACCOUNTS = table(
    "billing_accounts",
    column("id", String),
    column("principal_id", String),
    column("created_at", UTCDateTime),
)
PURCHASES = table(
    "purchases",
    column("id", String),
    column("billing_account_id", String),
    column("checkout_session_id", String),
    column("payment_intent_id", String),
    column("line", Integer),
    column("price_id", String),
    column("quantity", Integer),
    column("amount_total", BigInteger),
    column("currency", String),
    column("created_at", UTCDateTime),
)
INTENTS = table(
    "payment_intents",
    column("id", String),
    column("billing_account_id", String),
    column("stripe_payment_intent_id", String),
    column("status", String),
    column("amount", BigInteger),
    column("currency", String),
    column("description", String),
    column("receipt_email", String),
    column("fingerprint", String),
    column("purchase_id", String),
    column("created_at", UTCDateTime),
    column("updated_at", UTCDateTime),
)
AFTER = table(
    "purchases",
    column("id", String),
    column("stripe_payment_intent_id", String),
    column("refunded_at", UTCDateTime),
)


def test_purchases_recorded_before_0025_stay_held_and_payment_intent_ones_learn_their_payment(
    database_url: str,
) -> None:
    before = ScriptDirectory.from_config(alembic_config(database_url)).get_revision("0025")
    assert before is not None
    downgrade(database_url, str(before.down_revision))
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(ACCOUNTS.insert().values(id="ba_m", principal_id="m", created_at=now))
            common = {
                "billing_account_id": "ba_m",
                "price_id": "prc_1",
                "quantity": 1,
                "amount_total": 4900,
                "currency": "usd",
                "created_at": now,
            }
            conn.execute(
                PURCHASES.insert(),
                [
                    {
                        **common,
                        "id": "pur_cs",
                        "checkout_session_id": "co_1",
                        "payment_intent_id": None,
                        "line": 0,
                    },
                    {
                        **common,
                        "id": "pur_pi",
                        "checkout_session_id": None,
                        "payment_intent_id": "pay_1",
                        "line": 0,
                    },
                ],
            )
            conn.execute(
                INTENTS.insert().values(
                    id="pay_1",
                    billing_account_id="ba_m",
                    stripe_payment_intent_id="pi_paid_1",
                    status="succeeded",
                    amount=4900,
                    currency="usd",
                    description="",
                    receipt_email="",
                    fingerprint="f",
                    purchase_id="pur_pi",
                    created_at=now,
                    updated_at=now,
                )
            )
        upgrade(database_url)
        with engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(AFTER).order_by(AFTER.c.id))}
    finally:
        engine.dispose()
    assert set(rows) == {"pur_cs", "pur_pi"}
    assert rows["pur_pi"].stripe_payment_intent_id == "pi_paid_1"
    assert rows["pur_cs"].stripe_payment_intent_id is None  # nothing here names it
    assert rows["pur_pi"].refunded_at is None and rows["pur_cs"].refunded_at is None
