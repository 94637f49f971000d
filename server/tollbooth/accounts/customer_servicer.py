"""CustomerService over gRPC (seed 003's customers): the account's row in one transaction,
then the provider customer with no transaction open, then the answer re-read."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from sqlalchemy.orm import Session

from billing.v1 import account_pb2, customer_pb2, customer_pb2_grpc
from tollbooth import errors, idempotency
from tollbooth.accounts import convert, customer_sync, customers, manage, repository
from tollbooth.accounts.customers import SubscriptionSummary
from tollbooth.auth.caller import current_caller
from tollbooth.deps import Deps
from tollbooth.errors import DomainError, Kind
from tollbooth.provider.client import StripeProvider
from tollbooth.rpc.convert import print_unset_as_null
from tollbooth.rpc.servicer import (
    Servicer,
    contract,
    idempotency_scope,
    request_fingerprint,
)

# The subscription seed 003's status call shows for some accounts: decided by the room that
# owns subscriptions and handed to this servicer at assembly (`tollbooth.app`).
SubscriptionLookup = Callable[[Session, Sequence[str]], SubscriptionSummary | None]
# What another room closes once DeleteCustomer has committed (its account id): the payment
# room cancels the customer's open payment intents (`tollbooth.payments.closing`). Called
# with no transaction open; it never raises for the provider (what fails, reconcile finishes).
OnDeleted = Callable[[str], object]

LIST_DEFAULT = 10


def no_subscriptions(session: Session, account_ids: Sequence[str]) -> SubscriptionSummary | None:
    return None


def nothing_to_close(account_id: str) -> None:
    return None


@contract(customer_pb2.DESCRIPTOR.services_by_name["CustomerService"])
class CustomerServicer(Servicer, customer_pb2_grpc.CustomerServiceServicer):
    def __init__(
        self,
        deps: Deps,
        provider: StripeProvider,
        subscriptions: SubscriptionLookup = no_subscriptions,
        on_deleted: OnDeleted = nothing_to_close,
    ) -> None:
        super().__init__(deps)
        self.provider = provider
        self.subscriptions = subscriptions
        self.on_deleted = on_deleted
        # Seed 003's `?environment=` must name the environment this servicer serves.
        self.live = deps.environment == "live"

    def _customer(self, account_id: str) -> customer_pb2.Customer:
        with self.read() as session:
            account = repository.by_id(session, account_id)
            assert account is not None
            # The sync just before may have found it deleted at the provider (and recorded
            # that), or a DeleteCustomer committed meanwhile: answered as GetCustomer answers
            # it from then on.
            if repository.customer_gone(session, account):
                raise errors.not_found("customer", account.stripe_customer_id or account.id)
            return convert.customer_out(account)

    def CreateCustomer(
        self, request: customer_pb2.CreateCustomerRequest, context: grpc.ServicerContext
    ) -> customer_pb2.Customer:
        customers.check_environment(request.environment, self.live)
        customers.clean_phone(request.phone)
        customers.clean_description(request.description)
        # Before the e-mail's key is looked at: a body the provider would refuse is named as
        # such, not as CUSTOMER_EMAIL_TAKEN (a request_id would only move on to this refusal).
        manage.clean_account_metadata(dict(request.metadata))

        def effect(session: Session) -> account_pb2.Account:
            return convert.account_out(
                manage.create_account(
                    session,
                    name=request.name,
                    email=request.email,
                    alias="",
                    metadata=dict(request.metadata),
                    description=request.description,
                    phone=request.phone,
                )
            )

        # Phase 1 (recorded under request_id, or else under the e-mail): the account. Phase 2:
        # its provider customer, which a retry with the same request_id or e-mail resumes.
        if request.request_id or not request.email.strip():
            account = self.write(request, account_pb2.Account, effect)
        else:
            account = self._create_once_per_email(request, effect)
        try:
            customer_sync.sync_customer(self.deps.db, self.provider, account.id, create=True)
        except DomainError as exc:
            raise _unfinished(exc, request, account.id) from exc
        return self._customer(account.id)

    def _create_once_per_email(
        self,
        request: customer_pb2.CreateCustomerRequest,
        effect: Callable[[Session], account_pb2.Account],
    ) -> account_pb2.Account:
        """CreateCustomer without a request_id: the e-mail is its key (a client that retries
        without one, after a timeout or a failure midway, completes the first account instead
        of making a second). The key is claimed in the account's own transaction (a unique
        row: two concurrent calls make one account, the second waiting for the first's
        commit), and nothing is held across the provider call that follows. The key of a
        customer since deleted is retired, and the e-mail makes a new customer; so does
        another request once the first customer's e-mail changed."""
        email = manage.clean_email(request.email)
        assert email is not None  # not blank: the caller checked
        same = customer_pb2.CreateCustomerRequest()
        same.CopyFrom(request)
        same.email = email.lower()  # the e-mail in any case is one request
        scope = idempotency_scope(current_caller.get(), request) + "|email"
        key, fingerprint = customers.email_key(email), request_fingerprint(same)
        with self.deps.db.transaction() as session:
            for _ in range(2):
                row = idempotency.claim_or_row(session, scope, key, fingerprint)
                if row is None:
                    made = effect(session)
                    idempotency.complete(
                        session, scope, key, made.SerializeToString(deterministic=True)
                    )
                    return made
                earlier = account_pb2.Account.FromString(row.response)
                account = repository.by_id(session, earlier.id)
                assert account is not None
                if repository.customer_gone(session, account):
                    idempotency.retire(session, scope, key, f"gone:{account.id}")
                    continue
                if not idempotency.matches(row.request_hash, fingerprint):
                    if (account.email or "").lower() != email.lower():
                        # Its customer has another e-mail since: none holds this one now,
                        # so another request makes a new customer (the same one still
                        # replays the first, above).
                        idempotency.retire(session, scope, key, f"moved:{account.id}")
                        continue
                    raise customers.email_taken(email, account)
                return earlier
        raise RuntimeError(f"the e-mail key {key} was retired twice in one call")

    def ListCustomers(
        self, request: customer_pb2.ListCustomersRequest, context: grpc.ServicerContext
    ) -> customer_pb2.ListCustomersResponse:
        customers.check_environment(request.environment, self.live)
        with self.read() as session:
            page = manage.list_accounts(
                session,
                page_size=customers.check_limit(request.limit),
                page_token=request.page_token,
                with_customer=True,
                default_size=LIST_DEFAULT,
            )
            return customer_pb2.ListCustomersResponse(
                data=[convert.customer_out(a) for a in page.items],
                has_more=bool(page.next_page_token),
                next_page_token=page.next_page_token,
            )

    def GetCustomer(
        self, request: customer_pb2.GetCustomerRequest, context: grpc.ServicerContext
    ) -> customer_pb2.Customer:
        customers.check_environment(request.environment, self.live)
        with self.read() as session:
            return convert.customer_out(customers.customer_account(session, request.customer_id))

    def UpdateCustomer(
        self, request: customer_pb2.UpdateCustomerRequest, context: grpc.ServicerContext
    ) -> customer_pb2.Customer:
        customers.check_environment(request.environment, self.live)

        def given(name: str) -> str | None:
            return getattr(request, name) if request.HasField(name) else None  # type: ignore[arg-type]

        def effect(session: Session) -> customer_pb2.Customer:
            return convert.customer_out(
                customers.update_customer(
                    session,
                    request.customer_id,
                    email=given("email"),
                    name=given("name"),
                    description=given("description"),
                    phone=given("phone"),
                    metadata=dict(request.metadata),
                )
            )

        answer, kept = self._update_once(request, effect)
        try:
            customer_sync.sync_customer(
                self.deps.db, self.provider, answer.account_id, create=False
            )
        except errors.DomainError:
            # A DeleteCustomer that committed after this update and reached the provider
            # first: the provider's "No such customer" is that deletion, NOT_FOUND (a failure
            # of a customer still here is raised as it is).
            self._customer(answer.account_id)
            raise
        current = self._customer(answer.account_id)  # NOT_FOUND once deleted at the provider
        return answer if kept else current

    def _update_once(
        self,
        request: customer_pb2.UpdateCustomerRequest,
        effect: Callable[[Session], customer_pb2.Customer],
    ) -> tuple[customer_pb2.Customer, bool]:
        """The update at most once per request_id, and whether its answer is the one to give:
        a replay answers the customer as the first call did (stored under the scope's
        `|customer` form). Keys stored before held only the account (its id): such a replay,
        and a call without a request_id, re-read the customer as it is now."""
        if not request.request_id:
            with self.deps.db.transaction() as session:
                return effect(session), False
        scope = idempotency_scope(current_caller.get(), request)
        fingerprint = request_fingerprint(request)
        with self.deps.db.transaction() as session:
            earlier = idempotency.stored(session, scope, request.request_id, fingerprint)
            if earlier is not None:
                account_id = account_pb2.Account.FromString(earlier).id
                return customer_pb2.Customer(account_id=account_id), False
            claim = idempotency.claim(session, scope + "|customer", request.request_id, fingerprint)
            if not claim.fresh:
                assert claim.response is not None
                return customer_pb2.Customer.FromString(claim.response), True
            answer = effect(session)
            idempotency.complete(
                session,
                scope + "|customer",
                request.request_id,
                answer.SerializeToString(deterministic=True),
            )
            return answer, True

    def DeleteCustomer(
        self, request: customer_pb2.DeleteCustomerRequest, context: grpc.ServicerContext
    ) -> customer_pb2.DeleteCustomerResponse:
        customers.check_environment(request.environment, self.live)
        try:
            account = self.write(
                request,
                account_pb2.Account,
                lambda session: convert.account_out(
                    customers.delete_customer(session, request.customer_id)
                ),
            )
        except errors.DomainError as exc:
            if exc.kind is errors.Kind.NOT_FOUND:
                self._finish_pending_delete(request.customer_id)
            raise
        try:
            customer_sync.delete_customer(self.deps.db, self.provider, account.id)
        finally:  # the delete stands whatever the provider answers: close what it left open
            self.on_deleted(account.id)
        return customer_pb2.DeleteCustomerResponse(id=account.stripe_customer_id, deleted=True)

    def _finish_pending_delete(self, customer_id: str) -> None:
        """A delete after an earlier one whose provider call failed (seed 003's DELETE sends no
        request_id, so a client's retry of a 503 lands here): its NOT_FOUND must be true, so
        the provider customer (and the subscriptions it pays) is deleted first, with no
        transaction open; the provider still down answers 503 again, not NOT_FOUND. The
        customer's payment intents an earlier cancel left open are canceled too."""
        with self.read() as session:
            account = repository.by_customer(session, customer_id.strip())
            deleted = account is not None and repository.customer_gone(session, account)
            pending = deleted and account is not None and account.customer_deleted_at is None
            account_id = account.id if account is not None else ""
        if not deleted:
            return
        try:
            if pending:
                customer_sync.delete_customer(self.deps.db, self.provider, account_id)
        finally:
            self.on_deleted(account_id)

    def GetCustomerSubscription(
        self, request: customer_pb2.GetCustomerSubscriptionRequest, context: grpc.ServicerContext
    ) -> customer_pb2.GetCustomerSubscriptionResponse:
        customers.check_environment(request.environment, self.live)
        email = manage.clean_email(request.customerEmail, "customerEmail")
        if email is None:
            raise errors.required("customerEmail")
        with self.read() as session:
            accounts = repository.ids_by_email(session, email, customers_only=True)
            found = self.subscriptions(session, accounts) if accounts else None
        if not accounts:
            raise errors.not_found("customer", email)
        # Seed 003: `subscription: null` without an active subscription. Unset here; the
        # gateway prints it as null when the answer names it (gateway/json_fields.lua).
        answer = customer_pb2.GetCustomerSubscriptionResponse(
            subscription=convert.subscription_out(found) if found is not None else None
        )
        print_unset_as_null(context, answer)
        return answer


def _unfinished(
    exc: DomainError, request: customer_pb2.CreateCustomerRequest, account_id: str
) -> DomainError:
    """The provider failed after the customer was saved: the same error, saying how to finish
    it without making a second one, and naming its billing account (`account_id`)."""
    if exc.kind is not Kind.UNAVAILABLE:
        return exc
    if request.request_id:
        how = "retry with the same request_id to finish it"
    elif request.email.strip():
        how = "send the same request again (its e-mail is its key) to finish it"
    else:
        how = (
            f"it was saved as billing account {account_id}: do not create it again (a"
            " request without request_id or e-mail has no key); its Stripe customer is made"
            " on its first checkout"
        )
    error = DomainError(
        exc.kind,
        exc.reason,
        f"the customer was saved but the payment provider did not take it: {how}",
        **exc.metadata,
        account_id=account_id,
    )
    error.retry_after_sec, error.headers = exc.retry_after_sec, exc.headers
    return error
