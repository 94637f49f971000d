"""Catalog as code: `tollbooth catalog apply FILE.yaml [--dry-run] [--archive-missing]`.

Apply makes the stored catalog match the file, through the same service functions as the
RPCs, in one transaction (all or nothing). Running it again prints "no changes"; applies run
one at a time (`catalog.repository.lock_for_apply`), so two at once apply the file once.

File format (see example_catalog.yaml next to this module)::

    version: 1                      # optional; only 1 exists
    products:                       # listed in this order unless a position says otherwise
      - key: pro                    # required, stable: the product's unique `key`
        name: Pro                   # required
        description: For teams      # optional
        position: 2                 # optional, >= 1; default: place in this list (1-based)
        metadata: {tier: pro}       # optional string map
        entitlements:               # optional: "feature" or {feature, value, ...}; three kinds:
          - sso                     # boolean: held or not
          - {feature: seats, value: "10"}
          - {feature: calls, metric: api_calls, limit: "10000"}  # metered: a billable
                                    #   metric's code and its limit per billing period
          - {feature: reports, credit_type: api_calls, amount: "5"}  # credit-backed: the
                                    #   credits one action needs (CheckEntitlement)
        stripe_product_id: prod_X   # optional; when absent the stored link is left alone
        prices:
          - lookup_key: pro_monthly # required, unique in the file; identifies the price
            currency: usd           # ISO 4217, any case
            unit_amount: 2900       # integer minor units; YAML floats are refused
            type: recurring         # one_time | recurring; default: recurring iff interval
            interval: month         # recurring only: day | week | month | year
            interval_count: 1       # recurring only; default 1
            nickname: Monthly
            position: 1             # as for products, within the product
            stackable: false
            subscription_group: plan
            metadata: {}
            entitlements: []
            stripe_price_id: price_X  # optional, as stripe_product_id
            credit_grants:
              - credit_type: api_calls
                amount: "10000"     # positive decimal string (quote fractions)
                on_purchase: true   # default true
                on_renewal: true    # default false; recurring prices only
                expires_after_sec: 0  # 0: never; at most 3155760000 (100 years)
                priority: 0         # a 32-bit integer (the contract's int32); lower first

The file is UTF-8; a key written twice in one mapping (which YAML parsers would otherwise keep
the last of silently), or a control character in a value (the RPCs' rule: NUL or any other;
a description or a metadata value may hold tab and line breaks), is refused (exit 1, nothing
written).
Numbers are plain decimal: YAML 1.1 reads 0x10, 017, 0b101, 1_000 and 1:30 as 16, 15, 5, 1000
and 90, so any of them (and 0o17) is refused naming its field, never converted.

What apply does (one line per action, also printed by --dry-run, which writes nothing):

- a product key not in the database is created; an archived product with that key is
  restored; changed product fields are updated in place;
- a lookup_key with no active price is created under its product; changed mutable price
  fields (nickname, position, stackable, subscription_group, metadata, credit grants,
  entitlements, stripe link) are updated in place;
- a price whose currency, unit_amount, type or recurrence changed (or that moves to another
  product) is replaced as Stripe would: the old price is archived and a new one created,
  which takes over the lookup_key;
- with --archive-missing, active products absent from the file, and active prices of the
  file's products absent from it, are archived. Without it nothing is archived except
  replaced prices.

With --environment live (or test), apply writes that environment's database and syncs with its
Stripe account; --sync-stripe with a --database-url naming another environment's database is
refused (exit 2), as its prices would be linked to the wrong Stripe account.

With --sync-stripe, apply then links every active price that has no provider price yet to
the provider (Stripe, or the sandbox when STRIPE_API_KEY is unset): an active provider price
with the same lookup_key, amount, currency and recurrence is linked; otherwise the product
and price are created there (`tollbooth.provider.sync`). The ids are stored. Without it, a
price is synced on its first checkout; a `stripe_product_id` / `stripe_price_id` in the file
always links explicitly. With --dry-run, --sync-stripe is skipped (one line says so).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from tollbooth import commandline, environments
from tollbooth.catalog import plan as planning
from tollbooth.catalog import service, spec
from tollbooth.catalog.plan import Plan
from tollbooth.catalog.spec import CatalogSpec, SpecError
from tollbooth.config import ConfigError, redact_url
from tollbooth.db import Database, normalize_url
from tollbooth.db.migrate import schema_problem
from tollbooth.errors import DomainError
from tollbooth.provider.client import StripeProvider
from tollbooth.stack import operator_settings

__all__ = ["apply", "catalog_commands", "execute", "main", "plan"]


def plan(
    catalog: CatalogSpec,
    products: Sequence[planning.StoredProduct],
    prices: Sequence[planning.StoredPrice],
    *,
    archive_missing: bool = False,
) -> Plan:
    """Pure: the actions that turn the stored catalog into `catalog` (see catalog.plan)."""
    return planning.plan(catalog, products, prices, archive_missing=archive_missing)


def apply(
    db: Database, catalog: CatalogSpec, *, dry_run: bool = False, archive_missing: bool = False
) -> Plan:
    """Plan against the stored catalog and, unless dry_run, carry the plan out atomically;
    applies run one at a time (the same file applied twice at once is applied once)."""
    with db.transaction() as session:
        products, prices = service.catalog_state(session, for_apply=not dry_run)
        result = plan(catalog, products, prices, archive_missing=archive_missing)
        if not dry_run:
            execute(session, result)
    return result


def sync_stripe(db: Database, provider: StripeProvider) -> list[str]:
    """Link or create the provider price of every active price without one (provider calls run
    outside any transaction; each link is written in its own)."""
    from tollbooth.provider.sync import sync_catalog

    return sync_catalog(db, provider)


def execute(session: Session, result: Plan) -> None:
    """Run each action through the catalog service, in plan order."""
    created: dict[str, str] = {}
    for action in result.actions:
        if isinstance(action, planning.CreateProduct):
            created[action.key] = service.create_product(session, action.fields).id
        elif isinstance(action, planning.RestoreProduct):
            service.restore_product(session, action.product_id)
        elif isinstance(action, planning.UpdateProduct):
            service.update_product(session, action.product_id, action.fields, action.paths)
        elif isinstance(action, planning.ArchiveProduct):
            service.archive_product(session, action.product_id)
        elif isinstance(action, planning.CreatePrice):
            product_id = action.product_id or created[action.product_key]
            service.create_price(session, replace(action.fields, product_id=product_id))
        elif isinstance(action, planning.UpdatePrice):
            service.update_price(session, action.price_id, action.fields, action.paths)
        elif isinstance(action, planning.ArchivePrice):
            service.archive_price(session, action.price_id)
        else:  # pragma: no cover - every action type is handled above
            raise TypeError(f"unknown action {action!r}")


@click.group("catalog", help="Manage the catalog from a YAML file.", no_args_is_help=True)
def catalog_commands() -> None:
    pass


@catalog_commands.command("apply", help="make the stored catalog match FILE")
@click.argument("file", metavar="FILE.yaml")
@click.option("--dry-run", is_flag=True, help="print the changes and write nothing")
@click.option(
    "--archive-missing",
    is_flag=True,
    help="archive active products and prices absent from the file",
)
@click.option(
    "--database-url", default=None, help="default: BILLING_DATABASE_URL (tollbooth.config)"
)
@click.option(
    "--sync-stripe",
    "sync",
    is_flag=True,
    help="then link or create the provider product and price of every unsynced price",
)
@click.option(
    "--environment",
    type=click.Choice(environments.NAMES),
    default=None,
    help="the environment whose database and Stripe account to use (default: the configured"
    " one, test)",
)
def apply_command(
    file: str,
    dry_run: bool,
    archive_missing: bool,
    database_url: str | None,
    sync: bool,
    environment: str | None,
) -> int:
    try:
        catalog = spec.load(file)
    except (OSError, SpecError, DomainError) as exc:
        print(f"error: {_message(exc)}", file=sys.stderr)
        return 1
    try:
        # The settings are read only when needed: a database URL given, nothing synced.
        # The running stack's ports and database (`tollbooth.stack`) unless the shell says.
        configured = operator_settings() if sync or environment or not database_url else None
        settings = configured
        if configured is not None and environment is not None:
            settings = environments.view(configured, environment)
        url = database_url or (settings.database_url if settings else "")
    except ConfigError as exc:  # as every command: one line, exit 2 (tollbooth.cli)
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if sync and database_url and configured is not None and settings is not None:
        # Links made with one environment's Stripe account are no use in the other's database.
        for name, other in environments.of(configured).items():
            if other.database_url != settings.database_url and _same(other.database_url, url):
                print(
                    f"error: --database-url names the {name} environment's database, but"
                    f" --sync-stripe would link it with another environment's Stripe account;"
                    f" give --environment {name} instead",
                    file=sys.stderr,
                )
                return 2
    db = Database(url)
    synced: list[str] = []
    try:
        problem = schema_problem(url)  # never plan against a schema this code misreads
        if problem:
            print(
                f"error: database {redact_url(url)}: {problem}; nothing was written",
                file=sys.stderr,
            )
            return 1
        result = apply(db, catalog, dry_run=dry_run, archive_missing=archive_missing)
        if sync and not dry_run:
            assert settings is not None
            try:
                synced = sync_stripe(db, StripeProvider.from_settings(settings))
            except DomainError as exc:
                print(
                    f"error: the catalog was applied, but syncing to the provider failed: "
                    f"{_message(exc)}; run again to retry",
                    file=sys.stderr,
                )
                return 1
    except (DomainError, planning.PlanError) as exc:
        print(f"error: {_message(exc)}; nothing was written", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        detail = exc.args[0] if exc.args else type(exc).__name__
        print(
            f"error: database {redact_url(url)}: {detail}\n"
            "(is it reachable and migrated? `tollbooth migrate`); nothing was written",
            file=sys.stderr,
        )
        return 1
    finally:
        db.dispose()
    if sync and dry_run:
        print("--sync-stripe skipped: a dry run links nothing with the provider")
    for line in synced:
        print(line)
    if not result:
        print("no changes" + (f"; {len(synced)} price(s) synced to the provider" if synced else ""))
        return 0
    for line in result.lines():
        print(line)
    verb = "would apply" if dry_run else "applied"
    print(
        f"{verb} {len(result.actions)} change(s)"
        + (" (dry run: nothing written)" if dry_run else "")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`tollbooth catalog`; argv holds the arguments after it (e.g. apply FILE)."""
    return commandline.run(catalog_commands, argv, prog_name="tollbooth catalog")


def _same(a: str, b: str) -> bool:
    return normalize_url(a) == normalize_url(b)


def _message(exc: Exception) -> str:
    if isinstance(exc, DomainError):
        return f"{exc.message} ({exc.reason})"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
