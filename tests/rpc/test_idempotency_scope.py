"""request_id belongs to its caller, and a replay returns the stored response as it was."""

from __future__ import annotations

import uuid

import pytest

from billing.v1 import catalog_pb2, catalog_pb2_grpc
from tollbooth.auth.caller import SERVICE, Caller, current_caller
from tollbooth.auth.tokens import TokenClaims
from tollbooth.errors import DomainError, invalid
from tollbooth.rpc.servicer import Servicer


def bearer(account: str) -> Caller:
    import datetime as dt

    claims = TokenClaims(
        account, "p-" + account, "u", frozenset({"checkout"}), dt.datetime.now(dt.UTC)
    )
    return Caller("bearer", claims)


def call(servicer: Servicer, caller: Caller, request, answer: str):  # type: ignore[no-untyped-def]
    token = current_caller.set(caller)
    try:
        return servicer.write(
            request, catalog_pb2.Product, lambda session: catalog_pb2.Product(name=answer)
        )
    finally:
        current_caller.reset(token)


def test_two_accounts_never_share_a_request_id(deps) -> None:  # type: ignore[no-untyped-def]
    servicer = Servicer(deps)
    a = call(
        servicer,
        bearer("acct_a"),
        catalog_pb2.ArchiveProductRequest(product_id="x", request_id="k"),
        "A",
    )
    # Account B reuses A's key, even with other parameters: its own fresh request, not A's answer.
    b = call(
        servicer,
        bearer("acct_b"),
        catalog_pb2.ArchiveProductRequest(product_id="y", request_id="k"),
        "B",
    )
    svc = call(
        servicer, SERVICE, catalog_pb2.ArchiveProductRequest(product_id="z", request_id="k"), "S"
    )
    assert (a.name, b.name, svc.name) == ("A", "B", "S")


def test_a_replay_returns_the_stored_response_not_a_new_one(deps) -> None:  # type: ignore[no-untyped-def]
    servicer = Servicer(deps)
    request = catalog_pb2.ArchiveProductRequest(product_id="x", request_id="k")
    first = call(servicer, bearer("acct_a"), request, "first")
    again = call(servicer, bearer("acct_a"), request, "would be different now")
    assert again == first


def test_the_same_key_with_other_parameters_is_refused_for_the_same_caller(deps) -> None:  # type: ignore[no-untyped-def]
    servicer = Servicer(deps)
    call(
        servicer,
        bearer("acct_a"),
        catalog_pb2.ArchiveProductRequest(product_id="x", request_id="k"),
        "A",
    )
    with pytest.raises(DomainError) as exc:
        call(
            servicer,
            bearer("acct_a"),
            catalog_pb2.ArchiveProductRequest(product_id="y", request_id="k"),
            "A",
        )
    assert exc.value.reason == "IDEMPOTENCY_KEY_REUSED"


def test_a_failed_effect_leaves_the_key_free(deps) -> None:  # type: ignore[no-untyped-def]
    servicer = Servicer(deps)
    request = catalog_pb2.ArchiveProductRequest(product_id="x", request_id="k")

    def boom(session):  # type: ignore[no-untyped-def]
        raise invalid("the effect failed")

    token = current_caller.set(SERVICE)
    try:
        with pytest.raises(DomainError):
            servicer.write(request, catalog_pb2.Product, boom)
    finally:
        current_caller.reset(token)
    assert call(servicer, SERVICE, request, "retried").name == "retried"


def test_the_readme_names_every_rpc_whose_request_id_is_optional() -> None:
    """README's "Idempotency" section lists the mutating RPCs that take a request_id without
    requiring it: exactly those the contract marks so (no more, no fewer)."""
    import re
    from pathlib import Path

    from tollbooth.rpc.rules import contract_services
    from tollbooth.rpc.servicer import requires_request_id

    optional = {
        method.name
        for service in contract_services()
        for method in service.methods
        if "request_id" in method.input_type.fields_by_name
        and not requires_request_id(method.input_type)
    }
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Idempotency (`request_id`)", 1)[1].split("\n### ", 1)[0]
    sentence = section.split("except", 1)[1].split("Where a REST body", 1)[0]
    named = set(re.findall(r"`([A-Z][A-Za-z]+)`", sentence))
    assert named == optional


@pytest.mark.parametrize("blank", [" ", "   ", "\t", " \n "])
def test_a_blank_request_id_is_missing_and_changes_nothing(grpc_port, blank) -> None:  # type: ignore[no-untyped-def]
    """A request_id of spaces is no key: the RPCs that require one refuse it as missing
    (FIELD_REQUIRED) on every path (PostgreSQL's fast ones too), one that takes it optionally
    as invalid (FIELD_INVALID), and nothing is done. A key with a tab or a line break holds a
    control character, which the edge refuses first in every one-line field (FIELD_INVALID)."""
    import grpc

    from billing.v1 import account_pb2, account_pb2_grpc, credit_pb2, credit_pb2_grpc
    from tests.conftest import SERVICE_MD
    from tests.helpers import error_reason

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        credits = credit_pb2_grpc.CreditServiceStub(channel)
        catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        account = f"blank-{uuid.uuid4().hex[:8]}"
        account_pb2_grpc.AccountServiceStub(channel).CreateAccount(
            account_pb2.CreateAccountRequest(name="blank", alias=account), metadata=SERVICE_MD
        )
        credits.GrantCredits(
            credit_pb2.GrantCreditsRequest(
                account=account, credit_type="u", amount="5", request_id="first"
            ),
            metadata=SERVICE_MD,
        )
        # GrantCredits' key is optional (seed 001 sends none): a blank one is used, so invalid.
        with pytest.raises(grpc.RpcError) as err:
            credits.GrantCredits(
                credit_pb2.GrantCreditsRequest(
                    account=account, credit_type="u", amount="5", request_id=blank
                ),
                metadata=SERVICE_MD,
            )
        assert error_reason(err.value) == "FIELD_INVALID"
        refused = {
            "debit": lambda: credits.DebitCredits(
                credit_pb2.DebitCreditsRequest(
                    account=account, credit_type="u", amount="1", request_id=blank
                ),
                metadata=SERVICE_MD,
            ),
            "reserve": lambda: credits.ReserveCredits(
                credit_pb2.ReserveCreditsRequest(
                    account=account, credit_type="u", amount="1", request_id=blank
                ),
                metadata=SERVICE_MD,
            ),
            "product": lambda: catalog.CreateProduct(
                catalog_pb2.CreateProductRequest(
                    product=catalog_pb2.Product(name=f"blank {account}"), request_id=blank
                ),
                metadata=SERVICE_MD,
            ),
        }
        for name, attempt in refused.items():
            with pytest.raises(grpc.RpcError) as err:
                attempt()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            expected = "FIELD_REQUIRED" if blank.strip(" ") == "" else "FIELD_INVALID"
            assert error_reason(err.value) == expected, name
        balance = credits.GetBalance(
            credit_pb2.GetBalanceRequest(account=account, type="u"), metadata=SERVICE_MD
        )
        assert (balance.balance, balance.reserved) == ("5", "0")
        names = [
            p.name
            for p in catalog.ListProducts(
                catalog_pb2.ListProductsRequest(page_size=1000), metadata=SERVICE_MD
            ).products
        ]
        assert f"blank {account}" not in names
