"""A verified token is remembered by its codec: the clock checks still apply on every call,
and anything else than the exact token verified goes through the full verification."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest

from tollbooth import errors
from tollbooth.auth import tokens
from tollbooth.auth.tokens import TokenCodec

KEY = "k" * 32


def codec(leeway: int = 0) -> TokenCodec:
    return TokenCodec({"k1": KEY}, "k1", "tollbooth", "billing-api", leeway_sec=leeway)


def shift_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Both clocks (ours and PyJWT's) `seconds` ahead of the real one."""
    real_time = tokens.time.time

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            return dt.datetime.fromtimestamp(real_time() + seconds, tz)

    monkeypatch.setattr(tokens.time, "time", lambda: real_time() + seconds)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)


def issue(c: TokenCodec, ttl: int = 60) -> str:
    token, _ = c.issue(
        billing_account_id="acct_1", principal_id="p1", user_id="u", scopes=["x"], ttl_sec=ttl
    )
    return token


def test_a_remembered_token_answers_the_same_claims() -> None:
    c = codec()
    token = issue(c)
    first = c.verify(token)
    assert c.verify(token) == first
    assert first.billing_account_id == "acct_1" and first.scopes == frozenset({"x"})


def test_a_remembered_token_expires_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    c = codec()
    token = issue(c, ttl=60)
    c.verify(token)  # remembered
    shift_clock(monkeypatch, 61)
    with pytest.raises(errors.DomainError) as exc:
        c.verify(token)
    assert exc.value.reason == "TOKEN_EXPIRED"


def test_a_remembered_token_keeps_the_leeway(monkeypatch: pytest.MonkeyPatch) -> None:
    c = codec(leeway=5)
    token = issue(c, ttl=60)
    c.verify(token)
    shift_clock(monkeypatch, 63)  # past exp, within the leeway
    assert c.verify(token).principal_id == "p1"
    shift_clock(monkeypatch, 66)
    with pytest.raises(errors.DomainError) as exc:
        c.verify(token)
    assert exc.value.reason == "TOKEN_EXPIRED"


def test_a_token_issued_in_the_future_is_refused_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = codec()
    token, _ = c.issue(
        billing_account_id="acct_1",
        principal_id="p1",
        user_id="u",
        scopes=["x"],
        ttl_sec=60,
        now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30),
    )
    for _ in range(2):
        with pytest.raises(errors.DomainError) as exc:
            c.verify(token)
        assert exc.value.reason == "TOKEN_INVALID"
    shift_clock(monkeypatch, 31)
    assert c.verify(token).principal_id == "p1"
    shift_clock(monkeypatch, -3600)  # the clock goes back: iat is in its future again
    with pytest.raises(errors.DomainError) as exc:
        c.verify(token)
    assert exc.value.reason == "TOKEN_INVALID"


def test_a_tampered_copy_of_a_remembered_token_is_refused() -> None:
    c = codec()
    token = issue(c)
    c.verify(token)
    head, body, sig = token.split(".")
    forged = ".".join([head, body, ("A" if sig[0] != "A" else "B") + sig[1:]])
    with pytest.raises(errors.DomainError) as exc:
        c.verify(forged)
    assert exc.value.reason == "TOKEN_INVALID"


def test_another_codec_does_not_accept_what_this_one_remembers() -> None:
    c = codec()
    token = issue(c)
    c.verify(token)
    other = TokenCodec({"k1": "z" * 32}, "k1", "tollbooth", "billing-api")
    with pytest.raises(errors.DomainError) as exc:
        other.verify(token)
    assert exc.value.reason == "TOKEN_INVALID"


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "VERIFIED_MAX", 3)
    c = codec()
    for i in range(10):
        t, _ = c.issue(
            billing_account_id="acct_1", principal_id=f"p{i}", user_id="", scopes=[], ttl_sec=60
        )
        assert c.verify(t).principal_id == f"p{i}"
        assert len(c._verified) <= 3
