"""Every SQL statement of the notifications room (besides `outbox.enqueue`).

Portable between PostgreSQL and SQLite: on PostgreSQL the position counter is serialised by an
advisory transaction lock and due deliveries are claimed with FOR UPDATE SKIP LOCKED; SQLite
serialises writers anyway and ignores both.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from tollbooth.db import upsert_insert
from tollbooth.db.models import (
    NotificationAttempt,
    NotificationDelivery,
    NotificationEndpoint,
    NotificationOutbox,
)
from tollbooth.ids import new_id
from tollbooth.paging import after_clause

# pg_advisory_xact_lock key of the position counter ("ntfy" in ASCII).
POSITION_LOCK = 0x6E746679
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def _pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# -- endpoints --------------------------------------------------------------------------------


def get_endpoint(
    session: Session,
    endpoint_id: str,
    *,
    lock: bool = False,
    key_share: bool = False,
    share: bool = False,
) -> Any:
    """The endpoint; `lock` takes its row lock. `key_share` makes that FOR NO KEY UPDATE (on
    PostgreSQL), which does not conflict with the key-share locks that inserting an attempt or
    delivery (a foreign key to the endpoint) takes: senders recording at once then queue on
    the endpoint instead of deadlocking. Deleting an endpoint still takes the full lock.
    `share` takes FOR KEY SHARE, the lock inserting a delivery takes anyway, but before the
    insert: a delete in progress is waited for and the endpoint is then gone (not a foreign
    key violation at the insert)."""
    stmt = select(NotificationEndpoint).where(NotificationEndpoint.id == endpoint_id)
    if lock:
        stmt = stmt.with_for_update(key_share=key_share)
    elif share:
        stmt = stmt.with_for_update(read=True, key_share=True)
    return session.scalars(stmt).first()


def list_endpoints(
    session: Session, after: tuple[Any, ...] | None, limit: int, *, descending: bool = False
) -> Sequence[NotificationEndpoint]:
    """Oldest first, after the key `after` (created_at, id); `descending`: newest first,
    before it (the page before, for the operator console's Previous link)."""
    cols = (NotificationEndpoint.created_at, NotificationEndpoint.id)
    order = [c.desc() for c in cols] if descending else list(cols)
    stmt = select(NotificationEndpoint).order_by(*order).limit(limit)
    if after is not None:
        stmt = stmt.where(after_clause(cols, after, descending=descending))
    return session.scalars(stmt).all()


def enabled_endpoints(session: Session) -> Sequence[NotificationEndpoint]:
    """The enabled endpoints, key-share locked (as `get_endpoint(share=True)`): a delete in
    progress is waited for and its endpoint left out, not a foreign-key violation when the
    fan-out inserts its deliveries."""
    stmt = select(NotificationEndpoint).where(NotificationEndpoint.enabled.is_(True))
    stmt = stmt.order_by(NotificationEndpoint.created_at).with_for_update(read=True, key_share=True)
    return session.scalars(stmt).all()


def delete_endpoint(session: Session, endpoint_id: str) -> None:
    # Children first: SQLite does not enforce ON DELETE CASCADE without a pragma.
    ids = select(NotificationDelivery.id).where(NotificationDelivery.endpoint_id == endpoint_id)
    session.execute(delete(NotificationAttempt).where(NotificationAttempt.delivery_id.in_(ids)))
    session.execute(
        delete(NotificationDelivery).where(NotificationDelivery.endpoint_id == endpoint_id)
    )
    session.execute(delete(NotificationEndpoint).where(NotificationEndpoint.id == endpoint_id))


# -- positions (commit order) and fan-out -----------------------------------------------------


def assign_positions(session: Session, limit: int) -> list[NotificationOutbox]:
    """Number the committed rows that have no position yet, in the order they became visible.

    One assigner at a time (the advisory lock, released at commit), so a position is only
    handed out after every smaller one has committed: a reader that saw position p never sees
    a smaller one appear later.
    """
    if _pg(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": POSITION_LOCK})
    rows = list(
        session.scalars(
            select(NotificationOutbox)
            .where(NotificationOutbox.position.is_(None))
            .order_by(NotificationOutbox.created_at, NotificationOutbox.id)
            .limit(limit)
        ).all()
    )
    if not rows:
        return rows
    top = session.scalar(select(func.max(NotificationOutbox.position))) or 0
    for row in rows:
        top += 1
        row.position = top
    session.flush()
    return rows


def insert_deliveries(
    session: Session,
    endpoint_id: str,
    rows: Sequence[NotificationOutbox],
    now: dt.datetime,
    *,
    reset: bool = False,
) -> int:
    """A pending delivery of each row to the endpoint (once per pair); `reset` makes existing
    ones pending again (a resend), their retries counted from now. One statement executed
    for all rows, which SQLAlchemy sends as a few multi-row INSERTs ("insertmanyvalues"): a
    resend since a time of thousands of messages is a few round trips, not one per message,
    in the RPC's one transaction."""
    if not rows:
        return 0
    table = NotificationDelivery.__table__
    stmt = upsert_insert(session, table)
    if reset:
        stmt = stmt.on_conflict_do_update(
            index_elements=["endpoint_id", "notification_id"],
            # created_at restarts the retry window (`Deliverer._schedule`): a resent
            # message is retried for the whole window, however old it is.
            set_={"state": PENDING, "next_attempt_at": now, "updated_at": now, "created_at": now},
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["endpoint_id", "notification_id"])
    values = []
    for row in rows:
        assert row.position is not None
        values.append(
            {
                "id": new_id("ndl"),
                "endpoint_id": endpoint_id,
                "notification_id": row.id,
                "order_key": row.billing_account_id or row.id,
                "position": row.position,
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "last_error": "",
                # Retries are counted from it (`Deliverer._schedule`): the message's own time
                # when fanned out, now when resent.
                "created_at": now if reset else row.created_at,
                "updated_at": now,
            }
        )
    # Core, on the session's connection: the ORM's bulk path would re-read nothing we need.
    result = session.connection().execute(stmt.returning(table.c.id), values)
    return len(result.all())


def notifications_since(
    session: Session, since: dt.datetime, types: Sequence[str] | None
) -> Sequence[NotificationOutbox]:
    stmt = select(NotificationOutbox).where(
        NotificationOutbox.position.is_not(None), NotificationOutbox.created_at >= since
    )
    if types:
        stmt = stmt.where(NotificationOutbox.type.in_(types))
    return session.scalars(stmt.order_by(NotificationOutbox.position)).all()


def get_notification(session: Session, notification_id: str) -> NotificationOutbox | None:
    return session.get(NotificationOutbox, notification_id)


def newest_position(session: Session) -> int:
    """The largest position handed out (0 before the first): no cursor is ever past it."""
    return int(session.scalar(select(func.max(NotificationOutbox.position))) or 0)


def notifications_after(
    session: Session, position: int, types: Sequence[str] | None, limit: int
) -> Sequence[NotificationOutbox]:
    stmt = select(NotificationOutbox).where(NotificationOutbox.position > position)
    if types:
        stmt = stmt.where(NotificationOutbox.type.in_(types))
    return session.scalars(stmt.order_by(NotificationOutbox.position).limit(limit)).all()


def has_work(session: Session, now: dt.datetime) -> bool:
    """Rows without a position, or pending deliveries that are due."""
    unpositioned = select(NotificationOutbox.id).where(NotificationOutbox.position.is_(None))
    due = select(NotificationDelivery.id).where(
        NotificationDelivery.state == PENDING,
        NotificationDelivery.next_attempt_at <= now,
        _unleased(now),
        exists().where(
            NotificationEndpoint.id == NotificationDelivery.endpoint_id,
            NotificationEndpoint.enabled.is_(True),
        ),
    )
    return bool(session.execute(select(exists(unpositioned) | exists(due))).scalar())


# -- claims and results -----------------------------------------------------------------------


def claim_due(
    session: Session,
    now: dt.datetime,
    lease_until: dt.datetime,
    limit: int,
    *,
    busy: Mapping[str, int] | None = None,
    per_endpoint: int = 0,
) -> list[tuple[NotificationDelivery, NotificationOutbox, NotificationEndpoint]]:
    """Due deliveries of enabled endpoints whose account has no earlier pending one, locked
    with SKIP LOCKED and leased (`leased_until`, and next_attempt_at, pushed to `lease_until`)
    before commit, so no other process takes them while this one sends: not even when a
    resend makes one due meanwhile. `per_endpoint` (when > 0): at most that many of one
    endpoint's deliveries in flight, counting `busy` (endpoint id -> deliveries this process
    is sending now); endpoints at it are not read, and the rows past it stay unleased (their
    locks end with the claim's transaction). Rows come in order of their endpoint's count in
    `busy` (fewest first), then position."""
    d, earlier = NotificationDelivery, aliased(NotificationDelivery)
    blocked = exists().where(
        earlier.endpoint_id == d.endpoint_id,
        earlier.order_key == d.order_key,
        earlier.state == PENDING,
        earlier.position < d.position,
    )
    enabled = exists().where(
        NotificationEndpoint.id == d.endpoint_id, NotificationEndpoint.enabled.is_(True)
    )
    taken: Counter[str] = Counter(busy or {})
    # The endpoints with the fewest deliveries in flight first, then position: a sender that
    # comes free goes to an endpoint that waits, not to the next message of one that holds
    # senders already (two hanging endpoints, each at its share, would else take every
    # sender that comes free, half the time, and the healthy one would starve).
    in_flight = {e: n for e, n in taken.items() if n > 0}
    first = case(in_flight, value=d.endpoint_id, else_=0) if in_flight else None
    stmt = (
        select(d)
        .where(d.state == PENDING, d.next_attempt_at <= now, _unleased(now), enabled, ~blocked)
        .order_by(*([first] if first is not None else []), d.position)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if per_endpoint > 0:
        full = [e for e, n in taken.items() if n >= per_endpoint]
        if full:
            stmt = stmt.where(d.endpoint_id.not_in(full))
    deliveries = list(session.scalars(stmt).all())
    if deliveries:
        # Read committed: the NOT EXISTS above saw the table as of the statement's start, and
        # PostgreSQL re-checks a row it had to wait for, not the subquery. A resend committed
        # in between may have made an earlier message of the account pending again: a fresh
        # statement sees it, and the rows it holds back stay for a later claim.
        held = set(
            session.scalars(select(d.id).where(d.id.in_([x.id for x in deliveries]), blocked))
        )
        deliveries = [x for x in deliveries if x.id not in held]
    out = []
    for delivery in deliveries:
        if per_endpoint > 0:
            if taken[delivery.endpoint_id] >= per_endpoint:
                continue  # that endpoint's share of the senders is taken
            taken[delivery.endpoint_id] += 1
        delivery.next_attempt_at = lease_until
        delivery.leased_until = lease_until
        row = session.get(NotificationOutbox, delivery.notification_id)
        endpoint = session.get(NotificationEndpoint, delivery.endpoint_id)
        assert row is not None and endpoint is not None
        out.append((delivery, row, endpoint))
    session.flush()
    return out


def renew_lease(
    session: Session, delivery_id: str, leased_until: dt.datetime, until: dt.datetime
) -> bool:
    """Push the lease of a claimed delivery to `until`, if it is still the lease this process
    took (`leased_until`): not taken over by another process after it ran out, nor settled.
    A next attempt set by a resend meanwhile is kept (the attempt's record sees it). False:
    leave the delivery to whoever holds it now."""
    d = NotificationDelivery
    result = session.execute(
        update(d)
        .where(d.id == delivery_id, d.state == PENDING, d.leased_until == leased_until)
        .values(
            leased_until=until,
            next_attempt_at=case(
                (d.next_attempt_at == leased_until, until), else_=d.next_attempt_at
            ),
        )
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def give_up_unwanted(
    session: Session,
    endpoint_id: str,
    wanted: Sequence[str],
    now: dt.datetime,
    error: Callable[[str], str],
) -> int:
    """Give up the endpoint's pending deliveries of a type not in `wanted` (internal types)
    that no process is sending now; `error(type)` is each one's last error. Rows another
    transaction holds are skipped (a sender recording its attempt: the next renewal of the
    lease settles it). Returns how many were given up."""
    d, o = NotificationDelivery, NotificationOutbox
    stmt = (
        select(d, o.type)
        .join(o, o.id == d.notification_id)
        .where(d.endpoint_id == endpoint_id, d.state == PENDING, _unleased(now))
        .where(o.type.not_in(list(wanted)))
        .with_for_update(of=d, skip_locked=True)
    )
    rows = session.execute(stmt).all()
    for delivery, type_ in rows:
        delivery.state = FAILED
        delivery.last_error = error(type_)[:500]
        delivery.updated_at = now
    return len(rows)


def give_up_claimed(
    session: Session, delivery_id: str, leased_until: dt.datetime, error: str, now: dt.datetime
) -> None:
    """Give up a delivery this process leased (and has not sent) whose type its endpoint no
    longer wants."""
    d = NotificationDelivery
    session.execute(
        update(d)
        .where(d.id == delivery_id, d.state == PENDING, d.leased_until == leased_until)
        .values(state=FAILED, leased_until=None, last_error=error[:500], updated_at=now)
    )


def release_lease(
    session: Session, delivery_id: str, leased_until: dt.datetime, now: dt.datetime
) -> None:
    """Give a lease back unused: the delivery is due again (when its endpoint sends)."""
    d = NotificationDelivery
    session.execute(
        update(d)
        .where(d.id == delivery_id, d.leased_until == leased_until)
        .values(
            leased_until=None,
            next_attempt_at=case((d.next_attempt_at > now, now), else_=d.next_attempt_at),
        )
    )


def _unleased(now: dt.datetime) -> Any:
    """No process is sending the delivery now (or its lease ran out: it died)."""
    d = NotificationDelivery
    return or_(d.leased_until.is_(None), d.leased_until <= now)


def lock_delivery(session: Session, delivery_id: str) -> NotificationDelivery | None:
    stmt = select(NotificationDelivery).where(NotificationDelivery.id == delivery_id)
    return session.scalars(stmt.with_for_update()).first()


def attempts_since(session: Session, delivery_id: str, since: dt.datetime) -> int:
    """How many attempts of the delivery were recorded at or after `since` (its resend)."""
    a = NotificationAttempt
    stmt = select(func.count()).where(a.delivery_id == delivery_id, a.created_at >= since)
    return int(session.scalar(stmt) or 0)


def add_attempt(session: Session, delivery: NotificationDelivery, **fields: Any) -> None:
    session.add(
        NotificationAttempt(
            id=new_id("nat"),
            delivery_id=delivery.id,
            endpoint_id=delivery.endpoint_id,
            notification_id=delivery.notification_id,
            number=delivery.attempts,
            **fields,
        )
    )


def clear_failing(session: Session, endpoint_id: str) -> None:
    session.execute(
        update(NotificationEndpoint)
        .where(
            NotificationEndpoint.id == endpoint_id, NotificationEndpoint.failing_since.is_not(None)
        )
        .values(failing_since=None)
    )


def has_pending(session: Session, endpoint_id: str) -> bool:
    """Whether any delivery to the endpoint is still to be sent (or retried)."""
    d = NotificationDelivery
    pending = select(d.id).where(d.endpoint_id == endpoint_id, d.state == PENDING)
    return bool(session.execute(select(exists(pending))).scalar())


# -- listings ---------------------------------------------------------------------------------


def list_messages(
    session: Session,
    endpoint_id: str,
    state: str | None,
    after: tuple[Any, ...] | None,
    limit: int,
) -> Sequence[tuple[NotificationDelivery, NotificationOutbox]]:
    d = NotificationDelivery
    stmt = (
        select(d, NotificationOutbox)
        .join(NotificationOutbox, NotificationOutbox.id == d.notification_id)
        .where(d.endpoint_id == endpoint_id)
        .order_by(d.position.desc())
        .limit(limit)
    )
    if state:
        stmt = stmt.where(d.state == state)
    if after is not None:
        stmt = stmt.where(after_clause((d.position,), after, descending=True))
    return [(a, b) for a, b in session.execute(stmt).all()]


def get_delivery(
    session: Session, endpoint_id: str, notification_id: str
) -> NotificationDelivery | None:
    stmt = select(NotificationDelivery).where(
        and_(
            NotificationDelivery.endpoint_id == endpoint_id,
            NotificationDelivery.notification_id == notification_id,
        )
    )
    return session.scalars(stmt).first()


def deliveries_of(
    session: Session, notification_ids: Sequence[str]
) -> Sequence[NotificationDelivery]:
    """Every endpoint's delivery of these notifications, by notification then endpoint. The
    endpoints are named, so that the read probes `uq_notification_delivery` (endpoint_id,
    notification_id) for each pair: no index leads with the notification."""
    endpoint_ids = list(session.scalars(select(NotificationEndpoint.id)))
    if not notification_ids or not endpoint_ids:
        return []
    d = NotificationDelivery
    stmt = select(d).where(
        d.endpoint_id.in_(endpoint_ids), d.notification_id.in_(list(notification_ids))
    )
    return session.scalars(stmt.order_by(d.notification_id, d.endpoint_id)).all()


def list_attempts(
    session: Session,
    endpoint_id: str,
    notification_id: str | None,
    after: tuple[Any, ...] | None,
    limit: int,
) -> Sequence[NotificationAttempt]:
    a = NotificationAttempt
    cols = (a.created_at, a.id)
    stmt = select(a).where(a.endpoint_id == endpoint_id)
    if notification_id:
        stmt = stmt.where(a.notification_id == notification_id)
    if after is not None:
        stmt = stmt.where(after_clause(cols, after, descending=True))
    return session.scalars(stmt.order_by(a.created_at.desc(), a.id.desc()).limit(limit)).all()
