"""`python -m tollbooth.sandbox`: serve the sandbox from the environment."""

from __future__ import annotations

import logging
import os
import sys

from tollbooth.sandbox.app import serve
from tollbooth.sandbox.config import SandboxConfig, secret_from_env


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    secret = secret_from_env(os.environ)
    if not secret:
        print(
            "STRIPE_WEBHOOK_SECRET is not set: the sandbox signs every event with it and "
            "refuses to start without one",
            file=sys.stderr,
        )
        return 2
    try:
        config = SandboxConfig.from_env(os.environ, secret)
    except ValueError as exc:
        print(f"sandbox configuration: {exc}", file=sys.stderr)
        return 2
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
