"""Signed bearer tokens (JWT, HS256, key id). Every claim is required on verification."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import jwt

from tollbooth import errors

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "acct", "uid", "scp"]

# Scopes a bearer token can carry; IssueToken grants the default set when none is asked.
SCOPES = ("checkout", "portal", "billing:read", "credits:read", "usage:read")
DEFAULT_SCOPES = SCOPES


@dataclass(frozen=True)
class TokenClaims:
    billing_account_id: str
    principal_id: str
    user_id: str
    scopes: frozenset[str]
    expires_at: dt.datetime


class TokenCodec:
    """Signs with one key, verifies with any configured key (rotation)."""

    def __init__(self, keys: dict[str, str], signing_kid: str, issuer: str, audience: str) -> None:
        if signing_kid not in keys:
            raise ValueError("signing key id not among the keys")
        self._keys = dict(keys)
        self._signing_kid = signing_kid
        self.issuer = issuer
        self.audience = audience

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
        token = jwt.encode(
            claims,
            self._keys[self._signing_kid],
            algorithm=ALGORITHM,
            headers={"kid": self._signing_kid},
        )
        return token, expires

    def verify(self, token: str) -> TokenClaims:
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
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise errors.unauthenticated("TOKEN_EXPIRED", "bearer token has expired") from exc
        except jwt.PyJWTError as exc:
            raise _invalid("token failed verification") from exc
        scopes = claims.get("scp")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise _invalid("scp claim is not a list of strings")
        if not all(isinstance(claims.get(n), str) and claims[n] for n in ("acct", "sub")):
            raise _invalid("acct or sub claim is empty")
        if not isinstance(claims.get("uid"), str):
            raise _invalid("uid claim is not a string")
        return TokenClaims(
            billing_account_id=claims["acct"],
            principal_id=claims["sub"],
            user_id=claims["uid"],
            scopes=frozenset(scopes),
            expires_at=dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC),
        )


def _invalid(detail: str) -> errors.DomainError:
    return errors.unauthenticated("TOKEN_INVALID", f"invalid bearer token: {detail}")
