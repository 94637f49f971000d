"""Signing: the token is PyJWT's HS256 JWT of the claims, and each key's checks run once per
codec, not on every token (IssueToken's hot path)."""

from __future__ import annotations

import jwt
import pytest
from jwt.algorithms import HMACAlgorithm

from tollbooth.auth.tokens import TokenCodec

KEY = "signing-key-" + "s" * 32


def codec(key: str = KEY) -> TokenCodec:
    return TokenCodec({"k1": key, "k0": "old-" + "o" * 32}, "k1", "tollbooth", "billing-api")


def issue(c: TokenCodec, account: str = "acct_1") -> str:
    token, _ = c.issue(
        billing_account_id=account,
        principal_id="p1",
        user_id="u1",
        scopes=["billing:read", "checkout"],
        ttl_sec=300,
    )
    return token


def test_the_token_is_pyjwts_hs256_token_of_the_claims() -> None:
    token = issue(codec())
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    claims = jwt.decode(token, KEY, algorithms=["HS256"], audience="billing-api")
    assert (claims["acct"], claims["sub"], claims["uid"]) == ("acct_1", "p1", "u1")
    assert claims["scp"] == ["billing:read", "checkout"]
    assert claims["exp"] - claims["iat"] == 300
    # byte for byte what PyJWT's own encode makes of those claims with that key and header
    assert token == jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-" + "k" * 32, algorithms=["HS256"], audience="billing-api")


def test_the_signing_key_is_checked_once_per_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    original = HMACAlgorithm.prepare_key

    def counting(self: HMACAlgorithm, key: str | bytes) -> bytes:
        calls.append(key)
        return original(self, key)

    monkeypatch.setattr(HMACAlgorithm, "prepare_key", counting)
    c = codec()
    tokens = {issue(c, f"acct_{i}") for i in range(5)}
    assert len(tokens) == 5
    assert calls == [KEY]
    assert all(c.verify(t).principal_id == "p1" for t in tokens)


def test_a_key_pyjwt_refuses_for_hmac_is_still_refused() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0D\n-----END PUBLIC KEY-----"
    c = codec(pem)
    for _ in range(2):  # the refusal is not remembered as a prepared key
        with pytest.raises(jwt.InvalidKeyError):
            issue(c)
