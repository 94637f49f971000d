"""Free-form metadata of a resource: at most 50 string keys and values. Plumbing: no domain."""

from __future__ import annotations

from collections.abc import Mapping

from tollbooth import errors

MAX_METADATA_KEYS = 50


def clean_metadata(metadata: Mapping[str, str], field_name: str = "metadata") -> dict[str, str]:
    if len(metadata) > MAX_METADATA_KEYS:
        raise errors.invalid(
            f"{field_name} holds more than {MAX_METADATA_KEYS} keys", field=field_name
        )
    out: dict[str, str] = {}
    for key in sorted(metadata):
        value = metadata[key]
        if not isinstance(key, str) or not isinstance(value, str):
            raise errors.invalid(f"{field_name} keys and values are strings", field=field_name)
        if not 1 <= len(key) <= 40 or len(value) > 500:
            raise errors.invalid(
                f"{field_name} keys are 1-40 characters and values at most 500", field=field_name
            )
        out[key] = value
    return out
