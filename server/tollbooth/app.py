"""The assembly: the one module that imports every room and builds the programs from them.

Plumbing (`rpc/`, `db/`, `auth/`, `deps`, paging, config, errors, ids, idempotency, gateway)
imports no domain, and a domain never imports one above it. Whatever must cross those lines
is wired here instead:

- the servicers of every room, each handed what it needs besides `Deps`: the payment provider
  (checkout), the webhook handlers (the inbox), the purchase hints (the catalog);
- the webhook handlers: each room registers the effects of the provider's events on its own
  state (checkout sessions: `checkout.fulfilment`; subscriptions, purchases, invoices and the
  credit grants they bring: `subscriptions.effects`; payment intents: `payments.effects`);
- the gRPC server (`serve-grpc`, `run`, tests/devstack.py), the webhook sidecar, the sandbox,
  and the operator commands (`webhooks replay`, `reconcile`, `catalog apply`, `sandbox`) the
  command line (`tollbooth.cli`) runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health
from starlette.routing import Mount

from tollbooth import metrics, tracing
from tollbooth.accounts import customer_sync
from tollbooth.accounts.customer_servicer import CustomerServicer
from tollbooth.accounts.servicer import AccountServicer
from tollbooth.catalog.as_code import catalog_commands
from tollbooth.catalog.servicer import CatalogServicer
from tollbooth.checkout import fulfilment
from tollbooth.checkout import intents as checkout_intents
from tollbooth.checkout.servicer import CheckoutServicer
from tollbooth.config import ConfigError, Settings
from tollbooth.console import inbox as console_inbox
from tollbooth.console import pages as console_pages
from tollbooth.console.session import SignOuts
from tollbooth.console.throttle import SigninThrottle
from tollbooth.credit.servicer import CreditServicer
from tollbooth.credit.sweeper import ExpirySweeper
from tollbooth.db import Database
from tollbooth.deps import Deps
from tollbooth.entitlements.servicer import EntitlementServicer
from tollbooth.notifications import delivery as notification_delivery
from tollbooth.notifications import operator as notification_operator
from tollbooth.notifications import receiver as notification_receiver
from tollbooth.notifications.servicer import NotificationServicer
from tollbooth.payments import closing as payment_closing
from tollbooth.payments import effects as payment_effects
from tollbooth.payments import intents as payment_intents
from tollbooth.payments.servicer import PaymentServicer
from tollbooth.provider import reconcile as reconciling
from tollbooth.provider.client import StripeProvider
from tollbooth.rpc import routing
from tollbooth.rpc import server as rpc_server
from tollbooth.rpc.ratelimit import open_storage
from tollbooth.rpc.servicer import Servicer
from tollbooth.sandbox.command import sandbox_alone
from tollbooth.subscriptions import effects as subscription_effects
from tollbooth.subscriptions import repository as subscriptions
from tollbooth.subscriptions.service import purchase_hints, status_of_accounts
from tollbooth.token.servicer import TokenServicer
from tollbooth.usage import batch_edge
from tollbooth.usage.servicer import UsageServicer
from tollbooth.webhooks import repository as webhook_events
from tollbooth.webhooks import sidecar
from tollbooth.webhooks.dispatch import Registry
from tollbooth.webhooks.replay import Report, replay_events
from tollbooth.webhooks.service import Inbox
from tollbooth.webhooks.servicer import StripeEventServicer, WebhookServicer
from tollbooth.webhooks.worker import InboxWorker

if TYPE_CHECKING:
    from tollbooth.sandbox.config import SandboxConfig

__all__ = [
    "SERVICERS",
    "Deps",
    "build_deps",
    "build_server",
    "notifications",
    "serve_notifications",
    "receive_notifications",
    "inbox",
    "inbox_worker",
    "catalog_commands",
    "catalog_main",
    "reconcile",
    "replay",
    "sandbox_alone",
    "sandbox_config",
    "serve",
    "serve_sandbox",
    "serve_sidecar",
    "servicers",
    "sidecar_refusal",
    "start_sidecar",
    "unbuilt_methods",
    "webhook_handlers",
]

# Every contract service the server answers, one servicer class each.
SERVICERS: tuple[type[Servicer], ...] = (
    TokenServicer,
    CatalogServicer,
    CheckoutServicer,
    PaymentServicer,
    CreditServicer,
    UsageServicer,
    AccountServicer,
    CustomerServicer,
    WebhookServicer,
    StripeEventServicer,
    EntitlementServicer,
    NotificationServicer,
)


def unbuilt_methods() -> list[str]:
    """Full names of the RPCs that answer UNIMPLEMENTED (the README lists them)."""
    return rpc_server.unbuilt_methods(SERVICERS)


# -- the server -------------------------------------------------------------------------------


def build_deps(settings: Settings, db: Database | None = None) -> Deps:
    return Deps.build(settings, db)


def build_provider(settings: Settings) -> StripeProvider:
    return StripeProvider.from_settings(settings)


def webhook_handlers(provider: StripeProvider, db: Database) -> Registry:
    """The inbox's handlers: each room's effects of the provider's events, by event type."""
    registry = Registry()
    for handlers in (
        fulfilment.handlers(provider, db),
        subscription_effects.handlers(provider, db),
        payment_effects.handlers(provider, db),
    ):
        for event_type, handler in handlers.items():
            registry.register(event_type, handler)
    return registry


def live_key(settings: Settings) -> bool:
    """Whether the configured Stripe key is a live-mode one (events must match it)."""
    return settings.stripe_api_key.startswith(("sk_live_", "rk_live_"))


def inbox(deps: Deps, provider: StripeProvider | None = None) -> Inbox:
    """The webhook inbox with every room's handlers."""
    provider = provider or build_provider(deps.settings)
    return Inbox(
        deps.db,
        webhook_handlers(provider, deps.db),
        livemode=live_key(deps.settings),
        retry_first_sec=deps.settings.inbox_retry_first_ms / 1000,
    )


def inbox_worker(deps: Deps, interval_sec: float = 2.0) -> InboxWorker:
    """The worker that applies due events (deferred or failed); `.start()` runs it."""
    return InboxWorker(inbox(deps), interval_sec)


def servicers(deps: Deps, provider: StripeProvider | None = None) -> list[Servicer]:
    """One instance of each of SERVICERS, wired."""
    provider = provider or build_provider(deps.settings)
    the_inbox = inbox(deps, provider)
    built: list[Servicer] = [
        TokenServicer(deps),
        CatalogServicer(deps, hints=purchase_hints, lookup=provider.linkable),
        CheckoutServicer(deps, provider),
        PaymentServicer(deps, provider),
        CreditServicer(deps),
        UsageServicer(deps),
        AccountServicer(deps, provider),
        CustomerServicer(
            deps,
            provider,
            subscriptions=status_of_accounts,
            on_deleted=lambda account_id: payment_closing.cancel_open(
                deps.db, provider, account_id
            ),
        ),
        WebhookServicer(deps, the_inbox),
        StripeEventServicer(deps, the_inbox),
        EntitlementServicer(deps),
        NotificationServicer(deps),
    ]
    assert [type(s) for s in built] == list(SERVICERS)
    return built


def served(deps: Deps) -> list[Servicer | routing.EnvironmentRouter]:
    """Every environment's servicers (each with its own deps and provider), routed by the
    environment of the caller's credential (`tollbooth.rpc.routing`)."""
    return routing.route({name: servicers(env) for name, env in deps.environments.items()})


def build_server(deps: Deps, address: str) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started-ready server of every room, for every environment `deps` serves, bound to
    `address` (port 0 picks one)."""
    return rpc_server.build_server(deps, address, served(deps))


def serve(deps: Deps) -> None:
    """`serve-grpc`: serve until SIGTERM or SIGINT, with metrics on BILLING_METRICS_PORT."""

    def inbox() -> dict[str, int]:
        with deps.db.transaction(readonly=True) as session:
            return webhook_events.count_by_status(session)

    metrics.register_counts(
        "tollbooth_webhook_inbox_events", "stored Stripe events, by status", "status", inbox
    )
    metrics.serve(deps.settings.metrics_port)
    tracing.setup(deps.settings.otel_endpoint, "tollbooth-grpc")
    # Every replica, every environment (each on its own database): SKIP LOCKED shares the work.
    workers: list[InboxWorker | ExpirySweeper] = [
        inbox_worker(env).start() for env in deps.environments.values()
    ]
    # Expiries nobody reads are recorded (and their depletion notified) within seconds.
    workers += [ExpirySweeper(env.db).start() for env in deps.environments.values()]
    try:
        rpc_server.serve(deps, served(deps))
    finally:
        for worker in workers:
            worker.stop()


# -- the sidecar and the sandbox --------------------------------------------------------------


def console(settings: Settings) -> tuple[Mount, Callable[[], None]]:
    """The operator console (mounted at /console on the sidecar) and what closes it: its own
    database pool, and replay through the inbox (`Inbox.replay`, as `webhooks replay`)."""
    db = Database(settings.database_url)
    box = Inbox(db, webhook_handlers(build_provider(settings), db), livemode=live_key(settings))

    def replay_one(event_id: str, seen: str | None) -> console_inbox.Outcome:
        outcome = box.replay(event_id, seen=seen)
        return console_inbox.Outcome(outcome.status, list(outcome.changes), outcome.error)

    storage = open_storage(settings.rate_limit_storage, db)
    throttle = SigninThrottle.from_rates(
        storage, settings.rate_limit_console_signin, settings.rate_limit_console_signin_all
    )
    mount = console_pages.create(
        settings.operator_key,
        db,
        replay_one,
        https_only=settings.console_cookie_secure,
        signin_throttle=throttle,
        sign_outs=SignOuts(storage),
    )
    return mount, db.dispose


# `serve-sidecar`: a configuration that cannot serve is refused before the schema is checked.
sidecar_refusal = sidecar.refusal


def start_sidecar(
    settings: Settings, port: int, target: str | None = None
) -> sidecar.RunningSidecar:
    """The sidecar with the console, serving in a thread (tests, the in-process stack)."""
    mount, close = console(settings)
    extra = [mount, *batch_edge.routes(settings)]
    return sidecar.start_in_thread(settings, port, target, extra=extra, on_close=[close])


def serve_sidecar(settings: Settings) -> None:
    """`serve-sidecar`: the webhook path, health, API docs, the operator console and the
    per-event pass over `POST /mgt/v1/events:batch` (tollbooth.usage.batch_edge)."""
    mount, close = console(settings)
    sidecar.serve(settings, extra=[mount, *batch_edge.routes(settings)], on_close=[close])


def sandbox_config(settings: Settings) -> SandboxConfig:
    """The sandbox of the stack (`serve-sandbox`, `run`); ConfigError when its settings are
    unusable."""
    from tollbooth.sandbox.config import SandboxConfig

    try:
        return SandboxConfig.for_stack(settings)
    except ValueError as exc:
        raise ConfigError(f"sandbox: {exc}") from exc


def serve_sandbox(config: SandboxConfig) -> None:
    from tollbooth.sandbox.app import serve as serve_the_sandbox

    serve_the_sandbox(config)


# -- notification delivery and its operator commands --------------------------------------

# `serve-notifications` (a supervised child of `run`, or alone in production).
serve_notifications = notification_delivery.serve
# `notifications messages|attempts|resend`: inspection and replay from the command line.
notifications = notification_operator
# `notifications receive`: a receiver on the developer's machine that verifies and prints.
receive_notifications = notification_receiver.run


# -- operator commands ------------------------------------------------------------------------


def replay(
    settings: Settings,
    *,
    since: dt.datetime | None,
    event_id: str | None,
    failed_only: bool = False,
) -> Report:
    """`webhooks replay`: re-apply stored events (harmless when they were applied)."""
    db, provider = Database(settings.database_url), build_provider(settings)
    try:
        box = Inbox(db, webhook_handlers(provider, db), livemode=live_key(settings))
        return replay_events(box, since=since, event_id=event_id, failed_only=failed_only)
    finally:
        db.dispose()


def list_events(settings: Settings, status: str | None, limit: int) -> list[dict[str, object]]:
    """`webhooks list`: stored events, newest first, optionally of one status."""
    db = Database(settings.database_url)
    try:
        with db.transaction(readonly=True) as session:
            rows = webhook_events.list_events(session, status=status, after=None, limit=limit)
            return [
                {
                    "event_id": r.event_id,
                    "type": r.type,
                    "status": r.status,
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                    "next_attempt_at": r.next_attempt_at.isoformat() if r.next_attempt_at else None,
                }
                for r in rows
            ]
    finally:
        db.dispose()


def reconcile(settings: Settings) -> Report:
    """`reconcile`: compare every subscription with the provider and repair drift; complete
    the checkout and payment intents left pending (`checkout.intents.sweep_pending`,
    `payments.intents.sweep_pending`); delete the provider customers a failed DeleteCustomer
    left alive (`accounts.customer_sync.sweep_deletes`) and cancel the payment intents it left
    open (`payments.closing.sweep_deleted`); update the provider customers a failed sync after
    UpdateAccount left behind (`accounts.customer_sync.sweep_updates`)."""
    db, provider = Database(settings.database_url), build_provider(settings)
    try:
        report = reconciling.reconcile(
            db,
            provider,
            known=subscriptions.all_subscription_ids,
            read=lambda sub_id: subscription_effects.read_for_resync(provider, sub_id),
            resync=subscription_effects.resync,
        )
        changes, failures, left_alone = checkout_intents.sweep_pending(db, provider)
        report.changed.extend(changes)
        report.failed.extend(failures)
        report.left_alone.extend(left_alone)
        swept = payment_intents.sweep_pending(db, provider)
        report.changed.extend(swept.changed)
        report.failed.extend(swept.failed)
        report.left_alone.extend(swept.left_alone)
        deleted, not_deleted = customer_sync.sweep_deletes(db, provider)
        report.changed.extend(deleted)
        report.failed.extend(not_deleted)
        closed = payment_closing.sweep_deleted(db, provider)
        report.changed.extend(closed.changed)
        report.failed.extend(closed.failed)
        updated, not_updated = customer_sync.sweep_updates(db, provider)
        report.changed.extend(updated)
        report.failed.extend(not_updated)
        return report
    finally:
        db.dispose()


def catalog_main(argv: Sequence[str]) -> int:
    """`catalog ...`: catalog as code (apply a YAML file, sync it to the provider)."""
    from tollbooth.catalog.as_code import main

    return int(main(argv) or 0)


# The command groups of the rooms, which `tollbooth.cli` adds to the one program:
# `catalog_commands` (catalog as code) and `sandbox_alone` (the Stripe sandbox on its own).
