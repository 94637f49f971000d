"""Stripe-Signature verification (pure)."""

from __future__ import annotations

import pytest

from tollbooth.webhooks.signature import SignatureError, header, sign, verify

BODY = b'{"id":"evt_1","type":"invoice.paid"}'
NOW = 1_800_000_000


def test_valid_signature_returns_timestamp() -> None:
    assert verify(BODY, header(BODY, "s1", NOW), ["s1"], now=NOW) == NOW


def test_tampered_body_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify(BODY + b" ", header(BODY, "s1", NOW), ["s1"], now=NOW)


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify(BODY, header(BODY, "other", NOW), ["s1"], now=NOW)


def test_any_configured_secret_matches_during_rotation() -> None:
    assert verify(BODY, header(BODY, "new", NOW), ["old", "new"], now=NOW) == NOW


def test_any_v1_entry_matches() -> None:
    value = f"t={NOW},v1={'0' * 64},v1={sign(BODY, 's1', NOW)}"
    assert verify(BODY, value, ["s1"], now=NOW) == NOW


@pytest.mark.parametrize("offset", [-301, 301, -3600, 3600])
def test_timestamp_outside_tolerance_either_direction_is_refused(offset: int) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, header(BODY, "s1", NOW + offset), ["s1"], now=NOW)


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamp_at_tolerance_edge_is_accepted(offset: int) -> None:
    assert verify(BODY, header(BODY, "s1", NOW + offset), ["s1"], now=NOW)


@pytest.mark.parametrize("value", [None, "", "v1=abc", f"t={NOW}", "t=soon,v1=abc", "garbage"])
def test_missing_or_malformed_header_is_refused(value: str | None) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, value, ["s1"], now=NOW)


def test_no_secret_fails_closed() -> None:
    with pytest.raises(SignatureError):
        verify(BODY, header(BODY, "", NOW), [], now=NOW)


def test_zero_tolerance_does_not_disable_the_check() -> None:
    with pytest.raises(SignatureError):
        verify(BODY, header(BODY, "s1", NOW - 10_000), ["s1"], tolerance_sec=0, now=NOW)
