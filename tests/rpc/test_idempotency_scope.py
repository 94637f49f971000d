"""request_id belongs to its caller, and a replay returns the stored response as it was."""

from __future__ import annotations

import pytest

from billing.v1 import catalog_pb2
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
