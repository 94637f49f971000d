"""Stripe's error objects, status codes and idempotency rules."""

from __future__ import annotations

import dataclasses
import uuid

import httpx
import pytest
import stripe

from tests.sandbox.support import client_for


def test_missing_key_is_401(sandbox) -> None:
    response = httpx.get(f"{sandbox.url}/v1/customers")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "API key" in response.json()["error"]["message"]


def test_live_key_is_refused(sandbox) -> None:
    with pytest.raises(stripe.AuthenticationError) as err:
        client_for(sandbox.url, key="sk_live_not_here").v1.customers.list()
    assert err.value.http_status == 401


def test_unknown_id_is_404_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.retrieve("cus_doesnotexist")
    assert err.value.http_status == 404
    assert err.value.code == "resource_missing" and err.value.param == "id"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.retrieve("sub_doesnotexist")
    assert err.value.code == "resource_missing"


def test_unknown_parameter_is_400(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.create(params={"emial": "typo@example.com"})  # type: ignore[typeddict-unknown-key]
    assert err.value.http_status == 400
    assert err.value.code == "parameter_unknown" and err.value.param == "emial"


def test_nested_unknown_parameter_is_400(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.checkout.sessions.create(
            params={"mode": "payment", "line_items": [{"price": "price_x", "qty": 1}]}  # type: ignore[typeddict-unknown-key]
        )
    assert err.value.param == "line_items[0][qty]"


@pytest.mark.parametrize(
    "amount", ["\u0661\u0660\u0660", "1_000", " 100", "+100", "100\n", "9" * 5000]
)
def test_an_integer_in_anything_but_plain_ascii_digits_is_400(
    client: stripe.StripeClient, amount: str
) -> None:
    """Stripe reads integers as plain digits: Arabic-Indic digits, underscores, padding or a plus
    sign (all of which Python's int() takes) are refused, and nothing is created."""
    product = client.v1.products.create(params={"name": "Digits"})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(
            params={"product": product.id, "unit_amount": amount, "currency": "usd"}  # type: ignore[typeddict-item]
        )
    assert err.value.http_status == 400 and err.value.param == "unit_amount"
    assert not client.v1.prices.list(params={"product": product.id}).data


def test_a_bracket_key_of_other_digits_is_a_name_not_a_list_index_nor_a_500(sandbox) -> None:
    """A bracket key that Python calls a digit but is no ASCII digit (a superscript two) is a
    name, as a letter is, not a list index: it made the sandbox answer 500 (int() refuses
    it). As a metadata key it is kept as given, as Stripe keeps any key."""
    headers = {
        "Authorization": "Bearer sk_test_digits",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    for path in ("/v1/customers", "/v1/products"):
        body = "name=x&metadata[\u00b2]=y".encode()
        response = httpx.post(sandbox.url + path, content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["metadata"] == {"\u00b2": "y"}
    as_letter = httpx.get(f"{sandbox.url}/v1/customers?expand[a]=data", headers=headers)
    as_other = httpx.get(f"{sandbox.url}/v1/customers?expand[\u00b2]=data", headers=headers)
    assert as_other.status_code == as_letter.status_code < 500, as_other.text


@pytest.mark.parametrize("decimal", ["\u00b2", "\u0661\u0660\u0660"])
def test_a_unit_amount_decimal_in_other_digits_is_400(
    client: stripe.StripeClient, decimal: str
) -> None:
    """unit_amount_decimal is plain ASCII digits too: a superscript two was a 500, Arabic-Indic
    digits a price of 100; either is refused and nothing is created."""
    product = client.v1.products.create(params={"name": "Decimal digits"})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(
            params={"product": product.id, "unit_amount_decimal": decimal, "currency": "usd"}
        )
    assert err.value.http_status == 400 and err.value.param == "unit_amount_decimal"
    assert not client.v1.prices.list(params={"product": product.id}).data


def test_bad_values_are_400(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(params={"name": "Bad values"})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(
            params={"product": product.id, "unit_amount": "ten", "currency": "usd"}  # type: ignore[typeddict-item]
        )
    assert err.value.http_status == 400 and err.value.param == "unit_amount"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(params={"product": product.id, "unit_amount": 100})
    assert err.value.code == "parameter_missing" and err.value.param == "currency"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.list(params={"limit": 1000})
    assert err.value.param == "limit"


def test_unknown_path_is_404(sandbox) -> None:
    response = httpx.get(f"{sandbox.url}/v1/payouts", headers={"Authorization": "Bearer sk_test_x"})
    assert response.status_code == 404
    assert "Unrecognized request URL" in response.json()["error"]["message"]


def test_same_key_same_params_replays_the_response(client: stripe.StripeClient) -> None:
    key = str(uuid.uuid4())
    params = {"email": "idem@example.com"}
    first = client.v1.customers.create(params=params, options={"idempotency_key": key})
    again = client.v1.customers.create(params=params, options={"idempotency_key": key})
    assert again.id == first.id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    listed = client.v1.customers.list(params={"email": "idem@example.com", "limit": 100})
    assert [c.id for c in listed.data].count(first.id) == 1 and len(listed.data) == 1


def test_same_key_other_params_is_idempotency_error(client: stripe.StripeClient) -> None:
    key = str(uuid.uuid4())
    client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": key})
    with pytest.raises(stripe.IdempotencyError) as err:
        client.v1.customers.create(
            params={"email": "b@example.com"}, options={"idempotency_key": key}
        )
    assert err.value.http_status == 400
    assert err.value.error is not None and err.value.error.type == "idempotency_error"


def test_expand_inlines_objects_and_rejects_unknown_paths(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(params={"name": "Expandable"})
    price = client.v1.prices.create(
        params={"product": product.id, "unit_amount": 100, "currency": "usd"}
    )
    expanded = client.v1.prices.retrieve(price.id, params={"expand": ["product"]})
    assert isinstance(expanded.product, stripe.Product) and expanded.product.name == "Expandable"
    listed = client.v1.prices.list(params={"product": product.id, "expand": ["data.product"]})
    assert listed.data[0].product.id == product.id  # type: ignore[union-attr]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.retrieve(price.id, params={"expand": ["nickname"]})
    assert err.value.param == "expand"


def test_oversized_body_is_413(sandbox) -> None:
    response = httpx.post(
        f"{sandbox.url}/v1/customers",
        content=b"description=" + b"x" * (2 << 20),
        headers={
            "Authorization": "Bearer sk_test_x",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_json_body_is_refused(sandbox) -> None:
    response = httpx.post(
        f"{sandbox.url}/v1/customers",
        json={"email": "json@example.com"},
        headers={"Authorization": "Bearer sk_test_x"},
    )
    assert response.status_code == 400
    assert "x-www-form-urlencoded" in response.json()["error"]["message"]


def test_a_request_that_failed_after_it_began_replays_its_500_under_its_key(
    sandbox, client: stripe.StripeClient
) -> None:
    """Stripe saves the answer of a request once it began executing, a 500 included: a retry
    with the same key gets that 500 again (marked `Idempotent-Replayed`), for as long as the
    key lives; only another key is executed anew. The sandbox behaves so, or the service's
    retries are tested against a kinder provider than Stripe."""
    key = str(uuid.uuid4())
    email = f"saved-500-{key}@example.com"
    sandbox.stalls.add("POST", "/v1/customers", seconds=0, status=500, after=True)
    with pytest.raises(stripe.APIError) as err:
        client.v1.customers.create(params={"email": email}, options={"idempotency_key": key})
    assert err.value.http_status == 500
    assert err.value.error is not None and err.value.error.type == "api_error"
    with pytest.raises(stripe.APIError) as again:
        client.v1.customers.create(params={"email": email}, options={"idempotency_key": key})
    assert again.value.http_status == 500
    assert (again.value.headers or {}).get("Idempotent-Replayed") == "true"
    made = client.v1.customers.create(
        params={"email": email}, options={"idempotency_key": key + "x"}
    )
    listed = client.v1.customers.list(params={"email": email, "limit": 100})
    # The failed request had begun: what it made exists; the new key made one more.
    assert made.id in [c.id for c in listed.data] and len(listed.data) == 2


def test_an_unexpected_failure_inside_a_request_is_saved_under_its_key(
    sandbox, client: stripe.StripeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler that crashes (the sandbox's own 500) saves that 500 under the key, as Stripe
    saves any answer of a request that began executing."""
    from tollbooth.sandbox import api

    route = next(r for r in api.ROUTES if r.method == "POST" and r.pattern.match("/v1/products"))
    calls: list[int] = []

    def boom(engine, params, **args):  # type: ignore[no-untyped-def]
        calls.append(1)
        raise RuntimeError("the sandbox failed midway")

    swapped = [dataclasses.replace(r, handler=boom) if r is route else r for r in api.ROUTES]
    monkeypatch.setattr(api, "ROUTES", swapped)
    key = str(uuid.uuid4())
    for _ in range(2):
        with pytest.raises(stripe.APIError) as err:
            client.v1.products.create(params={"name": "Boom"}, options={"idempotency_key": key})
        assert err.value.http_status == 500
    assert len(calls) == 1  # the retry was answered from the key, not executed again


def test_a_key_in_use_by_a_request_in_progress_is_409_and_saves_nothing(
    sandbox, client: stripe.StripeClient
) -> None:
    """Stripe answers a request whose key another request still in progress uses with 409
    (`idempotency_error`, code `idempotency_key_in_use`), saving nothing: once the first one
    finishes, the same request with the key gets its answer."""
    from concurrent.futures import ThreadPoolExecutor

    key = str(uuid.uuid4())
    params = {"email": f"in-progress-{key}@example.com"}
    stall = sandbox.stalls.add("POST", "/v1/customers", seconds=10)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(
            lambda: client.v1.customers.create(params=params, options={"idempotency_key": key})
        )
        assert stall.entered.wait(10)
        with pytest.raises(stripe.StripeError) as err:
            client.v1.customers.create(params=params, options={"idempotency_key": key})
        stall.release.set()
        made = first.result(timeout=30)
    assert err.value.http_status == 409
    assert err.value.error is not None and err.value.error.type == "idempotency_error"
    assert err.value.error.code == "idempotency_key_in_use"
    again = client.v1.customers.create(params=params, options={"idempotency_key": key})
    assert again.id == made.id


def test_refunds_are_listed_by_payment_intent(sandbox) -> None:
    """GET /v1/refunds?payment_intent= as Stripe lists them: only that intent's refunds."""
    headers = {"Authorization": "Bearer sk_test_x"}
    listed = httpx.get(
        f"{sandbox.url}/v1/refunds", params={"payment_intent": "pi_none"}, headers=headers
    )
    assert listed.status_code == 200
    body = listed.json()
    assert (body["object"], body["url"], body["data"]) == ("list", "/v1/refunds", [])
