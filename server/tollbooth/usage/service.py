"""Usage rules: ingest (accepted, duplicate or rejected per event), metrics, GetUsage.

Services flush, never commit: the servicer owns the transaction, so an event is acknowledged
only after the transaction that holds it committed.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy.orm import Session

from tollbooth import errors, paging
from tollbooth.accounts import service as accounts
from tollbooth.amounts import CREDIT_TYPE_RE, clean_credit_amount
from tollbooth.auth.caller import Caller
from tollbooth.credit import burns as credit_burns
from tollbooth.db import Database
from tollbooth.db.models import BillableMetric
from tollbooth.db.types import utcnow
from tollbooth.errors import DomainError, Kind
from tollbooth.paging import Keyset, Page
from tollbooth.usage import aggregate, burn, events, repository
from tollbooth.usage.aggregate import Aggregation, Filter, MetricSpec
from tollbooth.usage.events import ACCEPTED, DUPLICATE, REJECTED, Candidate, Outcome
from tollbooth.usage.sqlite_query import SqliteUsageQuery

ARCHIVED = "ACCOUNT_ARCHIVED"


class AccountCache:
    """Account id of every ref (id or principal id) already resolved by this server.

    Safe to keep: a principal's account never changes and accounts are never deleted. Only hits
    are kept, so an account created later is found on its first event.
    """

    def __init__(self, max_size: int = 100_000) -> None:
        self._known: dict[str, str] = {}
        self._max = max_size
        self._lock = threading.Lock()

    def resolve(self, session: Session, refs: set[str]) -> dict[str, str]:
        known = self._known
        found = {r: known[r] for r in refs if r in known}
        missing = refs - found.keys()
        if missing:
            fresh = repository.accounts_by_ref(session, missing)
            found.update(fresh)
            with self._lock:
                if len(known) + len(fresh) > self._max:
                    known.clear()
                known.update(fresh)
        return found


def ingest(
    session: Session, checked: Sequence[Candidate | Outcome], cache: AccountCache
) -> list[Outcome]:
    """Store every good event whose (account, unique id) is new; one Outcome per event, in
    order.

    `checked` holds each event of the batch as checked without a database (usage.convert):
    a candidate, or the outcome that already refused it. Rejections are per event: nothing
    here raises for one bad event. A unique id is unique per account (the key is the resolved
    account id and the id, so an id and an alias of one account name one key): within a batch
    the first event of a key counts and later ones are duplicates; the same id for another
    account is another event.
    """
    received = utcnow()
    outcomes: list[Outcome | None] = [None] * len(checked)
    candidates: list[Candidate] = []
    for i, item in enumerate(checked):
        if isinstance(item, Candidate):
            candidates.append(item)
        else:
            outcomes[i] = item

    accounts_found = cache.resolve(session, {c.account_ref for c in candidates})
    fresh: dict[repository.Key, Candidate] = {}
    repeats: list[Candidate] = []  # a key seen earlier in this batch
    rows: list[repository.Row] = []
    for c in candidates:
        account_id = accounts_found.get(c.account_ref)
        if account_id is None:
            outcomes[c.index] = Outcome(
                c.unique_id,
                REJECTED,
                "ACCOUNT_UNKNOWN",
                "account names no billing account (id or principal id)",
                "account",
            )
            continue
        c.account_id = account_id
        c.unique_id = events.final_unique_id(c)
        key = (account_id, c.unique_id)
        if key in fresh:
            repeats.append(c)
            continue
        fresh[key] = c
        rows.append((c.unique_id, account_id, c.event_name, c.seconds, c.micros, c.properties_json))

    # One statement: the events of accounts not archived inserted, the archived ones named.
    inserted, burning, archived = repository.insert_events_and_read_burns(session, rows, received)
    # The events this transaction stored: what any per-event effect (the credit burn of a metric)
    # must act on, here, in this same session, before the commit. Duplicates are never in it.
    accepted = [c for key, c in fresh.items() if key in inserted]
    if burning:
        burn_credits(session, accepted, burning)
    held: list[Candidate] = []  # events of archived accounts: duplicates or rejected
    for c in (*fresh.values(), *repeats):
        key = (c.account_id, c.unique_id)
        if c.account_id in archived:
            held.append(c)
        elif key in inserted and fresh[key] is c:
            outcomes[c.index] = Outcome(c.unique_id, ACCEPTED)
        else:
            outcomes[c.index] = Outcome(c.unique_id, DUPLICATE)
    if held:
        _archived_outcomes(session, held, outcomes)
    return outcomes  # type: ignore[return-value]  # every slot is filled above


def _archived_outcomes(
    session: Session, held: Sequence[Candidate], outcomes: list[Outcome | None]
) -> None:
    """An archived account records no usage (nothing is stored): its event is rejected with
    ACCOUNT_ARCHIVED, unless that account stored it before the archive (a sender's retry of an
    event acknowledged then: a duplicate, as it always was)."""
    known = repository.stored_among(session, ((c.account_id, c.unique_id) for c in held))
    for c in held:
        if (c.account_id, c.unique_id) in known:
            outcomes[c.index] = Outcome(c.unique_id, DUPLICATE)
        else:
            outcomes[c.index] = Outcome(
                c.unique_id, REJECTED, ARCHIVED, f"account {c.account_id} is archived", "account"
            )


def burn_credits(
    session: Session, stored: Sequence[Candidate], burning: list[repository.MetricRow]
) -> None:
    """The credit burn of the `burning` metrics for the events this transaction stored."""
    metrics = [m for r in burning if (m := burn.metric(*r)) is not None]  # count or sum
    burns = burn.plan(metrics, stored)
    if burns:
        credit_burns.burn_many(session, burns, utcnow)


def rejection(outcome: Outcome) -> DomainError:
    """A rejected single event (IngestEvent) as the error its caller receives: an archived
    account is a failed precondition, as for grants, tokens and checkouts."""
    kind = Kind.FAILED_PRECONDITION if outcome.reason == ARCHIVED else Kind.INVALID_ARGUMENT
    return DomainError(kind, outcome.reason, outcome.message, field=outcome.field or None)


# ---------------------------------------------------------------------------------------------
# Metrics

CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
NAME_LIMIT = 200
PROPERTY_LIMIT = 200
MAX_FILTERS = 20
MAX_FILTER_VALUES = 100
MUTABLE = (
    "name",
    "description",
    "event_name",
    "aggregation",
    "property",
    "filters",
    "credit_burn",
)
OUTPUT_ONLY = ("create_time", "update_time")


@dataclass(frozen=True)
class MetricFields:
    code: str = ""
    name: str = ""
    description: str = ""
    event_name: str = ""
    aggregation: str = ""
    property: str = ""
    filters: tuple[Filter, ...] = ()
    credit_type: str = ""
    credit_rate: str = ""


def _field_error(field: str, problem: str) -> DomainError:
    return errors.invalid(f"{field} {problem}", reason="FIELD_INVALID", field=field)


def clean_metric(fields: MetricFields) -> MetricFields:
    """The fields as stored, or the first problem with them."""
    if not fields.code:
        raise errors.required("metric.code")
    if not CODE.fullmatch(fields.code):
        raise _field_error(
            "metric.code", "must be letters, digits, '_', '-' or '.', at most 100 characters"
        )
    name = fields.name.strip() or fields.code
    if len(name) > NAME_LIMIT:
        raise _field_error("metric.name", f"is longer than {NAME_LIMIT} characters")
    if not fields.event_name.strip():
        raise errors.required("metric.event_name")
    if len(fields.event_name) > events.EVENT_NAME_LIMIT:
        raise _field_error("metric.event_name", f"is longer than {events.EVENT_NAME_LIMIT}")
    if not fields.aggregation:
        raise errors.required("metric.aggregation")
    try:
        agg = Aggregation(fields.aggregation)
    except ValueError:
        raise _field_error("metric.aggregation", "is not a known aggregation") from None
    prop = fields.property
    if agg in aggregate.NEEDS_PROPERTY and not prop:
        raise errors.required("metric.property")
    if agg is Aggregation.COUNT and prop:
        raise errors.invalid(
            "metric.property is not used by AGGREGATION_COUNT; leave it empty",
            field="metric.property",
        )
    if len(prop) > PROPERTY_LIMIT:
        raise _field_error("metric.property", f"is longer than {PROPERTY_LIMIT} characters")
    if len(fields.filters) > MAX_FILTERS:
        raise _field_error("metric.filters", f"hold more than {MAX_FILTERS} filters")
    for i, f in enumerate(fields.filters):
        where = f"metric.filters[{i}]"
        if not f.property:
            raise errors.required(f"{where}.property")
        if len(f.property) > PROPERTY_LIMIT:
            raise _field_error(f"{where}.property", f"is longer than {PROPERTY_LIMIT}")
        if not f.values:
            raise errors.required(f"{where}.values")
        if len(f.values) > MAX_FILTER_VALUES:
            raise _field_error(f"{where}.values", f"hold more than {MAX_FILTER_VALUES} values")
    credit_type, rate = fields.credit_type.strip(), fields.credit_rate.strip()
    if credit_type or rate:
        if not credit_type:
            raise errors.required("metric.credit_burn.credit_type")
        if not CREDIT_TYPE_RE.fullmatch(credit_type):
            raise _field_error(
                "metric.credit_burn.credit_type", "must be 1-100 letters, digits and _.:-"
            )
        rate = _rate(rate)
        if agg not in burn.BURNING:
            raise errors.invalid(
                "metric.credit_burn needs AGGREGATION_COUNT (a rate per event) or "
                "AGGREGATION_SUM (a rate per unit of the property); "
                f"AGGREGATION_{agg.value.upper()} has no units per event",
                reason="FIELD_INVALID",
                field="metric.credit_burn",
            )
    return replace(
        fields,
        name=name,
        aggregation=agg.value,
        credit_type=credit_type,
        credit_rate=rate,
    )


def _rate(raw: str) -> str:
    """A positive decimal read as every credit amount is (`amounts.clean_credit_amount`: at
    most 20 integer and 18 fractional digits, leading and trailing zeros not counted)."""
    return aggregate.decimal_text(Decimal(clean_credit_amount(raw, "metric.credit_burn.rate")))


def fields_of(metric: BillableMetric) -> MetricFields:
    return MetricFields(
        code=metric.code,
        name=metric.name,
        description=metric.description,
        event_name=metric.event_name,
        aggregation=metric.aggregation,
        property=metric.property,
        filters=tuple(Filter(f["property"], tuple(f["values"])) for f in (metric.filters or [])),
        credit_type=metric.credit_type or "",
        credit_rate=metric.credit_rate or "",
    )


def spec_of(metric: BillableMetric) -> MetricSpec:
    f = fields_of(metric)
    return MetricSpec(f.code, f.event_name, Aggregation(f.aggregation), f.property, f.filters)


def _write(metric: BillableMetric, f: MetricFields, now: dt.datetime) -> None:
    metric.name = f.name
    metric.description = f.description
    metric.event_name = f.event_name
    metric.aggregation = f.aggregation
    metric.property = f.property
    metric.filters = [{"property": x.property, "values": list(x.values)} for x in f.filters]
    metric.credit_type = f.credit_type or None
    metric.credit_rate = f.credit_rate or None
    metric.updated_at = now


def get_metric(session: Session, code: str, *, lock: bool = False) -> BillableMetric:
    if not code:
        raise errors.required("code")
    metric = repository.get_metric(session, code, lock=lock)
    if metric is None:
        raise errors.not_found("metric", code[:100])
    return metric


def create_metric(session: Session, fields: MetricFields) -> BillableMetric:
    clean = clean_metric(fields)
    now = utcnow()
    created = repository.insert_metric(
        session,
        {
            "code": clean.code,
            "name": clean.name,
            "description": clean.description,
            "event_name": clean.event_name,
            "aggregation": clean.aggregation,
            "property": clean.property,
            "filters": [{"property": x.property, "values": list(x.values)} for x in clean.filters],
            "credit_type": clean.credit_type or None,
            "credit_rate": clean.credit_rate or None,
            "created_at": now,
            "updated_at": now,
        },
    )
    if not created:
        raise DomainError(
            Kind.ALREADY_EXISTS,
            "ALREADY_EXISTS",
            f"metric {errors.shown(clean.code)} already exists",
            resource="metric",
        )
    return get_metric(session, clean.code)


def _apply_paths(paths: Iterable[str]) -> tuple[str, ...]:
    paths = [p.strip() for p in paths if p.strip()]
    if paths == ["*"]:
        return MUTABLE
    apply: list[str] = []
    for path in paths:
        if path in MUTABLE:
            if path not in apply:
                apply.append(path)
        elif path not in OUTPUT_ONLY and path != "code":
            raise errors.unknown_mask_path(path)
    return tuple(apply)


def update_metric(
    session: Session, code: str, given: MetricFields, paths: Iterable[str]
) -> BillableMetric:
    """Change the fields named in `paths` ("*": every mutable field); the code never changes."""
    if not code:
        raise errors.required("metric.code")
    apply = _apply_paths(paths)
    metric = get_metric(session, code, lock=True)
    current = fields_of(metric)
    changes: dict[str, object] = {}
    for path in apply:
        if path == "credit_burn":
            changes["credit_type"], changes["credit_rate"] = given.credit_type, given.credit_rate
        else:
            changes[path] = getattr(given, path)
    merged = clean_metric(replace(current, **changes))  # type: ignore[arg-type]
    _write(metric, merged, utcnow())
    session.flush()
    return metric


def delete_metric(session: Session, code: str) -> None:
    """Delete a metric; its events stay (a metric created later sees them again)."""
    if not code:
        raise errors.required("code")
    if not repository.delete_metric(session, code):
        raise errors.not_found("metric", code[:100])


METRIC_ORDER = (paging.Text(),)  # metrics are listed by code


def list_metrics(session: Session, page_size: int, page_token: str) -> Page[BillableMetric]:
    keyset: Keyset[BillableMetric] = Keyset.of(
        "metrics", METRIC_ORDER, lambda m: (m.code,), page_size
    )
    after = keyset.after(page_token)
    return keyset.page(repository.list_metrics(session, after[0] if after else None, keyset.limit))


# ---------------------------------------------------------------------------------------------
# GetUsage

GROUPS_DEFAULT, GROUPS_MAX = 100, 1000
# Aggregations whose total follows from the totals of its groups.
ADDITIVE = frozenset({Aggregation.COUNT, Aggregation.SUM, Aggregation.MAX})


def _combine(agg: Aggregation, values: list[Decimal | int | None]) -> Decimal | int | None:
    present = [v for v in values if v is not None]
    if agg is Aggregation.MAX:
        return max(present, default=None)
    if agg is Aggregation.SUM:
        return aggregate.exact_sum(present)
    return sum(int(v) for v in present)


# Groups are listed by key; "" is a valid group key.
GROUP_ORDER = (paging.Text(empty=True),)


@dataclass(frozen=True)
class UsageAnswer:
    account_id: str
    metric_code: str
    start: dt.datetime
    end: dt.datetime
    value: str
    groups: list[tuple[str, str]]
    next_page_token: str


def _query(
    session: Session,
    spec: MetricSpec,
    account_id: str,
    start: dt.datetime,
    end: dt.datetime,
    group_by: str = "",
) -> repository.PgUsageQuery | SqliteUsageQuery:
    """GetUsage's queries for the session's database: both aggregate in SQL, exactly."""
    if repository.dialect(session) == "postgresql":
        return repository.PgUsageQuery(spec, account_id, start, end, group_by)
    return SqliteUsageQuery(spec, account_id, start, end, group_by)


def get_usage(
    session: Session,
    caller: Caller,
    account_ref: str,
    metric_code: str,
    start: dt.datetime | None,
    end: dt.datetime | None,
    group_by: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> UsageAnswer:
    """One metric, one account, one period [start, end); optionally one page of groups."""
    account = accounts.resolve(session, caller, account_ref)
    if not metric_code:
        raise errors.required("metric_code")
    if start is None:
        raise errors.required("start_time")
    if end is None:
        raise errors.required("end_time")
    if end <= start:
        raise errors.invalid("end_time must be after start_time", field="end_time")
    if len(group_by) > PROPERTY_LIMIT:
        raise _field_error("group_by", f"is longer than {PROPERTY_LIMIT} characters")
    metric = get_metric(session, metric_code)
    spec = spec_of(metric)
    keyset: Keyset[tuple[str, Decimal | int | None]] = Keyset.of(
        f"usage|{account.id}|{spec.code}|{start.isoformat()}|{end.isoformat()}|{group_by}",
        GROUP_ORDER,
        lambda group: (group[0],),
        page_size,
        default=GROUPS_DEFAULT,
        maximum=GROUPS_MAX,
    )
    size = keyset.size
    # Checked with or without group_by: an altered or foreign token is refused either way.
    key = keyset.after(page_token)
    after: str | None = key[0] if key and group_by else None

    groups: list[tuple[str, Decimal | int | None]] = []
    sql = _query(session, spec, account.id, start, end, group_by)
    if group_by:
        groups = sql.groups(session, after, keyset.limit)
    if group_by and after is None and len(groups) <= size and spec.aggregation in ADDITIVE:
        total = _combine(spec.aggregation, [v for _, v in groups])  # every group is here
    else:
        total = sql.total(session)

    page = keyset.page(groups)
    return UsageAnswer(
        account_id=account.id,
        metric_code=spec.code,
        start=start,
        end=end,
        value=aggregate.decimal_text(total),
        groups=[(k, aggregate.decimal_text(v)) for k, v in page.items],
        next_page_token=page.next_page_token,
    )


def metric_total(
    session: Session,
    account_id: str,
    code: str,
    start: dt.datetime,
    end: dt.datetime,
    known: dict[str, MetricSpec] | None = None,
) -> str | None:
    """One metric of one account over [start, end) (GetUsage's total, as a decimal string), or
    None when no metric has that code. For callers that resolved the account themselves.
    `known`: every metric's definition, when the caller has them in memory
    (`tollbooth.usage.known_metrics`); else the metric is read by its code."""
    if known is not None:
        spec = known.get(code)
    else:
        metric = repository.get_metric(session, code)
        spec = spec_of(metric) if metric is not None else None
    if spec is None:
        return None
    total = _query(session, spec, account_id, start, end).total(session)
    return aggregate.decimal_text(total)


def pg_total(
    db: Database, account_id: str, spec: MetricSpec, start: dt.datetime, end: dt.datetime
) -> str:
    """`metric_total` of a metric known in memory, on PostgreSQL: one statement (the aggregate)
    in autocommit through the driver's cursor, no session (`Database.read_one`)."""
    row = db.read_one(*repository.PgUsageQuery(spec, account_id, start, end).driver_total())
    return aggregate.decimal_text(row[0] if row is not None else None)
