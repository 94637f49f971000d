"""The hosted card page of a PaymentIntent, `/sandbox/pay/{pi_id}?client_secret=…` (SANDBOX).

It stands in for the provider's card element (Stripe Elements) on the merchant's own page: it
shows the amount and description, takes a test card and confirms the intent with it
(`Payments.confirm_payment_intent`), which emits the signed `payment_intent.succeeded` or
`payment_intent.payment_failed` event to the webhook URL. The client secret is the key, as
with Elements: without the intent's own, the page answers as for an unknown intent.
"""

from __future__ import annotations

import copy
import hmac
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tollbooth.sandbox.engine import Engine
from tollbooth.sandbox.pages import (
    TEST_CARD_HINTS,
    Attempts,
    _form,
    _not_found,
    email_problem,
    render,
)
from tollbooth.sandbox.wire import StripeError

MAX_SECRET = 200


class PayPage:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.attempts = Attempts()

    def _intent(self, pi_id: str, secret: str) -> dict[str, Any] | None:
        pi = self.engine.store.get(pi_id)
        if pi is None or pi.get("object") != "payment_intent":
            return None
        if not secret or len(secret) > MAX_SECRET:
            return None
        if not hmac.compare_digest(str(pi.get("client_secret")).encode(), secret.encode()):
            return None
        return copy.deepcopy(pi)

    def _context(self, pi_id: str, secret: str) -> dict[str, Any] | None:
        with self.engine.store.tx():
            pi = self._intent(pi_id, secret)
        if pi is None:
            return None
        return {"intent": pi, "secret": secret, "cards": TEST_CARD_HINTS}

    async def show(self, request: Request) -> Response:
        pi_id = request.path_params["pi_id"]
        secret = request.query_params.get("client_secret", "")
        ctx = await run_in_threadpool(self._context, pi_id, secret)
        if ctx is None:
            return _not_found("PaymentIntent")
        # After a refused Pay: its error, and what the buyer typed except the card number.
        shown = self.attempts.get(pi_id, request.query_params.get("attempt"))
        return render(
            "pay.html",
            error=shown.get("error"),
            email=shown.get("email", ""),
            holder=shown.get("name", ""),
            **ctx,
        )

    async def pay(self, request: Request) -> Response:
        pi_id = request.path_params["pi_id"]
        form = await _form(request)
        secret = form.get("client_secret", "")
        card = form.get("card", "")
        email = form.get("email", "").strip() or None
        name = form.get("name", "").strip() or None

        def confirm() -> str | None:
            """None when paid; "missing" for an unknown intent or secret; else the error."""
            if problem := email_problem(email):
                return problem
            try:
                with self.engine.store.tx():
                    if self._intent(pi_id, secret) is None:
                        return "missing"
                    pm = self.engine.card_payment_method(card, email=email, name=name)
                    self.engine.confirm_payment_intent(pi_id, {"payment_method": pm["id"]})
                    return None
            except StripeError as err:
                return err.message

        error = await run_in_threadpool(confirm)
        if error == "missing":
            return _not_found("PaymentIntent")
        if error is None:
            return RedirectResponse(
                f"/sandbox/pay/{quote(pi_id)}?client_secret={quote(secret)}", status_code=303
            )
        # A redirect to the page (Post/Redirect/Get): Back and reload never send it again.
        token = self.attempts.keep(pi_id, error=error, email=email or "", name=name or "")
        return RedirectResponse(
            f"/sandbox/pay/{quote(pi_id)}?client_secret={quote(secret)}&attempt={token}",
            status_code=303,
        )
