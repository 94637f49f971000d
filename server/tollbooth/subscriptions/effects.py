"""Subscription and invoice effects of the provider's events (DESIGN section 6).

Registered with the webhook inbox at assembly (`tollbooth.app`) in two phases: `read` asks
the provider for the subscription's current object outside any transaction (`Facts`), then
the effect runs in the transaction that marks the event applied, with no network call. Every
effect is guarded by its own natural key, because the provider can send two distinct events
for one change:

- one renewal per invoice: `billing_effects` key `invoice:{in_…}`; its credit grants carry
  request ids `invoice:{in_…}:{price}:{n}` (a checkout's `checkout:{cs_…}:{price}:{n}`);
- outbound notifications carry dedupe keys (`subscription.created:{sub}` and so on).

Order safety: a subscription's state is never taken from the event, only from the provider's
object read for it. Under our row's lock a read is written only if it began no earlier than the
one already written (`synced_at`): an older read arriving late never overwrites a newer one.
`canceled` and `incomplete_expired` are terminal: nothing ever moves a subscription out of them.

Events about objects we did not create (a customer not one of our accounts), or that the
provider does not know, are ignored: no row is ever written from the event body alone."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from tollbooth import amounts
from tollbooth.accounts import repository as accounts
from tollbooth.auth.caller import SERVICE
from tollbooth.catalog.fields import MAX_GRANT_EXPIRY_SEC
from tollbooth.credit import grants as credit_grants
from tollbooth.db import Database
from tollbooth.db.models import Price, Purchase, Subscription
from tollbooth.db.types import utcnow
from tollbooth.errors import DomainError, Kind
from tollbooth.ids import new_id
from tollbooth.notifications import outbox
from tollbooth.provider import invoices
from tollbooth.provider import repository as links
from tollbooth.provider.client import StripeProvider
from tollbooth.subscriptions import repository, upgrades
from tollbooth.webhooks.dispatch import Handler, Ignored, as_dict, as_list, claim_effect
from tollbooth.webhooks.dispatch import object_id as _id

log = logging.getLogger("tollbooth.fulfilment")

Effect = Callable[["Context", dict[str, Any]], None]
Reader = Callable[[StripeProvider, "Facts", dict[str, Any]], None]


class Facts:
    """What the provider said about an event's objects, read before any transaction opens."""

    def __init__(self) -> None:
        self.read_at = utcnow()
        self.subscriptions: dict[str, dict[str, Any] | None] = {}
        self.checkout_sessions: dict[str, dict[str, Any]] = {}
        self.guard: Any = None  # what the fulfilment guard did at the provider, if anything
        # checkout session or renewal invoice -> the PaymentIntent that paid it
        self.payment_intents: dict[str, str | None] = {}
        self.charges: dict[str, dict[str, Any] | None] = {}
        self.disputes: dict[str, dict[str, Any] | None] = {}
        # renewal invoice -> what it charged for (`provider.invoices.renewal_lines`)
        self.renewal_lines: dict[str, list[tuple[str, int, int | None]] | None] = {}
        # subscription -> (Stripe price, quantity) of each line its current period was charged
        # for, when its latest invoice is that period's renewal (`upgrades.grant`)
        self.period_plan: dict[str, list[tuple[str, int]]] = {}

    def subscription(self, stripe_subscription_id: str) -> dict[str, Any] | None:
        """The provider's object (None: the provider does not know it)."""
        if stripe_subscription_id not in self.subscriptions:
            raise DomainError(
                Kind.INTERNAL,
                "INTERNAL",
                f"subscription {stripe_subscription_id} was not read before applying",
            )
        return self.subscriptions[stripe_subscription_id]

    def read_subscription(self, provider: StripeProvider, stripe_subscription_id: str) -> None:
        if stripe_subscription_id not in self.subscriptions:
            self.subscriptions[stripe_subscription_id] = provider.retrieve_subscription(
                stripe_subscription_id
            )


class Context:
    """One event being applied: the transaction, what the provider said, what it changed."""

    def __init__(self, session: Session, facts: Facts, event_id: str) -> None:
        self.session = session
        self.facts = facts
        self.event_id = event_id
        self.changes: list[str] = []

    def clock(self) -> dt.datetime:
        return utcnow()


def _ts(value: Any) -> dt.datetime | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return dt.datetime.fromtimestamp(int(value), dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


# -- subscriptions ----------------------------------------------------------------------------


def _first_item(sub: dict[str, Any]) -> dict[str, Any]:
    data = as_list(as_dict(sub.get("items")).get("data"))
    return data[0] if data and isinstance(data[0], dict) else {}


# Stripe allows 20 items on a subscription; more from a provider is recorded up to this many.
MAX_ITEMS = 100


def _quantity(item: dict[str, Any]) -> int:
    quantity = item.get("quantity")
    return quantity if type(quantity) is int and 0 < quantity < 2**31 else 1


def _recorded_items(session: Session, truth: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of the provider's subscription, as subscription_items columns, in order."""
    out = []
    for item in _items(truth)[:MAX_ITEMS]:
        stripe_price = _id(item.get("price"))
        price = links.price_by_stripe_id(session, stripe_price) if stripe_price else None
        out.append(
            {
                "stripe_price_id": stripe_price,
                "price_id": price.id if price else None,
                "lookup_key": price.lookup_key if price else None,
                "subscription_group": price.subscription_group if price else None,
                "stackable": price.stackable if price else False,
                "quantity": _quantity(item),
            }
        )
    return out


def sync_subscription(
    ctx: Context, stripe_subscription_id: str, announce: bool = True
) -> Subscription | None:
    """Our row brought in line with the provider's object read for this event (None: not ours
    or unknown there, nothing written). `announce` False: a new row is no `subscription.created`."""
    session = ctx.session
    truth = ctx.facts.subscription(stripe_subscription_id)
    existing = repository.subscription_by_stripe_id(session, stripe_subscription_id, owner=None)
    if existing is None:
        if truth is None:
            return None  # unknown to the provider: never a row from the event alone
        customer = _id(truth.get("customer"))
        account = links.account_by_customer(session, customer) if customer else None
        if account is None:
            return None  # not one of our customers: acknowledge, change nothing
        # A placeholder to lock; the provider's object overwrites it in this transaction.
        created = repository.ensure_subscription_row(
            session, account.id, stripe_subscription_id, "incomplete"
        )
    else:
        created = False
    row = repository.lock_subscription(session, stripe_subscription_id, owner=None)
    assert row is not None
    if truth is None:
        log.warning("subscription %s is unknown to the provider", stripe_subscription_id)
        return row
    if not created and row.synced_at is not None and row.synced_at > ctx.facts.read_at:
        return row  # a newer read was written already
    _write_subscription(ctx, row, truth, created, announce)
    return row


def _write_subscription(
    ctx: Context, row: Subscription, truth: dict[str, Any], created: bool, announce: bool
) -> None:
    status = str(truth.get("status") or "incomplete")
    if row.state in repository.TERMINAL_STATES and status not in repository.TERMINAL_STATES:
        log.warning(
            "subscription %s is %s here; refusing to move it to %s",
            row.stripe_subscription_id,
            row.state,
            status,
        )
        return
    item = _first_item(truth)
    items = _recorded_items(ctx.session, truth)
    first = items[0] if items else {}
    before = _snapshot(row)
    held = repository.items_of(ctx.session, [row.id])[row.id]
    before["items"] = [(i.stripe_price_id, i.quantity) for i in held]
    row.state = status
    row.stripe_price_id = first.get("stripe_price_id")
    row.price_id = first.get("price_id")
    row.lookup_key = first.get("lookup_key")
    row.subscription_group = first.get("subscription_group")
    row.stackable = bool(first.get("stackable"))
    row.quantity = first.get("quantity", 1)
    repository.replace_items(ctx.session, row, items)
    row.current_period_start = _ts(
        item.get("current_period_start", truth.get("current_period_start"))
    )
    row.current_period_end = _ts(item.get("current_period_end", truth.get("current_period_end")))
    row.cancel_at_period_end = bool(truth.get("cancel_at_period_end"))
    row.cancel_at = _ts(truth.get("cancel_at"))
    row.canceled_at = _ts(truth.get("canceled_at"))
    row.ended_at = _ts(truth.get("ended_at"))
    row.latest_invoice = _id(truth.get("latest_invoice"))
    row.provider_created_at = _ts(truth.get("created"))
    now = ctx.clock()
    row.synced_at = ctx.facts.read_at
    after = _snapshot(row)
    after["items"] = [(i["stripe_price_id"], i["quantity"]) for i in items]
    if after == before and not created:
        return
    row.updated_at = now
    ctx.session.flush()
    payload = _subscription_payload(row)
    account = row.billing_account_id
    sub = row.stripe_subscription_id
    if created and announce:
        outbox.enqueue(
            ctx.session, "subscription.created", account, payload, f"subscription.created:{sub}"
        )
        ctx.changes.append(f"subscription {sub} created: {status}")
    if status == "canceled" and before.get("state") != "canceled":
        outbox.enqueue(
            ctx.session, "subscription.canceled", account, payload, f"subscription.canceled:{sub}"
        )
        ctx.changes.append(f"subscription {sub} canceled")
    elif not created:
        outbox.enqueue(ctx.session, "subscription.updated", account, payload)
        changed = sorted(k for k in after if after[k] != before.get(k))
        ctx.changes.append(f"subscription {sub} updated: {', '.join(changed)}")
        if status in repository.GRANTING_STATES and before.get("price_id"):
            upgrades.grant(ctx, row, before, items)


def _snapshot(row: Subscription) -> dict[str, Any]:
    return {
        "state": row.state,
        "stripe_price_id": row.stripe_price_id,
        "price_id": row.price_id,
        "quantity": row.quantity,
        "current_period_start": row.current_period_start,
        "current_period_end": row.current_period_end,
        "cancel_at_period_end": row.cancel_at_period_end,
        "cancel_at": row.cancel_at,
        "canceled_at": row.canceled_at,
        "ended_at": row.ended_at,
    }


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at else None


def _subscription_payload(row: Subscription) -> dict[str, Any]:
    return {
        "subscription_id": row.id,
        "stripe_subscription_id": row.stripe_subscription_id,
        "price_id": row.price_id,
        "lookup_key": row.lookup_key,
        "state": row.state,
        "current_period_end": _iso(row.current_period_end),
        "cancel_at_period_end": row.cancel_at_period_end,
        "cancel_at": _iso(row.cancel_at),
    }


def _subscription_of(obj: dict[str, Any]) -> str:
    sub_id = _id(obj.get("id"))
    if not sub_id:
        raise Ignored("the event names no usable subscription id")
    return sub_id


def read_subscription(provider: StripeProvider, facts: Facts, obj: dict[str, Any]) -> None:
    sub_id = _subscription_of(obj)
    facts.read_subscription(provider, sub_id)
    invoice_id = _id((facts.subscriptions[sub_id] or {}).get("latest_invoice"))
    if invoice_id:  # what the current period was charged for, if it was a renewal
        _read_renewal(provider, facts, sub_id, invoice_id)


def _read_renewal(provider: StripeProvider, facts: Facts, sub_id: str, invoice_id: str) -> None:
    """The provider's invoice: what paid it and, for a renewal, what it charged for."""
    try:
        invoice = provider.retrieve_invoice(invoice_id)
    except DomainError as exc:
        if exc.kind is Kind.UNAVAILABLE:
            raise  # retried with the event
        invoice = {}  # an invoice the provider refuses to show
    if invoice.get("billing_reason") != "subscription_cycle":
        return
    facts.payment_intents[invoice_id] = invoices.paid_intent(invoice)
    lines = facts.renewal_lines[invoice_id] = invoices.renewal_lines(invoice)
    if lines and invoice_id == _id((facts.subscriptions[sub_id] or {}).get("latest_invoice")):
        facts.period_plan[sub_id] = [(price, quantity) for price, quantity, _ in lines]


def on_subscription(ctx: Context, obj: dict[str, Any]) -> None:
    if sync_subscription(ctx, _subscription_of(obj)) is None:
        raise Ignored("the subscription is not one of ours, or unknown to the provider")


# -- grants -----------------------------------------------------------------------------------


def grant_for_price(
    ctx: Context,
    account_id: str,
    price: Price,
    quantity: int,
    *,
    when: str,
    request_prefix: str,
    reason: str,
    anchor: dt.datetime | None = None,
    payment_intent: str | None = None,
) -> None:
    """The grants a price brings; their expiry counts from `anchor` (the billing period's
    start) when given, else from now. An anchored expiry already past when the event is
    applied (delivered or retried late, a renewal paid days into its period) counts from now
    instead: the ledger refuses a grant that expires in the past, so the event would fail on
    every attempt, the payment taken and nothing granted."""
    for n, spec in enumerate(price.credit_grants or []):
        if not spec.get(when):
            continue
        # Exact, or AMOUNT_INVALID past the storage cap (issue 14, finding 7): never rounded.
        amount = amounts.times(str(spec["amount"]), max(quantity, 1), f"credit_grants[{n}].amount")
        # A price stored before the cap may hold more: counted as the cap (a datetime past
        # year 9999 would fail this event on every retry, the purchase paid and not granted).
        expires = min(int(spec.get("expires_after_sec") or 0), MAX_GRANT_EXPIRY_SEC)
        applied = ctx.clock()
        now = anchor or applied
        if expires and now + dt.timedelta(seconds=expires) <= applied:
            now = applied  # the anchored expiry has passed: counted from the grant itself
        request_id = f"{request_prefix}:{price.id}:{n}"
        grant = credit_grants.grant(
            ctx.session,
            SERVICE,
            account_id,
            credit_type=str(spec["credit_type"]),
            amount=format(amount, "f"),
            reason=reason,
            priority=int(spec.get("priority") or 0),
            expire_at=now + dt.timedelta(seconds=expires) if expires else None,
            request_id=request_id,
            metadata={
                "price_id": price.id,
                "event_id": ctx.event_id,
                **({"payment_intent": payment_intent} if payment_intent else {}),
            },
            clock=ctx.clock,
            for_purchase=True,
        )
        outbox.enqueue(
            ctx.session,
            "credits.granted",
            account_id,
            {
                "grant_id": grant.id,
                "credit_type": grant.credit_type,
                "amount": format(amount, "f"),
                "price_id": price.id,
                "request_id": request_id,
            },
            f"credits.granted:{request_id}",
        )
        ctx.changes.append(f"granted {format(amount, 'f')} {grant.credit_type} to {account_id}")


def record_purchase(
    ctx: Context,
    account_id: str,
    checkout_session_id: str | None,
    line: int,
    price: Price | None,
    quantity: int,
    now: dt.datetime,
    *,
    payment_intent_id: str | None = None,
    paid: tuple[int, str] | None = None,
    stripe_payment_intent: str | None = None,
) -> str:
    """A one-off price bought through a checkout (its fulfilment calls this), or a payment
    intent's payment (`tollbooth.payments.effects`: `paid` is its amount and currency, the
    price optional); the purchase id. `stripe_payment_intent` is the provider's PaymentIntent
    that paid it: a full refund of it ends the purchase (`subscriptions.refunds`)."""
    purchase_id = new_id("pur")
    amount, currency = paid or (price.unit_amount * quantity, price.currency)  # type: ignore[union-attr]
    repository.add_purchase(
        ctx.session,
        Purchase(
            id=purchase_id,
            billing_account_id=account_id,
            checkout_session_id=checkout_session_id,
            payment_intent_id=payment_intent_id,
            line=line,
            price_id=price.id if price else None,
            stripe_price_id=price.stripe_price_id if price else None,
            lookup_key=price.lookup_key if price else None,
            quantity=quantity,
            amount_total=amount,
            currency=currency,
            created_at=now,
            stripe_payment_intent_id=stripe_payment_intent,
        ),
    )
    return purchase_id


# -- invoices ---------------------------------------------------------------------------------


def _invoice_subscription(obj: dict[str, Any]) -> str | None:
    details = as_dict(as_dict(obj.get("parent")).get("subscription_details"))
    return _id(details.get("subscription")) or _id(obj.get("subscription"))


def invoice_ids(obj: dict[str, Any]) -> tuple[str, str]:
    invoice_id, sub_id = _id(obj.get("id")), _invoice_subscription(obj)
    if not invoice_id or not sub_id:
        raise Ignored("not a subscription invoice with usable ids")
    return invoice_id, sub_id


def read_invoice(provider: StripeProvider, facts: Facts, obj: dict[str, Any]) -> None:
    invoice_id, sub_id = invoice_ids(obj)
    facts.read_subscription(provider, sub_id)
    if obj.get("billing_reason") != "subscription_cycle" or facts.subscriptions[sub_id] is None:
        return
    # What paid a renewal: its grants record it, so a full refund of that payment voids them.
    # What it charged for: its grants are those of the plan paid for, whatever the
    # subscription holds by the time this event is applied (an upgrade since, applied first).
    _read_renewal(provider, facts, sub_id, invoice_id)


def _items(truth: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in as_list(as_dict(truth.get("items")).get("data")) if isinstance(i, dict)]


def renewed(
    session: Session, facts: Facts, sub_id: str, invoice_id: str
) -> list[tuple[Price, int, Any]]:
    """What a renewal grants for: (our price, quantity, its period's start) of every line the
    provider's invoice charged for, else of every item the provider says the subscription
    holds; never the invoice's lines from the event body. Prices not in our catalog left out."""
    charged = facts.renewal_lines.get(invoice_id)
    items = _items(facts.subscription(sub_id) or {})
    lines: list[tuple[str | None, int, Any]] = (
        list(charged)
        if charged
        else [(_id(i.get("price")), _quantity(i), i.get("current_period_start")) for i in items]
    )
    out = []
    for stripe_price, quantity, start in lines:
        price = links.price_by_stripe_id(session, stripe_price) if stripe_price else None
        if price is not None:
            out.append((price, quantity, start))
    return out


def on_invoice_paid(ctx: Context, obj: dict[str, Any]) -> None:
    invoice_id, sub_id = invoice_ids(obj)
    row = sync_subscription(ctx, sub_id)
    if row is None:
        raise Ignored("the subscription is not one of ours, or unknown to the provider")
    account = row.billing_account_id
    billing_reason = obj.get("billing_reason")
    outbox.enqueue(
        ctx.session,
        "invoice.paid",
        account,
        {
            "stripe_invoice_id": invoice_id,
            "subscription_id": row.id,
            "billing_reason": billing_reason if isinstance(billing_reason, str) else None,
            "amount_paid": obj.get("amount_paid") if type(obj.get("amount_paid")) is int else None,
            "currency": obj.get("currency") if isinstance(obj.get("currency"), str) else None,
        },
        f"invoice.paid:{invoice_id}",
    )
    if billing_reason != "subscription_cycle":
        return  # the first invoice is the purchase: checkout fulfilment grants for it
    if not claim_effect(ctx.session, f"invoice:{invoice_id}", ctx.event_id, account):
        return  # this invoice's renewal was applied already
    accounts.by_id_for_update(ctx.session, account)  # before any grant, as a refund locks
    from tollbooth.subscriptions import overflow, refunds  # (both import this module)

    truth = ctx.facts.subscription(sub_id) or {}
    lines = renewed(ctx.session, ctx.facts, sub_id, invoice_id)
    if overflow.renewal_skipped(ctx, row, obj, invoice_id, lines):
        return  # its grants cannot be stored: its payment refunded, nothing granted
    for price, quantity, start in lines:
        grant_for_price(
            ctx,
            account,
            price,
            quantity,
            when="on_renewal",
            request_prefix=f"invoice:{invoice_id}:{price.stripe_price_id}",
            reason=f"renewal of {price.lookup_key or price.id}",
            anchor=_ts(start if start is not None else truth.get("current_period_start")),
            payment_intent=ctx.facts.payment_intents.get(invoice_id),
        )
    refunds.settle(ctx, account, ctx.facts.payment_intents.get(invoice_id))
    ctx.changes.append(f"invoice {invoice_id} renewal applied")


def on_invoice_payment_failed(ctx: Context, obj: dict[str, Any]) -> None:
    invoice_id, sub_id = invoice_ids(obj)
    row = sync_subscription(ctx, sub_id)
    if row is None:
        raise Ignored("the subscription is not one of ours, or unknown to the provider")
    count = obj.get("attempt_count")
    attempt = count if type(count) is int and 0 <= count < 1000 else 0
    outbox.enqueue(
        ctx.session,
        "invoice.payment_failed",
        row.billing_account_id,
        {
            "stripe_invoice_id": invoice_id,
            "subscription_id": row.id,
            "state": row.state,
            "attempt_count": attempt,
            "amount_due": obj.get("amount_due") if type(obj.get("amount_due")) is int else None,
            "currency": obj.get("currency") if isinstance(obj.get("currency"), str) else None,
        },
        f"invoice.payment_failed:{invoice_id}:{attempt}",
    )


HANDLERS: dict[str, tuple[Reader, Effect]] = {
    "customer.subscription.created": (read_subscription, on_subscription),
    "customer.subscription.updated": (read_subscription, on_subscription),
    "customer.subscription.deleted": (read_subscription, on_subscription),
    "customer.subscription.paused": (read_subscription, on_subscription),
    "customer.subscription.resumed": (read_subscription, on_subscription),
    "invoice.paid": (read_invoice, on_invoice_paid),
    "invoice.payment_failed": (read_invoice, on_invoice_payment_failed),
}


def bound(provider: StripeProvider, reader: Reader, effect: Effect) -> Handler:
    """`reader` then `effect` as an inbox handler: the provider read first, outside any
    transaction; then a Context per event, its change lines returned."""

    def read(obj: dict[str, Any]) -> Facts:
        facts = Facts()
        reader(provider, facts, obj)
        return facts

    def apply(session: Session, event_id: str, obj: dict[str, Any], facts: Any) -> list[str]:
        ctx = Context(session, facts, event_id)
        effect(ctx, obj)
        return ctx.changes

    return Handler(read, apply)


def handlers(provider: StripeProvider, db: Database) -> dict[str, Handler]:
    """The inbox handlers of this room, by event type (refunds: `subscriptions.refunds`; a
    renewal's grants that cannot be stored: `subscriptions.overflow`)."""
    from tollbooth.subscriptions import disputes, overflow, refunds

    table = {**HANDLERS, **refunds.HANDLERS, **disputes.HANDLERS}
    table["invoice.paid"] = (overflow.guarded_renewal(db, read_invoice), on_invoice_paid)
    return {kind: bound(provider, *pair) for kind, pair in table.items()}


Resync = Callable[[Session, str, Facts], list[str]]


def read_for_resync(provider: StripeProvider, stripe_subscription_id: str) -> Facts:
    """The reconcile command's read, outside any transaction."""
    facts = Facts()
    facts.read_subscription(provider, stripe_subscription_id)
    return facts


def resync(session: Session, stripe_subscription_id: str, facts: Facts) -> list[str]:
    """Write one subscription as the provider reported it (the reconcile command)."""
    ctx = Context(session, facts, "reconcile")
    sync_subscription(ctx, stripe_subscription_id)
    session.flush()
    return ctx.changes
