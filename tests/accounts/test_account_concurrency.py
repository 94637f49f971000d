"""Concurrent creates of one alias on PostgreSQL, from real concurrent gRPC clients: exactly
one account, and every loser is told its id."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import create_engine, func, select

from billing.v1 import (
    account_pb2,
    account_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    checkout_pb2,
    checkout_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from tests.accounts.support import create, error_metadata, unique
from tests.conftest import SERVICE_MD, WEBHOOK_SECRET, make_env
from tests.devstack import free_port, grpc_replicas, grpc_server
from tests.helpers import all_at_once, error_reason, outcome
from tollbooth.app import Deps
from tollbooth.config import Settings
from tollbooth.db import normalize_url
from tollbooth.db.models import BillingAccount
from tollbooth.sandbox.app import start_sandbox
from tollbooth.sandbox.config import SandboxConfig

pytestmark = pytest.mark.postgres

CLIENTS = 8


def test_concurrent_creates_of_one_alias_make_one_account(pg_url: str) -> None:
    deps = Deps.build(Settings.from_env(make_env(pg_url)))
    with grpc_server(deps) as port:
        barrier = threading.Barrier(CLIENTS)

        def attempt(n: int) -> tuple[str, str]:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = account_pb2_grpc.AccountServiceStub(ch)
                grpc.channel_ready_future(ch).result(timeout=10)
                barrier.wait(timeout=30)
                try:
                    made = stub.CreateAccount(
                        account_pb2.CreateAccountRequest(alias="contended", name=f"client {n}"),
                        metadata=SERVICE_MD,
                        timeout=30,
                    )
                    return ("OK", made.id)
                except grpc.RpcError as err:
                    assert error_reason(err) == "ACCOUNT_ALIAS_TAKEN"
                    return (err.code().name, error_metadata(err)["account_id"])

        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                results = list(pool.map(attempt, range(CLIENTS)))
            with deps.db.transaction(readonly=True) as session:
                stored = session.scalar(
                    select(func.count())
                    .select_from(BillingAccount)
                    .where(BillingAccount.principal_id == "contended")
                )
        finally:
            deps.db.dispose()
    winners = [r for r in results if r[0] == "OK"]
    assert len(winners) == 1
    assert sorted({code for code, _ in results}) == ["ALREADY_EXISTS", "OK"]
    assert {account_id for _, account_id in results} == {winners[0][1]}
    assert stored == 1


# Over two `serve-grpc` replicas (PostgreSQL), with the Stripe sandbox behind them.

ROUNDS = 10
FILL_ROUNDS = 20  # the fill race needs its two writes to overlap: most rounds do


@pytest.fixture(scope="module")
def shop_replicas(pg_shared_url: str, tmp_path_factory) -> Iterator[list[grpc.Channel]]:  # type: ignore[no-untyped-def]
    """Two replicas on the shared database whose provider is one sandbox: a channel to each."""
    sandbox = start_sandbox(
        SandboxConfig(
            webhook_secret=WEBHOOK_SECRET,
            port=free_port(),
            db_path=tmp_path_factory.mktemp("sandbox") / "sandbox.db",
        )
    )
    try:
        env = make_env(pg_shared_url, BILLING_SANDBOX_PORT=str(sandbox.config.port))
        with grpc_replicas(env) as ports:
            channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in ports]
            try:
                yield channels
            finally:
                for ch in channels:
                    ch.close()
    finally:
        sandbox.stop()


def stored_version(pg_url: str, account_id: str) -> int:
    engine = create_engine(normalize_url(pg_url))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(BillingAccount.version).where(BillingAccount.id == account_id)
                ).scalar_one()
            )
    finally:
        engine.dispose()


def update(channel: grpc.Channel, account_id: str, **fields: str) -> account_pb2.Account:
    return account_pb2_grpc.AccountServiceStub(channel).UpdateAccount(
        account_pb2.UpdateAccountRequest(
            account=account_pb2.Account(id=account_id, **fields),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
            request_id=uuid.uuid4().hex,
        ),
        metadata=SERVICE_MD,
        timeout=30,
    )


def test_concurrent_archives_over_two_replicas_answer_the_one_archive(shop_replicas) -> None:  # type: ignore[no-untyped-def]
    for _ in range(ROUNDS // 2):
        made = create(shop_replicas[0], alias=unique("arch"), name="to archive")
        answers = all_at_once(
            [
                lambda i=i, made=made: account_pb2_grpc.AccountServiceStub(
                    shop_replicas[i % 2]
                ).ArchiveAccount(
                    account_pb2.ArchiveAccountRequest(account=made.id, request_id=unique("r")),
                    metadata=SERVICE_MD,
                    timeout=30,
                )
                for i in range(CLIENTS)
            ]
        )
        assert [outcome(a) for a in answers] == ["OK"] * CLIENTS
        now = account_pb2_grpc.AccountServiceStub(shop_replicas[1]).GetAccount(
            account_pb2.GetAccountRequest(account=made.id), metadata=SERVICE_MD
        )
        assert now.archived
        assert {a.SerializeToString(deterministic=True) for a in answers} == {  # type: ignore[union-attr]
            now.SerializeToString(deterministic=True)
        }


def test_two_concurrent_updates_each_bump_the_version(shop_replicas, pg_shared_url) -> None:  # type: ignore[no-untyped-def]
    """Every change the Stripe customer must learn bumps the version once: two changes racing
    on two replicas are two versions (a sync that acknowledged the first must not take the
    second for sent), and both fields are kept."""
    one, two = shop_replicas
    for _ in range(ROUNDS):
        made = create(one, alias=unique("ver"), name="before", email="before@example.com")
        start = stored_version(pg_shared_url, made.id)
        results = all_at_once(
            [
                lambda made=made: update(one, made.id, name="after"),
                lambda made=made: update(two, made.id, email="after@example.com"),
            ]
        )
        assert [outcome(r) for r in results] == ["OK", "OK"]
        now = account_pb2_grpc.AccountServiceStub(one).GetAccount(
            account_pb2.GetAccountRequest(account=made.id), metadata=SERVICE_MD
        )
        assert (now.name, now.email) == ("after", "after@example.com")
        assert stored_version(pg_shared_url, made.id) == start + 2


def test_concurrent_customer_updates_merge_both_metadata_keys(shop_replicas) -> None:  # type: ignore[no-untyped-def]
    """UpdateCustomer merges metadata (Stripe's semantics): two updates naming different keys
    at once keep both, on every replica."""
    one, two = shop_replicas
    for _ in range(ROUNDS):
        customer = customer_pb2_grpc.CustomerServiceStub(one).CreateCustomer(
            customer_pb2.CreateCustomerRequest(email="c@example.com", request_id=unique("r")),
            metadata=SERVICE_MD,
            timeout=30,
        )
        results = all_at_once(
            [
                lambda ch=ch, key=key, cid=customer.id: customer_pb2_grpc.CustomerServiceStub(
                    ch
                ).UpdateCustomer(
                    customer_pb2.UpdateCustomerRequest(
                        customer_id=cid, metadata={key: "1"}, request_id=unique("r")
                    ),
                    metadata=SERVICE_MD,
                    timeout=30,
                )
                for ch, key in ((one, "first"), (two, "second"))
            ]
        )
        assert [outcome(r) for r in results] == ["OK", "OK"]
        got = customer_pb2_grpc.CustomerServiceStub(two).GetCustomer(
            customer_pb2.GetCustomerRequest(customer_id=customer.id), metadata=SERVICE_MD
        )
        assert dict(got.metadata) == {"first": "1", "second": "1"}


def test_a_token_filling_the_email_never_replaces_one_set_at_the_same_time(shop_replicas) -> None:  # type: ignore[no-untyped-def]
    """IssueToken gives an account without an e-mail the one it carries; an UpdateAccount
    setting the account's own e-mail at the same moment is never overwritten by it."""
    one, two = shop_replicas
    for _ in range(FILL_ROUNDS):
        made = create(one, alias=unique("fill"))
        results = all_at_once(
            [
                lambda made=made: update(one, made.id, email="own@example.com"),
                lambda made=made: token_pb2_grpc.TokenServiceStub(two).IssueToken(
                    token_pb2.IssueTokenRequest(
                        principal_id=made.alias, user_id="u", email="token@example.com"
                    ),
                    metadata=SERVICE_MD,
                    timeout=30,
                ),
            ]
        )
        assert [outcome(r) for r in results] == ["OK", "OK"]
        now = account_pb2_grpc.AccountServiceStub(two).GetAccount(
            account_pb2.GetAccountRequest(account=made.id), metadata=SERVICE_MD
        )
        assert now.email == "own@example.com"


def test_a_checkout_filling_the_email_never_replaces_one_set_at_the_same_time(
    shop_replicas,
) -> None:  # type: ignore[no-untyped-def]
    """As above, for CreateCheckoutSession's `customer_email`."""
    one, two = shop_replicas
    catalog = catalog_pb2_grpc.CatalogServiceStub(one)
    made_product = catalog.CreateProduct(
        catalog_pb2.CreateProductRequest(
            product=catalog_pb2.Product(name="fill"), request_id=unique("r")
        ),
        metadata=SERVICE_MD,
    )
    made_price = catalog.CreatePrice(
        catalog_pb2.CreatePriceRequest(
            price=catalog_pb2.Price(
                product_id=made_product.product_id,
                currency="usd",
                unit_amount=500,
                type=catalog_pb2.PRICE_TYPE_ONE_TIME,
            ),
            request_id=unique("r"),
        ),
        metadata=SERVICE_MD,
    )
    for _ in range(FILL_ROUNDS // 2):
        made = create(one, alias=unique("fill"))
        results = all_at_once(
            [
                lambda made=made: update(one, made.id, email="own@example.com"),
                lambda made=made: checkout_pb2_grpc.CheckoutServiceStub(two).CreateCheckoutSession(
                    checkout_pb2.CreateCheckoutSessionRequest(
                        account=made.id,
                        items=[checkout_pb2.CheckoutItem(catalog_price_id=made_price.price_id)],
                        success_url="https://app.example/done",
                        customer_email="buyer@example.com",
                        request_id=unique("r"),
                    ),
                    metadata=SERVICE_MD,
                    timeout=30,
                ),
            ]
        )
        assert [outcome(r) for r in results] == ["OK", "OK"]
        now = account_pb2_grpc.AccountServiceStub(two).GetAccount(
            account_pb2.GetAccountRequest(account=made.id), metadata=SERVICE_MD
        )
        assert now.email == "own@example.com"


def test_filling_an_email_does_not_deadlock_with_another_tabs_checkout_slot(pg_url: str) -> None:
    """Two tabs of one account open checkouts of one group at once; tab A also names a
    `customer_email` for an account with none, so it fills it under the account's row lock
    before claiming the group's slot. Tab B has already inserted the slot row (not yet
    committed), whose foreign key takes KEY SHARE on the account. The fill's lock must not
    conflict with KEY SHARE: a plain FOR UPDATE made B wait for A while A's claim waited
    for B's slot row, and PostgreSQL aborted one of them (deadlock detected)."""
    from tollbooth.accounts import repository as accounts
    from tollbooth.accounts.service import fill_email
    from tollbooth.checkout.repository import claim_slot
    from tollbooth.db import Database

    db_a, db_b = Database(pg_url), Database(pg_url)
    try:
        with db_a.transaction() as session:
            accounts.insert_if_absent(session, "two-tabs", None, None)
            found = accounts.by_principal(session, "two-tabs")
            assert found is not None
            account_id = found.id
        b_pid: list[int] = []
        b_done = threading.Event()
        b_error: list[BaseException] = []

        def tab_b() -> None:
            try:
                with db_b.transaction() as session:
                    b_pid.append(
                        session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
                    )
                    claim_slot(session, account_id, "plans", "chk_tab_b")
            except BaseException as exc:  # noqa: BLE001 - reported below
                b_error.append(exc)
            finally:
                b_done.set()

        with db_a.transaction() as session:
            account = accounts.by_id(session, account_id)
            assert account is not None
            fill_email(session, account, "tab-a@example.com")  # the row lock of the fill
            thread = threading.Thread(target=tab_b)
            thread.start()
            # Until B has inserted its slot row and is done, or is waiting on a lock.
            watcher = session.connection()
            while not b_done.is_set():
                if (
                    b_pid
                    and watcher.exec_driver_sql(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        (b_pid[0],),
                    ).scalar()
                ):
                    break
                b_done.wait(0.01)
            holder = claim_slot(session, account_id, "plans", "chk_tab_a")
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert b_error == []
        assert holder == "chk_tab_b"  # B's slot row was there first; A sees it committed
        with db_a.transaction(readonly=True) as session:
            stored = accounts.by_id(session, account_id)
            assert stored is not None and stored.email == "tab-a@example.com"
    finally:
        db_a.dispose()
        db_b.dispose()


def delete_customer(channel: grpc.Channel, customer_id: str, request_id: str = "") -> object:
    return customer_pb2_grpc.CustomerServiceStub(channel).DeleteCustomer(
        customer_pb2.DeleteCustomerRequest(customer_id=customer_id, request_id=request_id),
        metadata=SERVICE_MD,
        timeout=30,
    )


def test_concurrent_deletes_of_one_customer_delete_it_once(shop_replicas) -> None:  # type: ignore[no-untyped-def]
    """Two DeleteCustomer calls racing on two replicas: one deletes (deleted: true), the other
    is answered as a delete after it is: NOT_FOUND. With or without distinct request_ids."""
    one, two = shop_replicas
    for n in range(ROUNDS):
        customer = customer_pb2_grpc.CustomerServiceStub(one).CreateCustomer(
            customer_pb2.CreateCustomerRequest(email="d@example.com", request_id=unique("r")),
            metadata=SERVICE_MD,
            timeout=30,
        )
        keys = (unique("r"), unique("r")) if n % 2 else ("", "")
        results = all_at_once(
            [
                lambda ch=ch, key=key, cid=customer.id: delete_customer(ch, cid, key)
                for ch, key in zip((one, two), keys, strict=True)
            ]
        )
        assert sorted(outcome(r) for r in results) == ["NOT_FOUND/NOT_FOUND", "OK"]
        (won,) = [r for r in results if not isinstance(r, grpc.RpcError)]
        assert (won.id, won.deleted) == (customer.id, True)  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as again:  # a later delete answers the same
            delete_customer(two, customer.id)
        assert outcome(again.value) == "NOT_FOUND/NOT_FOUND"
