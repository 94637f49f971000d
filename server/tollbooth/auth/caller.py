"""The authenticated caller of the current RPC."""

from __future__ import annotations

import contextvars
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tollbooth import errors
from tollbooth.auth.tokens import TokenClaims, TokenCodec


@dataclass(frozen=True)
class Caller:
    """Either a backend (service key) or a bearer of a token for one account."""

    kind: str  # "service" | "bearer" | "anonymous"
    claims: TokenClaims | None = None
    # The environment whose service key or token signing key authenticated the call ("" when
    # none did); the server routes the call to that environment (`tollbooth.rpc.routing`).
    environment: str = ""
    # A bearer call that also carried a valid service key of its environment (seed 003 sends
    # both: the key names the tenant, the token the buyer). The call is still the token's; this
    # says only that it came from a backend, never a browser (`from_backend`).
    with_service_key: bool = False

    @property
    def is_service(self) -> bool:
        return self.kind == "service"

    @property
    def from_backend(self) -> bool:
        """Whether the call carried a valid service key (alone, or beside a bearer token):
        keys are never sent to browsers. What a backend may choose that a browser may not (a
        redirect URL off BILLING_REDIRECT_ORIGINS) turns on this, never on `kind`."""
        return self.is_service or self.with_service_key

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


@dataclass(frozen=True)
class Credentials:
    """What authenticates a caller of one environment: its service keys and token codec."""

    environment: str
    service_keys: tuple[str, ...]
    codec: TokenCodec


class Authenticator:
    """Checks credentials against a method's declared requirement, and says which environment
    they belong to: `service_keys` and `codec` are the `environment`'s, `others` those of the
    other environments served (a key or a signing key belongs to exactly one)."""

    def __init__(
        self,
        service_keys: tuple[str, ...],
        codec: TokenCodec,
        *,
        environment: str = "test",
        others: Sequence[Credentials] = (),
    ) -> None:
        self._environments = [Credentials(environment, tuple(service_keys), codec), *others]
        self._keys = [
            (c.environment, k.encode()) for c in self._environments for k in c.service_keys
        ]
        self.codec = codec

    def _key_environment(self, presented: str) -> str | None:
        candidate = presented.encode()
        found: str | None = None
        for environment, key in self._keys:  # no early exit: timing does not tell which key
            if hmac.compare_digest(candidate, key) and found is None:
                found = environment
        return found

    def _verify(self, token: str) -> tuple[str, TokenClaims]:
        """The claims and the environment whose signing keys verify `token`."""
        refused: errors.DomainError | None = None
        for credentials in self._environments:
            try:
                return credentials.environment, credentials.codec.verify(token)
            except errors.DomainError as exc:
                if exc.reason != "TOKEN_INVALID":
                    raise  # verified by this environment's key, then refused (expired)
                refused = refused or exc
        assert refused is not None
        raise refused

    def authenticate(
        self,
        requirement: AuthRequirement,
        api_key: str | None,
        authorization: str | None,
        surface: str | None = None,
    ) -> Caller:
        """The caller: a valid service key alone is the backend; a bearer token is its own
        account and scopes, also beside a service key (seed 003 sends both: the key names the
        tenant, the token the buyer), never widened by the key. The key beside a token must
        still be valid and of the token's environment (ENVIRONMENT_MISMATCH otherwise).

        Both on what takes a service key alone (every /mgt surface route, and a service-only
        RPC over gRPC) is AMBIGUOUS_CREDENTIALS: the call would be the token's, which may not
        make it, and answering SERVICE_KEY_REQUIRED to a caller that sent one misleads. The
        key is not taken instead: that would widen a call that carries a buyer's token."""
        if api_key and authorization:
            key_environment = self._key_environment(api_key)
            if key_environment is None:
                raise errors.unauthenticated("SERVICE_KEY_INVALID", "service key is not valid")
            if not requirement.bearer or surface == "mgt":
                raise errors.permission_denied(
                    "AMBIGUOUS_CREDENTIALS",
                    "this method takes a service key alone; with a bearer token beside it the"
                    " call is the token's: send x-api-key without authorization",
                )
            caller = self._bearer(requirement, authorization, surface)
            if caller.environment != key_environment:
                raise errors.permission_denied(
                    "ENVIRONMENT_MISMATCH",
                    f"the bearer token belongs to the {caller.environment} environment, the"
                    f" service key to {key_environment}",
                )
            return replace(caller, with_service_key=True)
        if api_key:
            environment = self._key_environment(api_key)
            if environment is None:
                raise errors.unauthenticated("SERVICE_KEY_INVALID", "service key is not valid")
            if not requirement.service_key:
                raise errors.permission_denied(
                    "OPERATION_NOT_PERMITTED", "this method does not take a service key"
                )
            return Caller("service", environment=environment)
        if authorization:
            return self._bearer(requirement, authorization, surface)
        raise errors.unauthenticated(
            "CREDENTIALS_MISSING", "send a service key (x-api-key) or a bearer token"
        )

    def _bearer(
        self, requirement: AuthRequirement, authorization: str, surface: str | None
    ) -> Caller:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.unauthenticated("TOKEN_INVALID", "authorization must be 'Bearer <token>'")
        environment, claims = self._verify(token.strip())
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
        return Caller("bearer", claims, environment)
