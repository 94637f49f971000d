"""On PostgreSQL the console's keyset pages (the events page, all or by status, and an
account's notifications) read an index in page order, never sorting the whole table: an
inbox holds every Stripe event ever received, and the outbox every notification (and the
deliveries one row per endpoint of each)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session

from tollbooth.console import inbox
from tollbooth.db import normalize_url

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ACCOUNTS = 40
ENDPOINTS = 2


def fill(url: str, rows: int = 20000) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY stripe_events (event_id, type, livemode, payload, received_at, status,"
                " attempts) FROM STDIN"
            ) as copy:
                for i in range(rows):
                    status = ("applied", "failed", "ignored", "pending")[i % 4]
                    when = T0 + dt.timedelta(seconds=i // 3)  # three share each instant
                    copy.write_row((f"evt_plan{i}", "invoice.paid", False, b"{}", when, status, 1))
            with cur.copy(
                "COPY notification_outbox (id, type, billing_account_id, payload, created_at,"
                " attempts) FROM STDIN"
            ) as copy:
                for i in range(rows):
                    account = f"acct_{i % ACCOUNTS:024d}"
                    when = T0 + dt.timedelta(seconds=i // 3)
                    copy.write_row((f"ntf_plan{i}", "invoice.paid", account, "{}", when, 0))
            # Two endpoints, each with a delivery of every notification: the account page
            # reads how each one stands.
            with cur.copy(
                "COPY notification_endpoints (id, url, description, event_types, secret, enabled,"
                " disabled_reason, created_at, updated_at) FROM STDIN"
            ) as copy:
                for e in range(ENDPOINTS):
                    copy.write_row(
                        (
                            f"nep_plan{e}",
                            "https://r.example/",
                            "",
                            "[]",
                            "whsec_x",
                            True,
                            "",
                            T0,
                            T0,
                        )
                    )
            with cur.copy(
                "COPY notification_deliveries (id, endpoint_id, notification_id, order_key,"
                " position, state, attempts, next_attempt_at, last_error, created_at, updated_at)"
                " FROM STDIN"
            ) as copy:
                for e in range(ENDPOINTS):
                    for i in range(rows):
                        copy.write_row(
                            (f"ndl_plan{e}_{i}", f"nep_plan{e}", f"ntf_plan{i}", "", i,
                             "delivered", 1, T0, "", T0, T0)
                        )  # fmt: skip
        for table in ("stripe_events", "notification_outbox", "notification_deliveries",
                      "notification_endpoints"):  # fmt: skip
            conn.execute(f"ANALYZE {table}")


def plans(url: str, read: Any) -> list[str]:
    """EXPLAIN of every statement `read(session)` runs, with the parameters it ran with."""
    engine = create_engine(normalize_url(url))
    seen: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    with Session(engine) as session:
        read(session)
    event.remove(engine, "before_cursor_execute", capture)
    out = []
    with engine.connect() as conn:
        for statement, parameters in seen:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("EXPLAIN " + statement, parameters)
            out.append("\n".join(r[0] for r in cursor.fetchall()))
    engine.dispose()
    return out


def _older_token(page: inbox.Paged[Any]) -> str:
    assert page.next_token, "the fill holds more than a page"
    return page.next_token


@pytest.mark.postgres
@pytest.mark.parametrize("status", ["", "failed"])
def test_the_events_page_reads_an_index_in_page_order(pg_url, status) -> None:  # type: ignore[no-untyped-def]
    fill(pg_url)

    def read(session: Session) -> None:
        first = inbox.events(session, status)
        inbox.events(session, status, page_token=_older_token(first))

    found = plans(pg_url, read)
    assert len(found) == 2, found
    for plan in found:
        assert "ix_stripe_events" in plan and "received" in plan, plan
        assert "Sort" not in plan and "Seq Scan" not in plan, plan


@pytest.mark.postgres
def test_an_accounts_notifications_read_an_index_in_page_order(pg_url) -> None:  # type: ignore[no-untyped-def]
    fill(pg_url)
    account = f"acct_{7:024d}"

    def read(session: Session) -> None:
        first = inbox.notifications(session, account)
        inbox.notifications(session, account, page_token=_older_token(first))

    found = plans(pg_url, read)
    pages = [p for p in found if "notification_outbox" in p]
    assert len(pages) == 2, found
    for plan in pages:
        assert "ix_notification_outbox_account" in plan, plan
        assert "Sort" not in plan and "Seq Scan" not in plan, plan
    # Then each page's deliveries: probes of the (endpoint, notification) index, no scan.
    sent = [p for p in found if "notification_deliveries" in p]
    assert len(sent) == 2, found
    for plan in sent:
        assert "uq_notification_delivery" in plan, plan
        assert "Seq Scan on notification_deliveries" not in plan, plan
