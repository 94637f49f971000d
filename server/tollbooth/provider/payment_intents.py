"""The provider's payment intents (PaymentService), a part of `StripeProvider` kept in its own
module (client.py is at its size limit): create, read, cancel, and find one by its metadata.
The calls go through the client's plumbing (`_call`, `_created`), so errors map as there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class PaymentIntentCalls:
    """Mixed into `StripeProvider`, which supplies the client and the plumbing."""

    client: Any

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        raise NotImplementedError

    def _created(self, what: str, key: str | None, create: Callable[[dict[str, Any]], T]) -> T:
        raise NotImplementedError

    @staticmethod
    def _plain(obj: Any) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _options(key: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def create_payment_intent(self, params: dict[str, Any], *, idempotency: str) -> dict[str, Any]:
        return self._plain(
            self._created(
                "create payment intent",
                idempotency,
                lambda options: self.client.v1.payment_intents.create(
                    params=params, options=options
                ),
            )
        )

    def retrieve_payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        return self._plain(
            self._call(
                "retrieve payment intent",
                lambda: self.client.v1.payment_intents.retrieve(payment_intent_id),
            )
        )

    def cancel_payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        """Cancel an intent not paid yet. One Stripe will not cancel (paid or being paid,
        canceled already) is refused (`REFUSED`): the caller reads it to see which. A key of
        its own per call: a cancel sent twice is harmless, and a saved failure never replays."""
        return self._plain(
            self._call(
                "cancel payment intent",
                lambda: self.client.v1.payment_intents.cancel(
                    payment_intent_id, options=self._options(None)
                ),
            )
        )

    def find_payment_intent(self, customer: str, key: str, value: str) -> dict[str, Any] | None:
        """The customer's payment intent whose metadata `key` is `value`; None when it has
        none. Stripe's list (by customer, every page), not its search, which may lag behind
        a create it has answered."""
        params: dict[str, Any] = {"customer": customer, "limit": 100}
        while True:
            page = self._call(
                "list payment intents",
                lambda: self.client.v1.payment_intents.list(params=dict(params)),
            )
            for pi in page.data:
                plain = self._plain(pi)
                if (plain.get("metadata") or {}).get(key) == value:
                    return plain
            if not page.has_more or not page.data:
                return None
            params["starting_after"] = page.data[-1].id
