"""The 503 PROVIDER_UNAVAILABLE message tells the caller what retry is safe: "retry with the
same request_id" only when the request carried one; without one (seed 003 sends none) it says
to retry, naming a request_id as what makes retries safe. The reason code is the same."""

from __future__ import annotations

import grpc
import pytest

from billing.v1 import payment_pb2
from tests.checkout.support import World
from tests.conftest import bearer_md
from tests.helpers import error_reason
from tests.payments.support import SEED_BODY, stub, token

PATH = "/v1/payment_intents"


def out_of_time(world: World, **fields: str) -> grpc.RpcError:
    """The provider slower than the caller's deadline: answered UNAVAILABLE before it."""
    bearer, _ = token(world)
    stall = world.sandbox.stalls.add("POST", PATH, seconds=30.0)
    try:
        with pytest.raises(grpc.RpcError) as err:
            stub(world).CreatePaymentIntent(
                payment_pb2.CreatePaymentIntentRequest(**{**SEED_BODY, **fields}),  # type: ignore[arg-type]
                metadata=bearer_md(bearer),
                timeout=5,
            )
    finally:
        stall.release.set()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert error_reason(err.value) == "PROVIDER_UNAVAILABLE"
    return err.value


def test_without_request_id_the_message_does_not_name_the_same_request_id(world: World) -> None:
    details = out_of_time(world).details() or ""
    assert "same request_id" not in details
    assert "retry, with a request_id to make retries safe" in details


def test_with_request_id_the_message_says_to_resend_it(world: World) -> None:
    details = out_of_time(world, request_id="slow-1").details() or ""
    assert "retry with the same request_id" in details
