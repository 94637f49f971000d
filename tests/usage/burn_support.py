"""Helpers for credit-burn tests: burning metrics, balances, burn entries, notifications."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import grpc
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from billing.v1 import credit_pb2, usage_pb2
from tests.conftest import SERVICE_MD
from tests.credit.support import stub as credit_stub
from tests.usage.support import usage_stub
from tollbooth.db import normalize_url
from tollbooth.db.models import CreditBalance, CreditLedgerEntry, NotificationOutbox

DEPLETED = "credits.balance_depleted"


def burning_metric(
    channel: grpc.Channel,
    code: str,
    rate: str,
    *,
    aggregation: int = usage_pb2.AGGREGATION_COUNT,
    prop: str = "",
    event_name: str = "api_call",
    credit_type: str = "units",
    filters: dict[str, list[str]] | None = None,
) -> usage_pb2.Metric:
    return usage_stub(channel).CreateMetric(
        usage_pb2.CreateMetricRequest(
            metric=usage_pb2.Metric(
                code=code,
                event_name=event_name,
                aggregation=aggregation,  # type: ignore[arg-type]
                property=prop,
                filters=[
                    usage_pb2.PropertyFilter(property=k, values=v)
                    for k, v in (filters or {}).items()
                ],
                credit_burn=usage_pb2.CreditBurn(credit_type=credit_type, rate=rate),
            ),
            request_id=f"metric-{code}-{uuid.uuid4().hex}",
        ),
        metadata=SERVICE_MD,
        timeout=10,
    )


def balance(channel: grpc.Channel, acct: str, credit_type: str = "units") -> tuple[str, str]:
    """(balance, overage) as GetBalance shows them."""
    b = credit_stub(channel).GetBalance(
        credit_pb2.GetBalanceRequest(account=acct, type=credit_type),
        metadata=SERVICE_MD,
        timeout=10,
    )
    return b.balance, b.overage


def ledger(channel: grpc.Channel, acct: str, credit_type: str = "units") -> list[Any]:
    """Every ledger entry of the balance, oldest first."""
    out: list[Any] = []
    token = ""
    while True:
        page = credit_stub(channel).ListLedgerEntries(
            credit_pb2.ListLedgerEntriesRequest(
                account=acct, credit_type=credit_type, page_size=100, page_token=token
            ),
            metadata=SERVICE_MD,
            timeout=10,
        )
        out += page.entries
        token = page.next_page_token
        if not token:
            return out[::-1]


def burn_entries(entries: list[Any]) -> list[Any]:
    """The DEBIT entries of usage burns (what the balance gave)."""
    return [
        e
        for e in entries
        if e.reason.startswith("usage:") and e.kind == credit_pb2.LEDGER_ENTRY_KIND_DEBIT
    ]


def overage_entries(entries: list[Any]) -> list[Any]:
    """The OVERAGE entries of usage burns (what the balance lacked)."""
    return [e for e in entries if e.kind == credit_pb2.LEDGER_ENTRY_KIND_OVERAGE]


def burned_event_ids(entries: list[Any]) -> Counter[str]:
    """How many burn entries name each event id."""
    return Counter(
        uid for e in burn_entries(entries) for uid in json.loads(e.metadata["event_ids"])
    )


class Db:
    """Direct reads of the database a test server writes to."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(normalize_url(url))

    def close(self) -> None:
        self.engine.dispose()

    def depletions(self, account_id: str | None = None) -> list[dict[str, Any]]:
        with Session(self.engine) as s:
            stmt = select(NotificationOutbox).where(NotificationOutbox.type == DEPLETED)
            if account_id:
                stmt = stmt.where(NotificationOutbox.billing_account_id == account_id)
            return [n.payload for n in s.scalars(stmt)]

    def balances(self) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
        with Session(self.engine) as s:
            return {
                (b.billing_account_id, b.credit_type): (b.balance, b.overage)
                for b in s.scalars(select(CreditBalance))
            }

    def burn_rows(self, kind: str = "debit") -> list[CreditLedgerEntry]:
        """The DEBIT (or, with kind="overage", OVERAGE) entries of usage burns."""
        with Session(self.engine) as s:
            return list(
                s.scalars(
                    select(CreditLedgerEntry).where(
                        CreditLedgerEntry.reason.like("usage:%"), CreditLedgerEntry.kind == kind
                    )
                )
            )
