"""CustomerService and the account's provider customer over real gRPC, against the sandbox,
on SQLite and PostgreSQL: the provider is called after the commit and a retry resumes."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import (
    account_pb2,
    account_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from tests.accounts.support import create, error_metadata, unique
from tests.checkout.support import World, start_world
from tests.conftest import SERVICE_MD
from tests.devstack import free_port, grpc_server
from tests.helpers import error_reason, keyed
from tollbooth import app
from tollbooth.provider.client import StripeProvider


@pytest.fixture
def world(database_url: str, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    w = start_world(database_url, tmp_path, deliver=False)
    yield w
    w.stop()


def customers(channel: grpc.Channel) -> customer_pb2_grpc.CustomerServiceStub:
    return customer_pb2_grpc.CustomerServiceStub(channel)


def remote(world: World, customer_id: str) -> dict:  # type: ignore[type-arg]
    return world.stripe.v1.customers.retrieve(customer_id).to_dict()  # type: ignore[no-any-return]


def test_account_update_follows_at_the_provider_customer(world: World) -> None:
    made = customers(world.channel).CreateCustomer(
        customer_pb2.CreateCustomerRequest(
            email="before@example.com", name="Before", metadata={"tier": "a", "gone": "x"}
        ),
        metadata=SERVICE_MD,
    )
    stub = account_pb2_grpc.AccountServiceStub(world.channel)
    stub.UpdateAccount(
        keyed(
            account_pb2.UpdateAccountRequest(
                account=account_pb2.Account(
                    id=made.account_id,
                    email="after@example.com",
                    name="After",
                    metadata={"tier": "b"},
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["email", "name", "metadata"]),
            )
        ),
        metadata=SERVICE_MD,
    )
    there = remote(world, made.id)
    assert (there["email"], there["name"]) == ("after@example.com", "After")
    assert there["metadata"] == {"tier": "b", "billing_account_id": made.account_id}


def test_account_without_customer_gets_none_on_update(world: World) -> None:
    made = create(world.channel, alias=unique("nocus"), email="n@example.com")
    updated = account_pb2_grpc.AccountServiceStub(world.channel).UpdateAccount(
        keyed(
            account_pb2.UpdateAccountRequest(
                account=account_pb2.Account(id=made.id, name="Still none")
            )
        ),
        metadata=SERVICE_MD,
    )
    assert updated.stripe_customer_id == ""
    listed = world.stripe.v1.customers.list(params={"email": "n@example.com"})
    assert listed.data == []


def test_checkout_customer_is_the_accounts_and_follows_updates(world: World) -> None:
    world.price(lookup := unique("plan"))
    alias = unique("buyer")
    token = token_pb2_grpc.TokenServiceStub(world.channel).IssueToken(
        token_pb2.IssueTokenRequest(
            principal_id=alias, scopes=["checkout"], email="buyer@example.com"
        ),
        metadata=SERVICE_MD,
    )
    world.buy(token.access_token, lookup)
    stub = account_pb2_grpc.AccountServiceStub(world.channel)
    account = stub.GetAccount(account_pb2.GetAccountRequest(account=alias), metadata=SERVICE_MD)
    assert account.stripe_customer_id.startswith("cus_")
    stub.UpdateAccount(
        keyed(
            account_pb2.UpdateAccountRequest(
                account=account_pb2.Account(id=alias, email="moved@example.com")
            )
        ),
        metadata=SERVICE_MD,
    )
    there = remote(world, account.stripe_customer_id)
    assert there["email"] == "moved@example.com"
    assert there["metadata"]["billing_account_id"] == account.id


def test_customer_create_resumes_after_the_provider_failed(world: World) -> None:
    """The account is committed before the provider call; a retry with the same request_id
    creates the customer and answers it, and no second account appears."""
    dead = StripeProvider("sk_test_x", f"http://127.0.0.1:{free_port()}", max_network_retries=0)
    with grpc_server(world.deps, app.servicers(world.deps, dead)) as port:
        key = unique("req")
        email = f"{unique('resume')}@example.com"
        request = customer_pb2.CreateCustomerRequest(email=email, name="Resumed", request_id=key)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.RpcError) as err:
                customers(ch).CreateCustomer(request, metadata=SERVICE_MD, timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    pending = account_pb2_grpc.AccountServiceStub(world.channel).ListAccounts(
        account_pb2.ListAccountsRequest(email=email), metadata=SERVICE_MD
    )
    assert [a.stripe_customer_id for a in pending.accounts] == [""]
    made = customers(world.channel).CreateCustomer(request, metadata=SERVICE_MD)
    assert made.id.startswith("cus_") and made.account_id == pending.accounts[0].id
    assert remote(world, made.id)["email"] == email


def test_update_customer_merges_metadata_and_keeps_unnamed_fields(world: World) -> None:
    made = customers(world.channel).CreateCustomer(
        customer_pb2.CreateCustomerRequest(
            email="m@example.com", phone="+1234567890", metadata={"a": "1", "b": "2"}
        ),
        metadata=SERVICE_MD,
    )
    updated = customers(world.channel).UpdateCustomer(
        customer_pb2.UpdateCustomerRequest(
            customer_id=made.id, description="Now described", metadata={"a": "", "c": "3"}
        ),
        metadata=SERVICE_MD,
    )
    assert (updated.email, updated.phone, updated.description) == (
        "m@example.com",
        "+1234567890",
        "Now described",
    )
    assert dict(updated.metadata) == {"b": "2", "c": "3"}
    there = remote(world, made.id)
    assert there["metadata"] == {"b": "2", "c": "3", "billing_account_id": made.account_id}
    assert there["description"] == "Now described"


def test_bad_customer_input_is_refused_and_creates_nothing(world: World) -> None:
    before = world.stripe.v1.customers.list(params={"limit": 100}).data
    for request, field in (
        (customer_pb2.CreateCustomerRequest(email="nope"), "email"),
        (customer_pb2.CreateCustomerRequest(phone="call me"), "phone"),
        (customer_pb2.CreateCustomerRequest(environment="staging"), "environment"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            customers(world.channel).CreateCustomer(request, metadata=SERVICE_MD)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
    assert len(world.stripe.v1.customers.list(params={"limit": 100}).data) == len(before)


def test_a_negative_limit_is_refused_naming_limit_the_field_the_request_has(
    world: World,
) -> None:
    """ListCustomers pages by seed 003's `limit`: its error names that field, not `page_size`
    (which ListCustomersRequest does not have)."""
    with pytest.raises(grpc.RpcError) as err:
        customers(world.channel).ListCustomers(
            customer_pb2.ListCustomersRequest(limit=-1), metadata=SERVICE_MD
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "INVALID_ARGUMENT"
    assert error_metadata(err.value) == {"field": "limit"}
    assert "limit" in (err.value.details() or "")


def test_an_update_that_finds_the_customer_deleted_at_stripe_answers_not_found(
    world: World,
) -> None:
    """A customer deleted at Stripe itself (the dashboard): the update's sync finds it gone and
    records it deleted, so the update must not answer it as a live customer that GetCustomer
    then does not know; it is NOT_FOUND like every later call."""
    made = customers(world.channel).CreateCustomer(
        customer_pb2.CreateCustomerRequest(email=f"{unique('gone')}@example.com"),
        metadata=SERVICE_MD,
    )
    world.stripe.v1.customers.delete(made.id)
    with pytest.raises(grpc.RpcError) as err:
        customers(world.channel).UpdateCustomer(
            customer_pb2.UpdateCustomerRequest(customer_id=made.id, name="Zombie"),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(err.value) == "NOT_FOUND"
    with pytest.raises(grpc.RpcError) as err:
        customers(world.channel).GetCustomer(
            customer_pb2.GetCustomerRequest(customer_id=made.id), metadata=SERVICE_MD
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_subscription_status_of_an_unknown_email_is_not_found(world: World) -> None:
    with pytest.raises(grpc.RpcError) as err:
        customers(world.channel).GetCustomerSubscription(
            customer_pb2.GetCustomerSubscriptionRequest(customerEmail="nobody@example.com"),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        customers(world.channel).GetCustomerSubscription(
            customer_pb2.GetCustomerSubscriptionRequest(), metadata=SERVICE_MD
        )
    assert error_reason(err.value) == "FIELD_REQUIRED"


def test_an_account_made_by_create_customer_gets_tokens_by_its_id(world: World) -> None:
    made = customers(world.channel).CreateCustomer(
        customer_pb2.CreateCustomerRequest(email="idonly@example.com"), metadata=SERVICE_MD
    )
    stub = token_pb2_grpc.TokenServiceStub(world.channel)
    issued = stub.IssueToken(
        token_pb2.IssueTokenRequest(principal_id=made.account_id), metadata=SERVICE_MD
    )
    assert issued.billing_account_id == made.account_id and not issued.account_created
    with pytest.raises(grpc.RpcError) as err:  # an id no account has is still no principal
        stub.IssueToken(
            token_pb2.IssueTokenRequest(principal_id="acct_000000000000000000000000"),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metadata_the_provider_would_refuse_is_400_before_anything_is_written(
    world: World,
) -> None:
    """The provider customer's metadata is the account's plus `billing_account_id`, and Stripe
    holds at most 50 keys, none with a square bracket: an account whose metadata could never
    reach its customer is refused up front (INVALID_ARGUMENT, field metadata), on create and on
    update, instead of being committed first and then failing every sync (and so every
    checkout of the account) with PROVIDER_REQUEST_INVALID."""
    stub = customers(world.channel)
    accounts = account_pb2_grpc.AccountServiceStub(world.channel)
    full = {f"k{i}": "v" for i in range(50)}
    provider_before = len(world.stripe.v1.customers.list(params={"limit": 100}).data)
    listed_before = len(
        accounts.ListAccounts(
            account_pb2.ListAccountsRequest(page_size=100), metadata=SERVICE_MD
        ).accounts
    )
    for metadata in (full, {"a[b]": "v"}, {"billing_account_id": "acct_someone_else"}):
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateCustomer(
                customer_pb2.CreateCustomerRequest(email="meta@example.com", metadata=metadata),
                metadata=SERVICE_MD,
            )
        assert error_reason(err.value) == "INVALID_ARGUMENT", metadata
        assert error_metadata(err.value) == {"field": "metadata"}
        with pytest.raises(grpc.RpcError) as err:
            create(world.channel, alias=unique("meta"), metadata=metadata)
        assert error_reason(err.value) == "INVALID_ARGUMENT", metadata
    assert len(world.stripe.v1.customers.list(params={"limit": 100}).data) == provider_before
    after = accounts.ListAccounts(
        account_pb2.ListAccountsRequest(page_size=100), metadata=SERVICE_MD
    ).accounts
    assert len(after) == listed_before

    # One key short of the provider's limit is fine, and reaches the provider.
    most = {f"k{i}": "v" for i in range(49)}
    made = stub.CreateCustomer(
        customer_pb2.CreateCustomerRequest(email="most@example.com", metadata=most),
        metadata=SERVICE_MD,
    )
    assert len(remote(world, made.id)["metadata"]) == 50
    # A 50th key of its own, or a bracketed one, is refused and changes nothing here.
    for extra in ({"one": "more"}, {"x[]": "v"}):
        for update in (
            lambda: stub.UpdateCustomer(
                customer_pb2.UpdateCustomerRequest(customer_id=made.id, metadata=extra),  # noqa: B023
                metadata=SERVICE_MD,
            ),
            lambda: accounts.UpdateAccount(
                keyed(
                    account_pb2.UpdateAccountRequest(
                        account=account_pb2.Account(
                            id=made.account_id,
                            metadata={**most, **extra},  # noqa: B023
                        ),
                        update_mask=field_mask_pb2.FieldMask(paths=["metadata"]),
                    )
                ),
                metadata=SERVICE_MD,
            ),
        ):
            with pytest.raises(grpc.RpcError) as err:
                update()
            assert error_reason(err.value) == "INVALID_ARGUMENT", extra
    kept = stub.GetCustomer(
        customer_pb2.GetCustomerRequest(customer_id=made.id), metadata=SERVICE_MD
    )
    assert dict(kept.metadata) == most
    # The account still follows at the provider: a later update syncs.
    stub.UpdateCustomer(
        customer_pb2.UpdateCustomerRequest(customer_id=made.id, name="Still synced"),
        metadata=SERVICE_MD,
    )
    assert remote(world, made.id)["name"] == "Still synced"


def test_a_phone_longer_than_stripe_takes_is_400_before_anything_is_written(
    world: World,
) -> None:
    """Stripe takes a customer phone of at most 20 characters: a longer one is refused here
    (INVALID_ARGUMENT naming `phone`), not committed and then refused by the provider on every
    sync of the account."""
    stub = customers(world.channel)
    long_phone = "+1 (234) 567-8901 2345"  # 22 characters of the allowed ones
    accounts = account_pb2_grpc.AccountServiceStub(world.channel)
    listed = accounts.ListAccounts(
        account_pb2.ListAccountsRequest(page_size=100), metadata=SERVICE_MD
    ).accounts
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateCustomer(
            customer_pb2.CreateCustomerRequest(email="phone@example.com", phone=long_phone),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_metadata(err.value).get("field") == "phone"
    after = accounts.ListAccounts(
        account_pb2.ListAccountsRequest(page_size=100), metadata=SERVICE_MD
    ).accounts
    assert len(after) == len(listed)

    made = stub.CreateCustomer(
        customer_pb2.CreateCustomerRequest(email="phone@example.com", phone="+1 (234) 567-8901"),
        metadata=SERVICE_MD,
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateCustomer(
            customer_pb2.UpdateCustomerRequest(customer_id=made.id, phone=long_phone),
            metadata=SERVICE_MD,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_metadata(err.value).get("field") == "phone"
    kept = stub.GetCustomer(
        customer_pb2.GetCustomerRequest(customer_id=made.id), metadata=SERVICE_MD
    )
    assert kept.phone == "+1 (234) 567-8901" == remote(world, made.id)["phone"]


def test_two_concurrent_updates_leave_the_provider_customer_at_the_newest(world: World) -> None:
    """Two tabs update one customer: A commits first, but its provider update is held (a slow
    Stripe) until B has committed, synced and answered; A's stale update then lands at the
    provider last. The newest change must still win there: A, seeing that the account moved
    on while it was sending, sends the newest state again (under a key of its own: B's key
    would only replay B's answer)."""
    import threading

    stub = customers(world.channel)
    made = stub.CreateCustomer(
        customer_pb2.CreateCustomerRequest(email="tabs@example.com", name="Start"),
        metadata=SERVICE_MD,
    )
    held = world.sandbox.stalls.add("POST", f"/v1/customers/{made.id}", seconds=20)
    errors_seen: list[BaseException] = []

    def tab_a() -> None:
        try:
            stub.UpdateCustomer(
                customer_pb2.UpdateCustomerRequest(customer_id=made.id, name="Tab A"),
                metadata=SERVICE_MD,
                timeout=30,
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors_seen.append(exc)

    first = threading.Thread(target=tab_a)
    first.start()
    try:
        assert held.entered.wait(10), "tab A's provider update never reached the sandbox"
        stub.UpdateCustomer(
            customer_pb2.UpdateCustomerRequest(customer_id=made.id, name="Tab B"),
            metadata=SERVICE_MD,
            timeout=30,
        )
        assert remote(world, made.id)["name"] == "Tab B"
    finally:
        held.release.set()
        first.join(30)
    assert errors_seen == []
    ours = stub.GetCustomer(
        customer_pb2.GetCustomerRequest(customer_id=made.id), metadata=SERVICE_MD
    )
    assert ours.name == "Tab B"
    assert remote(world, made.id)["name"] == "Tab B"


def test_a_replayed_update_answers_as_it_first_did_not_as_the_customer_is_now(
    world: World,
) -> None:
    """README: a replay gets the first call's response as it was. UpdateCustomer stored only
    the account and re-read the row, so a replay after a later update answered the later name."""
    stub = customers(world.channel)
    made = stub.CreateCustomer(
        customer_pb2.CreateCustomerRequest(email=f"{unique('replay')}@example.com", name="A"),
        metadata=SERVICE_MD,
    )

    def update(key: str, name: str, phone: str) -> customer_pb2.Customer:
        return stub.UpdateCustomer(
            customer_pb2.UpdateCustomerRequest(
                customer_id=made.id, name=name, phone=phone, request_id=key
            ),
            metadata=SERVICE_MD,
        )

    first = update("p1", "B", "+15550001")
    assert (first.name, first.phone) == ("B", "+15550001")
    later = update("p2", "C", "+15550002")
    assert (later.name, later.phone) == ("C", "+15550002")
    assert update("p1", "B", "+15550001") == first
    assert remote(world, made.id)["name"] == "C"  # the replay changed nothing
    with pytest.raises(grpc.RpcError) as err:
        update("p1", "Other", "+15550001")
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"


def test_an_update_key_stored_before_the_customer_answer_still_replays(world: World) -> None:
    """A key stored by the earlier UpdateCustomer (the account alone, under the plain scope)
    is still that request: its replay is not applied again and answers the customer now."""
    from tollbooth import idempotency
    from tollbooth.rpc.fingerprint import fingerprint

    stub = customers(world.channel)
    made = stub.CreateCustomer(
        customer_pb2.CreateCustomerRequest(email=f"{unique('legacy')}@example.com", name="A"),
        metadata=SERVICE_MD,
    )
    request = customer_pb2.UpdateCustomerRequest(customer_id=made.id, name="B", request_id="old")
    with world.deps.db.transaction() as session:
        scope = "service|UpdateCustomerRequest"
        assert idempotency.claim(session, scope, "old", fingerprint(request)).fresh
        stored = account_pb2.Account(id=made.account_id, name="B")
        idempotency.complete(session, scope, "old", stored.SerializeToString())
    again = stub.UpdateCustomer(request, metadata=SERVICE_MD)
    assert (again.id, again.name) == (made.id, "A")  # not applied again: the row says it was
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateCustomer(
            customer_pb2.UpdateCustomerRequest(customer_id=made.id, name="C", request_id="old"),
            metadata=SERVICE_MD,
        )
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"
