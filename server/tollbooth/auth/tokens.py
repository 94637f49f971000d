"""Signed bearer tokens (JWT, HS256, key id). Every claim is required on verification."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass

import jwt
from jwt.algorithms import HMACAlgorithm

from tollbooth import errors

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "acct", "uid", "scp"]

# Scopes a bearer token can carry. IssueToken without scopes grants the read scopes only:
# scopes that move money (checkout, portal, payments) must be asked for.
SCOPES = ("checkout", "portal", "payments", "billing:read", "credits:read", "usage:read")
DEFAULT_SCOPES = ("billing:read", "credits:read", "usage:read")
# Unix seconds up to year 9999: anything later cannot be a real expiry.
MAX_TIMESTAMP = 253_402_300_799
# Tokens verified once and remembered by each codec (every bearer call verifies its token);
# past this many the memory starts again from empty.
VERIFIED_MAX = 10_000


class _PreparedHS256(HMACAlgorithm):
    """PyJWT's HS256 with each key's checks made once: `prepare_key` (a non-empty key that is
    not PEM or SSH) runs on every `encode` otherwise, about a fifth of a token's signing time.
    Holds only the codec's configured keys."""

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._prepared: dict[str | bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = super().prepare_key(key)
        return prepared


@dataclass(frozen=True)
class TokenClaims:
    billing_account_id: str
    principal_id: str
    user_id: str
    scopes: frozenset[str]
    expires_at: dt.datetime


class TokenCodec:
    """Signs with one key, verifies with any configured key (rotation)."""

    def __init__(
        self,
        keys: dict[str, str],
        signing_kid: str,
        issuer: str,
        audience: str,
        *,
        leeway_sec: int = 0,
        max_lifetime_sec: int = 86400,
    ) -> None:
        """`leeway_sec` absorbs clock skew between replicas on iat, nbf and exp; a token whose
        lifetime (exp - iat) exceeds `max_lifetime_sec` is refused whatever its signature."""
        if signing_kid not in keys:
            raise ValueError("signing key id not among the keys")
        self._keys = dict(keys)
        self._signing_kid = signing_kid
        self.issuer = issuer
        self.audience = audience
        self.leeway_sec = leeway_sec
        self.max_lifetime_sec = max_lifetime_sec
        # token -> (claims, earliest valid second, exp): a token this codec has verified
        # (signature, algorithm, key id, issuer, audience, claims) is the same token on every
        # call; only the clock checks (iat, nbf, exp with the leeway) are made again.
        self._verified: dict[str, tuple[TokenClaims, int, int]] = {}
        # Signing: PyJWT's JWS layer with HS256 only, its key checked once (_PreparedHS256);
        # the payload is the JSON `jwt.encode` makes of the same claims (compact separators).
        self._jws = jwt.PyJWS(algorithms=[])
        self._jws.register_algorithm(ALGORITHM, _PreparedHS256())

    def issue(
        self,
        *,
        billing_account_id: str,
        principal_id: str,
        user_id: str,
        scopes: list[str],
        ttl_sec: int,
        now: dt.datetime | None = None,
    ) -> tuple[str, dt.datetime]:
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        expires = now + dt.timedelta(seconds=ttl_sec)
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal_id,
            "acct": billing_account_id,
            "uid": user_id,
            "scp": list(scopes),
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        token = self._jws.encode(
            json.dumps(claims, separators=(",", ":")).encode(),
            self._keys[self._signing_kid],
            algorithm=ALGORITHM,
            headers={"kid": self._signing_kid},
        )
        return token, expires

    def verify(self, token: str) -> TokenClaims:
        """The token's claims, or TOKEN_INVALID / TOKEN_EXPIRED. A token verified before
        answers from memory while the clock still accepts it (the clock checks of PyJWT:
        `iat` and `nbf` at most now + leeway, `exp` after now - leeway); otherwise, and for
        every refusal, the full verification runs."""
        known = self._verified.get(token)
        if known is not None:
            claims, not_before, exp = known
            now = time.time()
            if not_before <= now + self.leeway_sec and exp > now - self.leeway_sec:
                return claims
        claims, not_before, exp = self._verify_signed(token)
        if len(self._verified) >= VERIFIED_MAX:
            self._verified.clear()
        self._verified[token] = (claims, not_before, exp)
        return claims

    def _verify_signed(self, token: str) -> tuple[TokenClaims, int, int]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid("malformed token") from exc
        if header.get("alg") != ALGORITHM:
            raise _invalid("unexpected algorithm")
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            raise _invalid("unknown key id")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_sec,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise errors.unauthenticated("TOKEN_EXPIRED", "bearer token has expired") from exc
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
            raise _invalid("token failed verification") from exc
        iat, exp = claims.get("iat"), claims.get("exp")
        if type(iat) is not int or type(exp) is not int:
            raise _invalid("iat and exp must be whole seconds")
        if not 0 <= iat <= exp <= MAX_TIMESTAMP or exp - iat > self.max_lifetime_sec:
            raise _invalid("exp is not a lifetime this service issues")
        scopes = claims.get("scp")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise _invalid("scp claim is not a list of strings")
        if not all(isinstance(claims.get(n), str) and claims[n] for n in ("acct", "sub")):
            raise _invalid("acct or sub claim is empty")
        if not isinstance(claims.get("uid"), str):
            raise _invalid("uid claim is not a string")
        verified = TokenClaims(
            billing_account_id=claims["acct"],
            principal_id=claims["sub"],
            user_id=claims["uid"],
            scopes=frozenset(scopes),
            expires_at=dt.datetime.fromtimestamp(exp, dt.UTC),
        )
        nbf = claims.get("nbf")
        not_before = max(iat, int(nbf)) if nbf is not None else iat
        return verified, not_before, exp


def _invalid(detail: str) -> errors.DomainError:
    return errors.unauthenticated("TOKEN_INVALID", f"invalid bearer token: {detail}")
