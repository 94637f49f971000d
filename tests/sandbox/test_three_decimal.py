"""Three-decimal currencies (BHD, JOD, KWD, OMR, TND): Stripe takes their amounts only when the
last digit is 0 (stripe.com/docs/currencies, "Three-decimal currencies": "these API calls require
the least-significant (last) digit to be 0"), so the sandbox refuses any other, as Stripe does,
and creates nothing."""

from __future__ import annotations

import pytest
import stripe


def _refused(call) -> stripe.InvalidRequestError:  # type: ignore[no-untyped-def]
    with pytest.raises(stripe.InvalidRequestError) as err:
        call()
    assert err.value.http_status == 400
    return err.value


def test_a_price_or_intent_not_ending_in_zero_is_refused_and_one_ending_in_zero_is_taken(
    client: stripe.StripeClient,
) -> None:
    product = client.v1.products.create(params={"name": "Dinar pack"})
    for currency, amount in (("kwd", 1005), ("BHD", 1), ("jod", 99_999_999), ("omr", 15)):
        err = _refused(
            lambda c=currency, a=amount: client.v1.prices.create(
                params={"product": product.id, "currency": c, "unit_amount": a}
            )
        )
        assert err.param == "unit_amount"
        err = _refused(
            lambda c=currency, a=amount: client.v1.payment_intents.create(
                params={"amount": a, "currency": c}
            )
        )
        assert err.param == "amount"
    err = _refused(
        lambda: client.v1.prices.create(
            params={"product": product.id, "currency": "tnd", "unit_amount_decimal": "2995"}
        )
    )
    assert err.param == "unit_amount_decimal"
    assert client.v1.prices.list(params={"product": product.id}).data == []
    assert client.v1.payment_intents.list(params={"limit": 10}).data == []

    price = client.v1.prices.create(
        params={"product": product.id, "currency": "KWD", "unit_amount": 1010}
    )
    assert (price.currency, price.unit_amount) == ("kwd", 1010)
    pi = client.v1.payment_intents.create(params={"amount": 1010, "currency": "kwd"})
    assert (pi.currency, pi.amount) == ("kwd", 1010)
    # Two-decimal and zero-decimal currencies keep any last digit.
    assert (
        client.v1.payment_intents.create(params={"amount": 1005, "currency": "usd"}).amount == 1005
    )


def test_a_checkout_price_data_not_ending_in_zero_is_refused(client: stripe.StripeClient) -> None:
    err = _refused(
        lambda: client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "success_url": "https://app.example/ok",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": "kwd",
                            "unit_amount": 1005,
                            "product_data": {"name": "Dinar pack"},
                        },
                    }
                ],
            }
        )
    )
    assert err.param is not None and "unit_amount" in err.param
    assert client.v1.checkout.sessions.list(params={"limit": 10}).data == []


def test_a_partial_refund_of_a_three_decimal_charge_must_end_in_zero(
    client: stripe.StripeClient,
) -> None:
    pi = client.v1.payment_intents.create(params={"amount": 5120, "currency": "kwd"})
    paid = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    charge = str(paid.latest_charge)
    err = _refused(lambda: client.v1.refunds.create(params={"charge": charge, "amount": 125}))
    assert err.param == "amount"
    assert client.v1.charges.retrieve(charge).amount_refunded == 0
    assert client.v1.refunds.create(params={"charge": charge, "amount": 120}).amount == 120
    assert client.v1.charges.retrieve(charge).amount_refunded == 120


def test_isk_is_taken_in_whole_kronur_and_a_currency_stripe_lacks_is_refused(
    client: stripe.StripeClient,
) -> None:
    """ISK is two-decimal in Stripe's API but takes only amounts divisible by 100 (Stripe's
    `invalid_charge_amount_no_decimal_compatible`); IQD (three decimals outside Stripe's five)
    and a code that is no currency are refused, as Stripe refuses them."""
    product = client.v1.products.create(params={"name": "Krona pack"})
    intents_before = client.v1.payment_intents.list(params={"limit": 100}).data
    err = _refused(
        lambda: client.v1.prices.create(
            params={"product": product.id, "currency": "isk", "unit_amount": 150}
        )
    )
    assert (err.param, err.code) == ("unit_amount", "invalid_charge_amount_no_decimal_compatible")
    err = _refused(
        lambda: client.v1.payment_intents.create(params={"amount": 150, "currency": "isk"})
    )
    assert err.param == "amount"
    for code in ("iqd", "zzz"):
        err = _refused(
            lambda c=code: client.v1.prices.create(
                params={"product": product.id, "currency": c, "unit_amount": 1000}
            )
        )
        assert err.param == "currency"
        err = _refused(
            lambda c=code: client.v1.payment_intents.create(params={"amount": 1000, "currency": c})
        )
        assert err.param == "currency"
    assert client.v1.prices.list(params={"product": product.id}).data == []
    assert client.v1.payment_intents.list(params={"limit": 100}).data == intents_before
    price = client.v1.prices.create(
        params={"product": product.id, "currency": "ISK", "unit_amount": 1500}
    )
    assert (price.currency, price.unit_amount) == ("isk", 1500)
