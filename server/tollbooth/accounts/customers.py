"""CustomerService rules (seed 003's customer management): every customer is the provider
customer of one account, its fields kept on the account and synced after the commit."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tollbooth import errors
from tollbooth.accounts import repository
from tollbooth.accounts.manage import clean_account_metadata, clean_email, clean_name
from tollbooth.db.models import BillingAccount
from tollbooth.db.types import utcnow
from tollbooth.metadata import clean_metadata

ENVIRONMENTS = ("test", "live")


@dataclass(frozen=True)
class SubscriptionSummary:
    """A subscription as seed 003's status call shows it (filled by the subscriptions room)."""

    id: str
    plan_id: str
    status: str
    current_period_end: dt.datetime | None
    stripe_subscription_id: str
    cancel_at_period_end: bool
    plan_name: str
    account_id: str
    cancel_at: dt.datetime | None = None  # Stripe's `cancel_at`


def check_environment(requested: str, live: bool) -> None:
    """Seed 003's `?environment=`: empty, or the environment of the caller's key or token
    (this servicer serves one environment: `live` when its Stripe key is a live-mode one)."""
    if not requested:
        return
    if requested not in ENVIRONMENTS:
        # As the contract lists them (the OpenAPI document's enum): `TEST` or ` test` (a raw
        # `+` in a query) is refused, never read as `test`.
        raise errors.invalid(
            f"environment must be 'test' or 'live' (lowercase, as written), not "
            f"{errors.shown(requested)}",
            field="environment",
        )
    served = "live" if live else "test"
    if requested != served:
        # Seed 003: 403, "Stripe not configured or invalid credentials": these credentials
        # do not open that environment's Stripe account.
        raise errors.permission_denied(
            "ENVIRONMENT_MISMATCH",
            f"the caller's key or token belongs to the {served} environment, not {requested}",
            field="environment",
        )


def check_limit(limit: int) -> int:
    """Seed 003's `limit`, ListCustomers' page size: refused by its own name when negative
    (the paging rule would name `page_size`, a field this request does not have)."""
    if limit < 0:
        raise errors.invalid("limit must not be negative", field="limit")
    return limit


# Stripe's limit on a customer's phone: a longer one would be committed here and then refused
# by the provider on every sync of the account.
MAX_PHONE = 20


def clean_phone(phone: str) -> str | None:
    phone = phone.strip()
    if any(c not in "+0123456789 ()-." for c in phone):
        raise errors.invalid("phone is not a phone number", field="phone")
    if len(phone) > MAX_PHONE:
        raise errors.invalid(
            f"phone is longer than {MAX_PHONE} characters (Stripe's limit)", field="phone"
        )
    return phone or None


def clean_description(description: str) -> str | None:
    description = description.strip()
    if len(description) > 500:
        raise errors.invalid("description is longer than 500 characters", field="description")
    return description or None


def email_key(email: str) -> str:
    """The idempotency key CreateCustomer without a request_id is claimed under: its e-mail
    in any case (hashed: an e-mail may be longer than a key)."""
    return "email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def email_taken(email: str, account: BillingAccount) -> errors.DomainError:
    return errors.DomainError(
        errors.Kind.ALREADY_EXISTS,
        "CUSTOMER_EMAIL_TAKEN",
        f"a customer with e-mail {errors.shown(email)} was created by a different request; "
        "send a request_id to create another",
        customer_id=account.stripe_customer_id or "",
        account_id=account.id,
    )


def customer_account(session: Session, customer_id: str) -> BillingAccount:
    """The account of a provider customer that was not deleted; NOT_FOUND otherwise."""
    customer_id = customer_id.strip()
    if not customer_id:
        raise errors.required("customer_id")
    account = repository.by_customer(session, customer_id)
    if account is None or repository.customer_gone(session, account):
        raise errors.not_found("customer", customer_id)
    return account


def update_customer(
    session: Session,
    customer_id: str,
    *,
    email: str | None,
    name: str | None,
    description: str | None,
    phone: str | None,
    metadata: Mapping[str, str],
) -> BillingAccount:
    """Stripe's update semantics: the fields given change; metadata merges ("" removes)."""
    found = customer_account(session, customer_id)
    account = repository.by_id_for_update(session, found.id)
    assert account is not None
    if repository.customer_gone(session, account):
        # A DeleteCustomer committed while this update waited for the row: deleted, as a
        # request after it finds it (nothing of this one is applied).
        raise errors.not_found("customer", customer_id.strip())
    before = (
        account.email,
        account.name,
        account.description,
        account.phone,
        dict(account.attributes or {}),
    )
    if email is not None:
        account.email = clean_email(email)
    if name is not None:
        account.name = clean_name(name)
    if description is not None:
        account.description = clean_description(description)
    if phone is not None:
        account.phone = clean_phone(phone)
    if metadata:
        merged = dict(account.attributes or {})
        for key, value in clean_metadata(metadata).items():
            if value:
                merged[key] = value
            else:
                merged.pop(key, None)
        account.attributes = clean_account_metadata(merged)
    after = (
        account.email,
        account.name,
        account.description,
        account.phone,
        dict(account.attributes or {}),
    )
    if after != before:
        account.version += 1
        account.updated_at = utcnow()
    session.flush()
    return account


def delete_customer(session: Session, customer_id: str) -> BillingAccount:
    """Archive the account (its history stays); the provider delete follows the commit."""
    found = customer_account(session, customer_id)
    account = repository.by_id_for_update(session, found.id)
    assert account is not None
    # Committed with the archive: if the provider call after the commit fails, `reconcile`
    # finds the mark and deletes the provider customer (`customer_sync.sweep_deletes`). A
    # mark already there is an earlier delete (perhaps racing on another replica, its provider
    # call not yet answered): this one is answered as a delete after it, NOT_FOUND. A retry
    # of a failed delete that resends its request_id is replayed and retries the provider call.
    if not repository.mark_customer_delete(session, account.id):
        raise errors.not_found("customer", customer_id.strip())
    if account.archived_at is None:
        account.archived_at = account.updated_at = utcnow()
    session.flush()
    return account
