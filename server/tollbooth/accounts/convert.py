"""Accounts and customers between domain rows and protos."""

from __future__ import annotations

from billing.v1 import account_pb2, customer_pb2
from tollbooth.accounts.customers import SubscriptionSummary
from tollbooth.accounts.service import alias_of
from tollbooth.db.models import BillingAccount
from tollbooth.rpc.convert import ts


def account_out(account: BillingAccount) -> account_pb2.Account:
    return account_pb2.Account(
        id=account.id,
        name=account.name or "",
        email=account.email or "",
        alias=alias_of(account),
        metadata=dict(account.attributes or {}),
        stripe_customer_id=account.stripe_customer_id or "",
        archived=account.archived_at is not None,
        create_time=ts(account.created_at),
        update_time=ts(account.updated_at or account.created_at),
        archive_time=ts(account.archived_at),
    )


def customer_out(account: BillingAccount) -> customer_pb2.Customer:
    return customer_pb2.Customer(
        id=account.stripe_customer_id or "",
        email=account.email or "",
        name=account.name or "",
        description=account.description or "",
        phone=account.phone or "",
        metadata=dict(account.attributes or {}),
        account_id=account.id,
        create_time=ts(account.created_at),
    )


def subscription_out(summary: SubscriptionSummary) -> customer_pb2.CustomerSubscription:
    return customer_pb2.CustomerSubscription(
        id=summary.id,
        planId=summary.plan_id,
        status=summary.status,
        currentPeriodEnd=ts(summary.current_period_end),
        stripeSubscriptionId=summary.stripe_subscription_id,
        cancelAtPeriodEnd=summary.cancel_at_period_end,
        plan=customer_pb2.CustomerSubscriptionPlan(name=summary.plan_name),
        accountId=summary.account_id,
        cancelAt=ts(summary.cancel_at),
    )
