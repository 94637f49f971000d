"""What the console pages show, read through each room's repositories (never SQL here).

The console acts as the service itself (an operator sees every account), so reads of owned
rows name the account they belong to, as every repository function requires.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.orm import Session

from tollbooth.accounts import repository as accounts
from tollbooth.catalog import repository as catalog
from tollbooth.credit.queries import compute_balance
from tollbooth.credit.repository import balances as credit_balances
from tollbooth.credit.repository import ledger as credit_ledger
from tollbooth.db.models import (
    BillingAccount,
    CreditBalance,
    CreditLedgerEntry,
    Price,
    Product,
    Purchase,
    Subscription,
)
from tollbooth.db.types import utcnow
from tollbooth.subscriptions import repository as subscriptions
from tollbooth.usage import repository as usage
from tollbooth.usage.service import spec_of

SEARCH_LIMIT = 100
ROWS = 50
LEDGER_ROWS = 100
USAGE_DAYS = 30
METRICS = 50


def search_accounts(session: Session, text: str) -> list[BillingAccount]:
    if "\x00" in text:  # what no row holds (PostgreSQL text cannot), and cannot be sent to it
        return []
    return accounts.search(session, text.strip(), SEARCH_LIMIT)


@dataclass
class Series:
    """One metric's usage of one account, one value per UTC day (None: no events that day)."""

    code: str
    name: str
    aggregation: str
    days: list[tuple[dt.date, Decimal | int | None]]

    @property
    def total_events(self) -> int:
        return sum(1 for _, v in self.days if v is not None)


@dataclass(frozen=True)
class BalanceFigure:
    """A balance as GetBalance gives it at the page's moment: an expiry that is due but not
    yet recorded (the next write to the balance records it) is applied (`expiry_due`), so
    the figure is the API's, while the ledger below still ends at the last recorded entry."""

    credit_type: str
    balance: Decimal
    reserved: Decimal
    overage: Decimal
    depleted: bool
    expiry_due: bool


@dataclass
class AccountView:
    account: BillingAccount
    plan: list[str]
    subscriptions: list[Subscription]
    purchases: list[Purchase]
    figures: list[BalanceFigure]
    ledger: dict[str, list[CreditLedgerEntry]]
    usage: list[Series] = field(default_factory=list)


def balance_figure(session: Session, row: CreditBalance, now: dt.datetime) -> BalanceFigure:
    due = row.next_event_at is not None and row.next_event_at <= now
    if not due:
        return BalanceFigure(
            row.credit_type, row.balance, row.reserved, row.overage, row.depleted, False
        )
    available, reserved = compute_balance(session, row.billing_account_id, row.credit_type, now)
    return BalanceFigure(row.credit_type, available, reserved, row.overage, available <= 0, True)


def usage_series(
    session: Session, account_id: str, today: dt.date, days: int = USAGE_DAYS
) -> list[Series]:
    """Every billable metric over the last `days` UTC days up to `today`, aggregated per day
    by the metric's own rules (`usage.aggregate`) in the database: one row per day with
    events and metric, however many events there are (`usage.daily_usage`)."""
    first = today - dt.timedelta(days=days - 1)
    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    out: list[Series] = []
    for metric in usage.list_metrics(session, None, METRICS):
        per_day = usage.daily_usage(session, spec_of(metric), account_id, start, end)
        points = [
            (day, per_day.get(day)) for day in (first + dt.timedelta(days=i) for i in range(days))
        ]
        out.append(Series(metric.code, metric.name, metric.aggregation, points))
    return out


def account_view(
    session: Session, account_id: str, today: dt.date, now: dt.datetime | None = None
) -> AccountView | None:
    if "\x00" in account_id:  # as in search_accounts
        return None
    account = accounts.by_id(session, account_id)
    if account is None:
        return None
    at = now or utcnow()
    balances = credit_balances.account_balances(session, account.id)
    return AccountView(
        account=account,
        plan=sorted(
            {
                s.lookup_key or s.stripe_price_id or s.id
                for s in subscriptions.live_subscriptions(session, account.id)
            }
        ),
        subscriptions=subscriptions.list_subscriptions(session, account.id, after=None, limit=ROWS),
        purchases=subscriptions.list_purchases(session, account.id, after=None, limit=ROWS),
        figures=[balance_figure(session, b, at) for b in balances],
        ledger={
            b.credit_type: credit_ledger.list_ledger(
                session, account.id, b.credit_type, after=None, limit=LEDGER_ROWS
            )
            for b in balances
        },
        usage=usage_series(session, account.id, today),
    )


@dataclass
class CatalogView:
    products: list[Product]
    prices: dict[str, list[Price]]


def catalog_view(session: Session) -> CatalogView:
    products = catalog.all_products(session)
    prices: dict[str, list[Price]] = defaultdict(list)
    for price in catalog.all_active_prices(session):
        prices[price.product_id].append(price)
    return CatalogView(products, dict(prices))
