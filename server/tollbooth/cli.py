"""The command line, one program (`tollbooth`, or `python -m tollbooth.cli`):

`run` (the whole stack, supervised), `migrate`, `serve-grpc`, `serve-sidecar`,
`serve-sandbox`, `serve-notifications`, `gateway-config`, `catalog apply`, `webhooks
list|replay`, `reconcile`, `notifications messages|attempts|resend|receive` and `sandbox` (the
Stripe sandbox on its own, as `python -m tollbooth.sandbox`).

Each command reads the settings once (`tollbooth.config`) and passes them down. A
configuration error prints `configuration error: ...` and exits 2, as does a usage error.
An operator command whose database does not answer, or whose schema is not this code's
alembic head (never migrated, older, or migrated by a newer release), prints one line
`error: database URL: ...` (password hidden) and exits 1 before doing anything; so do
`serve-grpc` and `serve-notifications` (a database that does not answer at their start is
only warned about: they answer UNAVAILABLE until it does). `migrate` refuses only a schema
newer than it knows.
The commands reach the domains through the assembly (`tollbooth.app`) only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from tollbooth import app as assembly
from tollbooth import commandline, environments, logs, metrics, stack, supervisor
from tollbooth.config import ConfigError, Settings, redact_url
from tollbooth.db import migrate as migrations

log = logging.getLogger("tollbooth")

# Kept for callers of the old name: the variable `run` sets for its children.
SUPERVISED_ENV = Settings.SUPERVISED_VARIABLE


class _Refused(Exception):
    """Settings that must not serve; the message is printed and the command exits 2."""


class _Failed(Exception):
    """An operator command that could not do its work; the message is printed, exit 1."""


@contextmanager
def _database(settings: Settings, *, check_schema: bool = True) -> Iterator[None]:
    """An operator command's database that does not answer, or whose schema is not the one
    this code was written for: one line naming it (password hidden), exit 1, never a
    traceback, and nothing done."""
    try:
        if check_schema:
            _schema_at_head(settings.database_url)
        yield
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise _Failed(
            f"error: database {redact_url(settings.database_url)}: "
            f"{(detail[0] if detail else type(exc).__name__)[:300]}\n"
            "(is it reachable and migrated? `tollbooth migrate`)"
        ) from None


def _schema_at_head(url: str, environment: str = "") -> None:
    """_Failed when the database's schema is not this code's alembic head (SQLAlchemyError
    when it does not answer)."""
    problem = migrations.schema_problem(url)
    if problem:
        name = f"{environment} database" if environment else "database"
        raise _Failed(f"error: {name} {redact_url(url)}: {problem}")


def _serving_schema(settings: Settings, environments_served: dict[str, Settings]) -> None:
    """A serving command refuses a database whose schema is not its own (one line, exit 1); one
    that does not answer yet is warned about and served (UNAVAILABLE until it answers)."""
    for name, view in environments_served.items():
        try:
            _schema_at_head(view.database_url, name)
        except SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            log.warning(
                f"{name} database {redact_url(view.database_url)} does not answer; its schema"
                f" is not checked: {(detail[0] if detail else type(exc).__name__)[:300]}",
                extra={"event": "schema_unchecked"},
            )


# The serving processes log to stdout (what `run` shows); the others to stderr, beside their
# reports on stdout.
SERVING = ("run", "serve-grpc", "serve-sidecar", "serve-sandbox", "serve-notifications")


def _logging(name: str, settings: Settings) -> None:
    logs.setup(name, settings.log_level, stream="stdout" if name in SERVING else "stderr")


def load(
    name: str,
    *,
    serving: bool = False,
    operator: bool = False,
    check: Callable[[Settings], object] | None = None,
    environment: str | None = None,
) -> Settings:
    """The settings of command `name`, read once; serving commands refuse exposure; operator
    commands find the running stack's ports in the data directory (`tollbooth.stack`).

    Every setting is checked (and `check` run) before logging is set up, so a bad value stops
    the command with one plain line naming the variable, never a JSON record or a traceback.
    An `environment` (test or live) gives that environment's settings (`tollbooth.environments`).
    """
    try:
        settings = stack.operator_settings() if operator else Settings.from_env()
        if check is not None:
            check(settings)
        if environment is not None:
            settings = environments.view(settings, environment)
    except ConfigError as exc:
        raise _Refused(f"configuration error: {exc}") from exc
    _logging(name, settings)
    if serving:
        refusal = settings.exposure_error()
        if refusal:
            raise _Refused(f"configuration error: {refusal}")
    return settings


def announce(settings: Settings) -> None:
    """What every serving command prints first: the warnings about generated credentials."""
    if settings.supervised:
        return
    for line in settings.warnings():
        log.warning(line, extra={"event": "generated_credential"})


# The environment an operator command acts on (its database, its Stripe key).
in_environment = click.option(
    "--environment",
    type=click.Choice(environments.NAMES),
    default=None,
    help="the environment to act on (default: test, the configured one)",
)


@click.group(
    name="tollbooth",
    help="Tollbooth, the billing service: run it, migrate it, manage its catalog and inbox.",
    no_args_is_help=True,
)
def app() -> None:
    pass


def _runnable(settings: Settings) -> None:
    """What `run` needs beyond the values themselves: the sandbox's settings (faults, URLs)
    and a run directory it can create."""
    if settings.sandbox:
        assembly.sandbox_config(settings)
    run_dir = settings.run_dir or settings.data_dir / "run"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        name = "BILLING_RUN_DIR" if settings.run_dir else "BILLING_DATA_DIR"
        raise ConfigError(
            f"{name}: cannot create {str(run_dir)!r} ({exc.strerror or exc})"
        ) from None


@app.command("run", help="migrate, then run gRPC server(s), webhook sidecar and Envoy")
def run_command() -> int:
    settings = load("run", serving=True, check=_runnable)
    return supervisor.run(settings, assembly.sandbox_config)


@app.command("migrate", help="apply database migrations (every environment's database)")
def migrate_command() -> int:
    settings = load("migrate")
    try:
        with _database(settings, check_schema=False):
            supervisor.migrate(settings)
    except migrations.SchemaMismatch as exc:
        raise _Failed(f"error: {exc}") from None
    return 0


@app.command("serve-grpc", help="run the billing gRPC server only")
def serve_grpc_command() -> int:
    settings = load("serve-grpc", serving=True)
    announce(settings)
    _serving_schema(settings, environments.of(settings))
    try:
        assembly.serve(assembly.build_deps(settings))
    except RuntimeError as exc:  # a port is taken (grpcio's SO_REUSEPORT is off)
        log.error(f"cannot serve: {exc}", extra={"event": "start_failed"})
        return 1
    return 0


@app.command("serve-sidecar", help="run the webhook sidecar only")
def serve_sidecar_command() -> int:
    settings = load("serve-sidecar", serving=True)
    announce(settings)
    problem = assembly.sidecar_refusal(settings)
    if problem:  # a configuration refusal first, as `configuration error: ...`
        print(problem, file=sys.stderr)
        return 2
    # Its console and readiness use the configured database (webhook events themselves go to
    # the server over gRPC, each environment's to its own): that one schema is checked.
    _serving_schema(settings, {environments.name_of(settings): settings})
    try:
        assembly.serve_sidecar(settings)
    except RuntimeError as exc:  # a configuration refusal, as `configuration error: ...`
        print(str(exc), file=sys.stderr)
        return 2
    return 0


@app.command("serve-sandbox", help="run the Stripe-compatible sandbox only")
def serve_sandbox_command() -> int:
    settings = load("serve-sandbox")
    if not settings.sandbox:
        print("STRIPE_API_KEY is set: the sandbox is for running without Stripe", file=sys.stderr)
        return 2
    announce(settings)
    try:
        config = assembly.sandbox_config(settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        metrics.serve(settings.metrics_port)
    except RuntimeError as exc:
        log.error(f"cannot serve: {exc}", extra={"event": "start_failed"})
        return 1
    assembly.serve_sandbox(config)
    return 0


@app.command(
    "serve-notifications", help="deliver outbound notifications to the registered endpoints"
)
@in_environment
def serve_notifications_command(environment: str | None) -> int:
    settings = load("serve-notifications", environment=environment)
    announce(settings)
    _serving_schema(settings, {environment or environments.name_of(settings): settings})
    assembly.serve_notifications(settings)
    return 0


@app.command("gateway-config", help="render envoy.yaml for this environment")
@click.option(
    "--out",
    default=None,
    help="folder for envoy.yaml  [default: BILLING_RUN_DIR, else run/ in the data directory, "
    "where make run writes it]",
)
def gateway_config_command(out: str | None) -> int:
    from tollbooth.gateway import render

    settings = load("gateway-config")
    print(render(settings, Path(out) if out else settings.run_dir or settings.data_dir / "run"))
    return 0


app.add_command(assembly.catalog_commands, "catalog")
app.add_command(assembly.sandbox_alone, "sandbox")


# -- operator commands: the webhook inbox and the reconciliation with Stripe ----------------


def _print_report(report, verb: str) -> int:  # type: ignore[no-untyped-def]
    for line in report.changed:
        print(line, flush=True)
    for line in report.failed:
        print(f"FAILED {line}", file=sys.stderr, flush=True)
    for line in report.left_alone:
        print(f"LEFT ALONE {line}", file=sys.stderr, flush=True)
    alone = f", {len(report.left_alone)} left alone" if report.left_alone else ""
    print(
        f"{verb} {report.seen}: {len(report.changed)} change(s), {len(report.failed)} failure(s)"
        f"{alone}",
        flush=True,
    )
    return 1 if report.failed else 0


@app.group(
    "webhooks", help="the webhook inbox: `webhooks list`, `webhooks replay`", no_args_is_help=True
)
def webhooks_commands() -> None:
    pass


@webhooks_commands.command(
    "replay", help="re-apply stored events (harmless when they were applied already)"
)
@click.option(
    "--since",
    metavar="T",
    callback=lambda _ctx, _param, value: _since(value),
    help="events received at or after T (ISO 8601, e.g. 2025-01-31T09:00:00Z; a time without"
    " an offset is UTC; not in the future)",
)
@click.option("--event-id", metavar="E", help="one event")
@click.option("--failed", is_flag=True, help="every event whose status is failed")
@in_environment
def webhooks_replay_command(
    since: dt.datetime | None, event_id: str | None, failed: bool, environment: str | None
) -> int:
    """Re-apply stored events (all, those received since T, one, or the failed ones);
    harmless when applied."""
    if sum(x is not None and x is not False for x in (since, event_id, failed or None)) > 1:
        raise click.UsageError("--since, --event-id and --failed exclude each other")
    if event_id is not None and not event_id.strip():
        raise click.UsageError("--event-id must name an event (evt_...)")
    settings = load("webhooks", operator=True, environment=environment)
    with _database(settings):
        report = assembly.replay(settings, since=since, event_id=event_id, failed_only=failed)
    if event_id and report.seen == 0:
        print(f"no stored event {event_id[:100]!r}", file=sys.stderr)
        return 1
    return _print_report(report, "replayed")


@webhooks_commands.command("list", help="stored events, newest first, with their errors")
@click.option(
    "--status",
    type=click.Choice(["pending", "applied", "ignored", "failed"]),
    help="only events of this status",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@in_environment
def webhooks_list_command(status: str | None, limit: int, environment: str | None) -> int:
    """Stored events: id, type, status, attempts, next attempt and last error, one a line."""
    settings = load("webhooks", operator=True, environment=environment)
    with _database(settings):
        rows = assembly.list_events(settings, status, limit)
    for row in rows:
        # One event a line: an error's own line breaks and tabs become single spaces.
        error = " ".join(str(row["last_error"] or "").split())
        print(
            f"{row['event_id']}\t{row['type']}\t{row['status']}\tattempts={row['attempts']}"
            f"\tnext={row['next_attempt_at'] or '-'}\t{error}",
            flush=True,
        )
    if not rows:  # on stderr: stdout stays one event a line, for scripts
        print("no stored events" + (f" of status {status}" if status else ""), file=sys.stderr)
    return 0


@app.command(
    "reconcile",
    help="compare every subscription with Stripe, repair drift, complete the checkout and"
    " payment intents a crash left pending, delete the Stripe customers a failed DeleteCustomer"
    " left, print changes",
)
@in_environment
def reconcile_command(environment: str | None) -> int:
    """Compare every subscription with Stripe, repair drift, sweep the intents left pending,
    print what changed (and, apart, what it must leave to an operator)."""
    settings = load("reconcile", operator=True, environment=environment)
    with _database(settings):
        report = assembly.reconcile(settings)
    return _print_report(report, "reconciled")


# -- operator commands: outbound notifications -------------------------------------------------


def _since(text: str | None) -> dt.datetime | None:
    """A `--since` time: ISO 8601, UTC when it names no offset, never in the future (nothing
    was stored after now: such a time selected nothing and looked like a successful run)."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"not an ISO 8601 time: {text[:40]!r} (e.g. 2025-01-31T09:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # documented: a time without an offset is UTC
    try:
        when = when.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise click.BadParameter(f"{text[:40]!r} is out of range in UTC") from None
    now = dt.datetime.now(dt.UTC)
    if when > now:
        raise click.BadParameter(
            f"{text[:40]!r} is in the future (now is {now:%Y-%m-%dT%H:%M:%SZ}): nothing was"
            " stored after it"
        )
    return when


def _domain_error(exc: Exception) -> int:
    print(f"{getattr(exc, 'reason', 'ERROR')}: {exc}", file=sys.stderr)
    return 1


@app.group(
    "notifications",
    help="outbound notifications: `notifications messages|attempts|resend|receive`",
    no_args_is_help=True,
)
def notifications_commands() -> None:
    pass


@notifications_commands.command("messages", help="an endpoint's messages, newest first")
@click.argument("endpoint_id")
@click.option("--state", type=click.Choice(["pending", "delivered", "failed"]))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100))
@in_environment
def notifications_messages_command(
    endpoint_id: str, state: str | None, limit: int, environment: str | None
) -> int:
    from tollbooth.errors import DomainError

    settings = load("notifications", operator=True, environment=environment)
    try:
        with _database(settings):
            rows = assembly.notifications.list_messages(settings, endpoint_id, state, limit)
    except DomainError as exc:
        return _domain_error(exc)
    for r in rows:
        print(json.dumps(r), flush=True)
    return 0


@notifications_commands.command("attempts", help="an endpoint's delivery attempts, newest first")
@click.argument("endpoint_id")
@click.option("--notification-id", default="", help="only this notification's attempts")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100))
@in_environment
def notifications_attempts_command(
    endpoint_id: str, notification_id: str, limit: int, environment: str | None
) -> int:
    from tollbooth.errors import DomainError

    settings = load("notifications", operator=True, environment=environment)
    try:
        with _database(settings):
            rows = assembly.notifications.list_attempts(
                settings, endpoint_id, notification_id, limit
            )
    except DomainError as exc:
        return _domain_error(exc)
    for r in rows:
        print(json.dumps(r), flush=True)
    return 0


@notifications_commands.command("resend", help="send one message, or all since T, again")
@click.argument("endpoint_id")
@click.option("--notification-id", help="one notification")
@click.option(
    "--since",
    metavar="T",
    callback=lambda _ctx, _param, value: _since(value),
    help="every message written at or after T (ISO 8601; a time without an offset is UTC;"
    " not in the future)",
)
@in_environment
def notifications_resend_command(
    endpoint_id: str,
    notification_id: str | None,
    since: dt.datetime | None,
    environment: str | None,
) -> int:
    from tollbooth.errors import DomainError

    if (notification_id is None) == (since is None):
        raise click.UsageError("give exactly one of --notification-id and --since")
    settings = load("notifications", operator=True, environment=environment)
    try:
        with _database(settings):
            queued = assembly.notifications.resend(settings, endpoint_id, notification_id, since)
    except DomainError as exc:
        return _domain_error(exc)
    print(f"queued {queued} message(s) again", flush=True)
    return 0


@notifications_commands.command(
    "receive",
    help="a receiver on this machine (like `stripe listen`): verifies each POST's Standard"
    " Webhooks signature with the endpoint's secret and prints one JSON line per valid delivery"
    " (webhook_id, attempt, status, timestamp, body); Ctrl-C or SIGTERM stops it",
)
@click.option("--port", type=click.IntRange(0, 65535), required=True, help="0: any free port")
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option(
    "--secret",
    envvar="BILLING_RECEIVER_SECRET",
    default="",
    metavar="WHSEC",
    help="the endpoint's whsec_... secret; better from BILLING_RECEIVER_SECRET (not shown by ps)",
)
@click.option(
    "--fail-first",
    type=click.IntRange(0, None),
    default=0,
    show_default=True,
    help="answer 500 to the first N valid deliveries (to watch the retries), then 204",
)
def notifications_receive_command(secret: str, host: str, port: int, fail_first: int) -> int:
    logs.setup("receive", "INFO", stream="stderr")  # stdout is for the deliveries' lines
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    return assembly.receive_notifications(secret, host, port, fail_first)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return commandline.run(app, argv, prog_name="tollbooth")
    except _Refused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except _Failed as exc:
        print(str(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
