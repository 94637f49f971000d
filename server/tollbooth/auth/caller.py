"""The authenticated caller of the current RPC."""

from __future__ import annotations

import contextvars
import hmac
from dataclasses import dataclass

from tollbooth import errors
from tollbooth.auth.tokens import TokenClaims, TokenCodec


@dataclass(frozen=True)
class Caller:
    """Either a backend (service key) or a bearer of a token for one account."""

    kind: str  # "service" | "bearer" | "anonymous"
    claims: TokenClaims | None = None

    @property
    def is_service(self) -> bool:
        return self.kind == "service"

    @property
    def is_bearer(self) -> bool:
        return self.kind == "bearer"

    @property
    def account_id(self) -> str | None:
        return self.claims.billing_account_id if self.claims else None


ANONYMOUS = Caller("anonymous")
SERVICE = Caller("service")

current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "current_caller", default=ANONYMOUS
)


@dataclass(frozen=True)
class AuthRequirement:
    service_key: bool
    bearer: bool
    bearer_scope: str


class Authenticator:
    """Checks credentials against a method's declared requirement."""

    def __init__(self, service_keys: tuple[str, ...], codec: TokenCodec) -> None:
        self._keys = [k.encode() for k in service_keys]
        self.codec = codec

    def _valid_key(self, presented: str) -> bool:
        candidate = presented.encode()
        ok = False
        for key in self._keys:  # no early exit: timing does not tell which key matched
            ok |= hmac.compare_digest(candidate, key)
        return ok

    def authenticate(
        self,
        requirement: AuthRequirement,
        api_key: str | None,
        authorization: str | None,
        surface: str | None = None,
    ) -> Caller:
        if api_key:
            if not self._valid_key(api_key):
                raise errors.unauthenticated("SERVICE_KEY_INVALID", "service key is not valid")
            if not requirement.service_key:
                raise errors.permission_denied(
                    "OPERATION_NOT_PERMITTED", "this method does not take a service key"
                )
            return SERVICE
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.unauthenticated(
                    "TOKEN_INVALID", "authorization must be 'Bearer <token>'"
                )
            claims = self.codec.verify(token.strip())
            if not requirement.bearer or surface == "mgt":
                raise errors.permission_denied(
                    "SERVICE_KEY_REQUIRED", "this method takes a service key, not a bearer token"
                )
            if requirement.bearer_scope and requirement.bearer_scope not in claims.scopes:
                raise errors.permission_denied(
                    "SCOPE_MISSING",
                    f"bearer token lacks the {requirement.bearer_scope!r} scope",
                    scope=requirement.bearer_scope,
                )
            return Caller("bearer", claims)
        raise errors.unauthenticated(
            "CREDENTIALS_MISSING", "send a service key (x-api-key) or a bearer token"
        )
