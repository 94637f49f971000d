"""Usage limits, read from the environment.

These belong in `tollbooth.config.Settings`; until they move there they are read here, once
per server (UsageServicer), with the names and defaults below. Every value must be a positive
integer.

| variable | default | meaning |
|---|---|---|
| BILLING_USAGE_MAX_BATCH | 1000 | events per IngestEvents call (more: BATCH_TOO_LARGE) |
| BILLING_USAGE_MAX_FUTURE_SEC | 300 | how far ahead of the server clock a timestamp may be |
| BILLING_USAGE_MAX_AGE_DAYS | 1826 | how old a timestamp may be (5 years: seed 001's 2025 event) |
| BILLING_USAGE_MAX_PROPERTIES_BYTES | 8192 | properties as canonical JSON, UTF-8 bytes |
| BILLING_USAGE_MAX_PROPERTIES_DEPTH | 5 | nesting of properties (a flat object is 1; at most 20) |
| BILLING_USAGE_STREAM_GROUP_MAX | 500 | StreamEvents commits at most this many events at once |
| BILLING_USAGE_STREAM_GROUP_MS | 5 | ...or what arrived this many ms after a group's first event |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# Edge validation bounds the nesting of any request at 64 message levels; one JSON level is
# two (Struct, Value), so deeper property limits could never be reached.
MAX_CONFIGURABLE_DEPTH = 20


class LimitsError(ValueError):
    """A usage limit in the environment is not a positive integer."""


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise LimitsError(f"{name} must be a positive integer, got {raw!r}") from exc
    if value <= 0:
        raise LimitsError(f"{name} must be a positive integer, got {raw!r}")
    return value


@dataclass(frozen=True)
class Limits:
    max_batch: int = 1000
    max_future_sec: int = 300
    max_age_days: int = 1826
    max_properties_bytes: int = 8192
    max_properties_depth: int = 5
    stream_group_max: int = 500
    stream_group_ms: int = 5

    @property
    def max_age_sec(self) -> int:
        return self.max_age_days * 86400

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            max_batch=_positive(env, "BILLING_USAGE_MAX_BATCH", d.max_batch),
            max_future_sec=_positive(env, "BILLING_USAGE_MAX_FUTURE_SEC", d.max_future_sec),
            max_age_days=_positive(env, "BILLING_USAGE_MAX_AGE_DAYS", d.max_age_days),
            max_properties_bytes=_positive(
                env, "BILLING_USAGE_MAX_PROPERTIES_BYTES", d.max_properties_bytes
            ),
            max_properties_depth=min(
                MAX_CONFIGURABLE_DEPTH,
                _positive(env, "BILLING_USAGE_MAX_PROPERTIES_DEPTH", d.max_properties_depth),
            ),
            stream_group_max=_positive(env, "BILLING_USAGE_STREAM_GROUP_MAX", d.stream_group_max),
            stream_group_ms=_positive(env, "BILLING_USAGE_STREAM_GROUP_MS", d.stream_group_ms),
        )
