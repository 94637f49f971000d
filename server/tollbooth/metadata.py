"""Free-form metadata of a resource: at most 50 string keys and values. Plumbing: no domain."""

from __future__ import annotations

from collections.abc import Mapping

from tollbooth import errors

MAX_METADATA_KEYS = 50
# The key a catalog product's Stripe copy carries our product id under (beside its metadata).
PROVIDER_PRODUCT_KEY = "tollbooth_product_id"


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
        if not 1 <= len(key) <= 40:
            raise errors.invalid(
                f"{field_name} keys are 1-40 characters: {errors.shown(key)} is not",
                reason="FIELD_INVALID",
                field=field_name,
            )
        if len(value) > 500:
            raise errors.invalid(
                f"{field_name}[{key!r}] is longer than 500 characters",
                reason="FIELD_INVALID",
                field=f"{field_name}[{key!r}]",
            )
        out[key] = value
    return out


def clean_provider_metadata(
    metadata: Mapping[str, str], field_name: str = "metadata", reserved: str = ""
) -> dict[str, str]:
    """Metadata that a Stripe object carries (a customer, a product) or could carry (a price):
    Stripe's rules, checked before anything is written, since metadata Stripe refuses would
    be committed and then fail every sync of its object. Keys of 1-40 characters without a
    square bracket (Stripe reads `a[b]` as nesting and refuses it), values of at most 500, at
    most 50 keys; with `reserved` (the key the provider's copy adds, naming our object), at
    most 49 and never that key itself."""
    meta = clean_metadata(metadata, field_name)
    limit = MAX_METADATA_KEYS - (1 if reserved else 0)
    if len(meta) > limit:
        raise errors.invalid(
            f"{field_name} holds more than {limit} keys (the Stripe copy adds {reserved!r};"
            f" Stripe holds at most {MAX_METADATA_KEYS})",
            field=field_name,
        )
    for key in meta:
        if reserved and key == reserved:
            raise errors.invalid(
                f"{field_name} key {reserved!r} is reserved: the Stripe copy carries our id"
                " under it",
                field=field_name,
            )
        if "[" in key or "]" in key:
            raise errors.invalid(
                f"{field_name} key {errors.shown(key)} holds a square bracket, which Stripe"
                " refuses",
                field=field_name,
            )
    return meta
