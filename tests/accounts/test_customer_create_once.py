"""CreateCustomer without a request_id is keyed on its e-mail: a retry after a failure midway
(the provider down, or its answer lost after it created the customer) completes the first
account instead of making a second; concurrent calls with one e-mail make one account and one
Stripe customer; another request with that e-mail is refused; a deleted customer's e-mail is
free again. Real gRPC against the sandbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from billing.v1 import account_pb2, account_pb2_grpc, customer_pb2, customer_pb2_grpc
from tests.accounts.support import error_metadata, unique
from tests.checkout.support import World, start_world
from tests.conftest import SERVICE_MD
from tests.devstack import free_port, grpc_server
from tests.helpers import error_reason
from tollbooth import app
from tollbooth.provider.client import StripeProvider


@pytest.fixture
def world(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The provider client gives up after 1 s and never retries by itself."""
    w = start_world(
        database_url,
        tmp_path,
        deliver=False,
        STRIPE_TIMEOUT_SEC="1",
        STRIPE_MAX_NETWORK_RETRIES="0",
    )
    yield w
    w.stop()


def customers(channel: grpc.Channel) -> customer_pb2_grpc.CustomerServiceStub:
    return customer_pb2_grpc.CustomerServiceStub(channel)


def create(channel: grpc.Channel, email: str, **fields: str) -> customer_pb2.Customer:
    return customers(channel).CreateCustomer(
        customer_pb2.CreateCustomerRequest(email=email, **fields),
        metadata=SERVICE_MD,
        timeout=30,
    )


def accounts_with(world: World, email: str) -> list[account_pb2.Account]:
    return list(
        account_pb2_grpc.AccountServiceStub(world.channel)
        .ListAccounts(
            account_pb2.ListAccountsRequest(email=email, include_archived=True),
            metadata=SERVICE_MD,
        )
        .accounts
    )


def stripe_customers_with(world: World, email: str) -> list[str]:
    store = world.sandbox.app.state.store
    with store.lock:
        return [
            c["id"]
            for _, c in store.all("customer")
            if c.get("email") == email and not c.get("deleted")
        ]


def test_a_retry_without_request_id_after_the_provider_failed_completes_the_first_account(
    world: World,
) -> None:
    email = f"{unique('retry')}@example.com"
    dead = StripeProvider("sk_test_x", f"http://127.0.0.1:{free_port()}", max_network_retries=0)
    with grpc_server(world.deps, app.servicers(world.deps, dead)) as port:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.RpcError) as err:
                create(ch, email, name="Ada")
            assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    [pending] = accounts_with(world, email)
    assert pending.stripe_customer_id == ""
    made = create(world.channel, email, name="Ada")
    assert made.account_id == pending.id and made.id.startswith("cus_")
    assert [a.id for a in accounts_with(world, email)] == [pending.id]
    assert stripe_customers_with(world, email) == [made.id]


def test_a_retry_without_request_id_after_the_answer_was_lost_is_the_same_customer(
    world: World,
) -> None:
    """The provider created the customer but answered after our client gave up (the commit
    of its id never happened); the retry finds the account and the one Stripe customer."""
    email = f"{unique('lost')}@example.com"
    stall = world.sandbox.stalls.add("POST", "/v1/customers", seconds=5.0, after=True)
    with pytest.raises(grpc.RpcError) as err:
        create(world.channel, email, name="Lost")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    stall.release.set()
    made = create(world.channel, email, name="Lost")
    again = create(world.channel, email.upper(), name="Lost")  # the e-mail in any case
    assert again.id == made.id
    assert len(accounts_with(world, email)) == 1
    assert stripe_customers_with(world, email) == [made.id]


@pytest.fixture
def pg_world(pg_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """The world on PostgreSQL only: concurrency is proven there (SQLite writes one at a time)."""
    w = start_world(pg_url, tmp_path, deliver=False)
    yield w
    w.stop()


def test_concurrent_creates_without_request_id_make_one_customer(pg_world: World) -> None:
    world = pg_world
    email = f"{unique('race')}@example.com"
    answers: list[str] = []
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def one() -> None:
        # Its own connection: a real concurrent client.
        with grpc.insecure_channel(world.grpc_target) as ch:
            start.wait()
            try:
                answers.append(create(ch, email, name="Race").id)
            except grpc.RpcError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(set(answers)) == 1 and len(answers) == 8
    assert len(accounts_with(world, email)) == 1
    assert stripe_customers_with(world, email) == answers[:1]


def test_another_request_with_the_email_is_refused_and_creates_nothing(world: World) -> None:
    email = f"{unique('taken')}@example.com"
    first = create(world.channel, email, name="First")
    with pytest.raises(grpc.RpcError) as err:
        create(world.channel, email, name="Second")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(err.value) == "CUSTOMER_EMAIL_TAKEN"
    assert error_metadata(err.value)["customer_id"] == first.id
    assert len(accounts_with(world, email)) == 1
    # With a request_id the caller asks for another customer with the same e-mail.
    other = customers(world.channel).CreateCustomer(
        customer_pb2.CreateCustomerRequest(email=email, name="Second", request_id=unique("r")),
        metadata=SERVICE_MD,
    )
    assert other.id != first.id
    assert len(accounts_with(world, email)) == 2


def test_a_deleted_customers_email_makes_a_new_customer(world: World) -> None:
    email = f"{unique('gone')}@example.com"
    first = create(world.channel, email, name="Gone")
    customers(world.channel).DeleteCustomer(
        customer_pb2.DeleteCustomerRequest(customer_id=first.id), metadata=SERVICE_MD
    )
    second = create(world.channel, email, name="Gone")
    assert second.id != first.id and second.account_id != first.account_id
    assert create(world.channel, email, name="Gone").id == second.id
    assert stripe_customers_with(world, email) == [second.id]


def test_a_failed_create_names_the_saved_account_and_how_to_finish_it(world: World) -> None:
    """The provider down after the account was saved: the error names the billing account
    (`account_id`), and says how to finish it for each kind of key: retry with the request_id,
    send the same body (the e-mail), or, with neither, not to create it again (a retry would
    make a second customer: nothing identifies the first)."""
    dead = StripeProvider("sk_test_x", f"http://127.0.0.1:{free_port()}", max_network_retries=0)
    keyed_email = f"{unique('keyed')}@example.com"
    cases = [
        (customer_pb2.CreateCustomerRequest(name="Nomail"), "do not create it again"),
        (customer_pb2.CreateCustomerRequest(email=keyed_email), "send the same request again"),
        (
            customer_pb2.CreateCustomerRequest(name="Keyed", request_id=unique("rid")),
            "retry with the same request_id",
        ),
    ]
    with grpc_server(world.deps, app.servicers(world.deps, dead)) as port:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            for request, how in cases:
                with pytest.raises(grpc.RpcError) as err:
                    customers(ch).CreateCustomer(request, metadata=SERVICE_MD, timeout=30)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
                assert how in (err.value.details() or "")
                saved = error_metadata(err.value)["account_id"]
                account = account_pb2_grpc.AccountServiceStub(world.channel).GetAccount(
                    account_pb2.GetAccountRequest(account=saved), metadata=SERVICE_MD
                )
                assert account.name == request.name and account.stripe_customer_id == ""


def test_once_the_first_customer_s_email_changed_another_request_makes_a_new_one(
    world: World,
) -> None:
    """The e-mail's key still names the first customer after UpdateCustomer moved it to
    another e-mail: the same request still answers that customer (a late retry), but another
    request is no longer CUSTOMER_EMAIL_TAKEN (no customer holds the e-mail): it makes one."""
    email = f"{unique('moved')}@example.com"
    first = create(world.channel, email, name="First")
    customers(world.channel).UpdateCustomer(
        customer_pb2.UpdateCustomerRequest(
            customer_id=first.id, email=f"{unique('elsewhere')}@example.com"
        ),
        metadata=SERVICE_MD,
    )
    assert create(world.channel, email, name="First").id == first.id
    second = create(world.channel, email, name="Second")
    assert second.id != first.id and second.email == email
    assert create(world.channel, email, name="Second").id == second.id
    assert [a.id for a in accounts_with(world, email)] == [second.account_id]
