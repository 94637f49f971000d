"""A Stripe-compatible sandbox: Stripe's REST API, hosted pages and signed webhooks, offline.

Run it with `tollbooth sandbox` (or `python -m tollbooth.sandbox`), or in code with
`tollbooth.sandbox.app.serve(SandboxConfig(...))`.
"""

from __future__ import annotations

import stripe

# The API version whose shapes the sandbox follows: the one the installed library pins.
API_VERSION: str = stripe.api_version
