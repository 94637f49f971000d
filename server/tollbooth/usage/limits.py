"""Usage limits: read with every other setting (`tollbooth.config.UsageSettings`, a section of
`Settings`) and handed to the usage servicer, under the names and defaults below. Every value
must be a positive integer (some have a ceiling, given below).

| variable | default | meaning |
|---|---|---|
| BILLING_USAGE_MAX_BATCH | 1000 | events per IngestEvents call (more: BATCH_TOO_LARGE) |
| BILLING_USAGE_MAX_FUTURE_SEC | 300 | how far ahead of the server clock a timestamp may be |
| BILLING_USAGE_MAX_AGE_DAYS | 1826 | how old a timestamp may be (5 years: seed 001's 2025 event) |
| BILLING_USAGE_MAX_PROPERTIES_BYTES | 8192 | properties as canonical JSON, UTF-8 bytes |
| BILLING_USAGE_MAX_PROPERTIES_DEPTH | 5 | nesting of properties (a flat object is 1; at most 20) |
| BILLING_USAGE_STREAM_GROUP_MAX | 500 | StreamEvents commits at most this many events at once |
| BILLING_USAGE_STREAM_GROUP_MS | 5 | ...or what came this many ms after a group's first (1..1000) |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tollbooth.config import ConfigError, UsageSettings


class LimitsError(ConfigError):
    """A usage limit in the environment is not a positive integer."""


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
    def from_settings(cls, settings: UsageSettings) -> Limits:
        return cls(
            max_batch=settings.usage_max_batch,
            max_future_sec=settings.usage_max_future_sec,
            max_age_days=settings.usage_max_age_days,
            max_properties_bytes=settings.usage_max_properties_bytes,
            max_properties_depth=settings.usage_max_properties_depth,  # 1..20 (config)
            stream_group_max=settings.usage_stream_group_max,
            stream_group_ms=settings.usage_stream_group_ms,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        """The limits a mapping of variables sets (the usage section of the settings alone)."""
        try:
            return cls.from_settings(UsageSettings.from_env(env))
        except ConfigError as exc:
            raise LimitsError(str(exc)) from None
