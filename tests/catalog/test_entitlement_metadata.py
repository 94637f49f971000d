"""The entitlement metadata of prices and products: boolean, metered, credit-backed; through the
RPCs (SQLite and PostgreSQL) and in catalog files, refused alike when malformed."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from billing.v1 import catalog_pb2
from tests.catalog.support import MONTHLY, price, product
from tests.helpers import error_reason
from tollbooth.catalog import spec
from tollbooth.catalog.fields import Entitlement
from tollbooth.db.models import Price
from tollbooth.errors import DomainError

E = catalog_pb2.Entitlement


def recurring(channel, **fields):  # type: ignore[no-untyped-def]
    return price(
        channel,
        product(channel).product_id,
        type=catalog_pb2.PRICE_TYPE_RECURRING,
        recurring=MONTHLY,
        **fields,
    )


def test_metered_and_credit_backed_entitlements_are_stored_and_normalised(channel, db):  # type: ignore[no-untyped-def]
    created = recurring(
        channel,
        entitlements=[
            E(feature="sso"),
            E(feature="calls", metric="api_calls", limit="01000"),
            E(feature="gen", credit_type="tokens", amount="2.50"),
        ],
    )
    assert [
        (e.feature, e.metric, e.limit, e.credit_type, e.amount) for e in created.entitlements
    ] == [
        ("sso", "", "", "", ""),
        ("calls", "api_calls", "1000", "", ""),
        ("gen", "", "", "tokens", "2.5"),
    ]
    with db.transaction(readonly=True) as session:
        stored = session.scalar(select(Price.entitlements).where(Price.id == created.price_id))
    # A boolean entitlement is stored exactly as before metered ones existed.
    assert stored[0] == {"feature": "sso", "value": ""}
    assert stored[1] == {"feature": "calls", "value": "", "metric": "api_calls", "limit": "1000"}


@pytest.mark.parametrize(
    ("entitlement", "reason"),
    [
        (E(feature="x", metric="api_calls"), "FIELD_REQUIRED"),
        (E(feature="x", limit="10"), "FIELD_REQUIRED"),
        (E(feature="x", metric="api calls!", limit="10"), "INVALID_ARGUMENT"),
        (E(feature="x", metric="m", limit="-1"), "AMOUNT_INVALID"),
        (E(feature="x", metric="m", limit="0"), "AMOUNT_INVALID"),
        (E(feature="x", metric="m", limit="1e3"), "AMOUNT_INVALID"),
        (E(feature="x", credit_type="tokens"), "FIELD_REQUIRED"),
        (E(feature="x", amount="1"), "FIELD_REQUIRED"),
        (E(feature="x", credit_type="to kens", amount="1"), "INVALID_ARGUMENT"),
        (E(feature="x", credit_type="t", amount="NaN"), "AMOUNT_INVALID"),
        (E(feature="x", metric="m", limit="1", credit_type="t", amount="1"), "INVALID_ARGUMENT"),
    ],
)
def test_a_malformed_entitlement_is_refused_and_nothing_is_created(
    channel, db, entitlement, reason
):  # type: ignore[no-untyped-def]
    with db.transaction(readonly=True) as session:
        before = len(session.scalars(select(Price.id)).all())
    with pytest.raises(grpc.RpcError) as err:
        recurring(channel, entitlements=[entitlement])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == reason
    with db.transaction(readonly=True) as session:
        assert len(session.scalars(select(Price.id)).all()) == before


def doc(*entitlements: object) -> dict:  # type: ignore[type-arg]
    return {
        "products": [
            {
                "key": "pro",
                "name": "Pro",
                "entitlements": list(entitlements),
                "prices": [{"lookup_key": "pro", "currency": "usd", "unit_amount": 900}],
            }
        ]
    }


def test_a_catalog_file_declares_every_kind():
    catalog = spec.parse(
        doc(
            "sso",
            {"feature": "calls", "metric": "api_calls", "limit": 5000},
            {"feature": "gen", "credit_type": "tokens", "amount": "0.5"},
        )
    )
    assert catalog.products[0].fields.entitlements == (
        Entitlement("sso"),
        Entitlement("calls", metric="api_calls", limit="5000"),
        Entitlement("gen", credit_type="tokens", amount="0.5"),
    )


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"feature": "calls", "metric": "api_calls"}, "FIELD_REQUIRED"),
        ({"feature": "gen", "credit_type": "tokens", "amount": "zero"}, "AMOUNT_INVALID"),
    ],
)
def test_a_catalog_file_is_held_to_the_rpc_rules(entry, reason):  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as exc:
        spec.parse(doc(entry))
    assert exc.value.reason == reason


def test_a_float_limit_in_a_catalog_file_is_a_spec_error():
    with pytest.raises(spec.SpecError):
        spec.parse(doc({"feature": "calls", "metric": "api_calls", "limit": 0.5}))
