"""`make bench`: runs every benchmark module of this folder that exists, one after the other.

Each module measures its figures beside a baseline measured in the same run and writes its
own results file (`bench/results*.json`).
"""

from __future__ import annotations

import importlib
import sys

MODULES = (
    "bench.core",
    "bench.credits",
    "bench.usage",
    "bench.webhooks",
    "bench.entitlements",
)


def main() -> int:
    status = 0
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        print(f"\n== {name} ==", flush=True)
        status |= int(module.main([]) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
