"""Which calls come from a backend: a valid service key, alone or beside a bearer token (seed
003 sends both), makes `Caller.from_backend`; a bearer token alone never does. The call beside
a key stays the token's (its account, its scopes, its idempotency scope)."""

from __future__ import annotations

import pytest

from tollbooth import errors
from tollbooth.auth.caller import Authenticator, AuthRequirement
from tollbooth.auth.tokens import TokenCodec

KEY = "backend-key-0123456789"
EITHER = AuthRequirement(service_key=True, bearer=True, bearer_scope="checkout")


def setup() -> tuple[Authenticator, str]:
    codec = TokenCodec({"k1": "k" * 32}, "k1", "tollbooth", "billing-api")
    token, _ = codec.issue(
        billing_account_id="acct_1", principal_id="p1", user_id="u", scopes=["checkout"], ttl_sec=60
    )
    return Authenticator((KEY,), codec), token


def test_a_service_key_alone_is_a_backend() -> None:
    auth, _ = setup()
    caller = auth.authenticate(EITHER, KEY, None)
    assert caller.is_service and caller.from_backend


def test_a_bearer_token_alone_is_not_a_backend() -> None:
    auth, token = setup()
    caller = auth.authenticate(EITHER, None, f"Bearer {token}")
    assert caller.is_bearer and not caller.from_backend


def test_a_bearer_token_beside_the_key_is_the_tokens_call_from_a_backend() -> None:
    auth, token = setup()
    caller = auth.authenticate(EITHER, KEY, f"Bearer {token}")
    assert caller.is_bearer and not caller.is_service
    assert caller.account_id == "acct_1"
    assert caller.from_backend


def test_a_wrong_key_beside_a_token_is_still_refused() -> None:
    auth, token = setup()
    with pytest.raises(errors.DomainError) as err:
        auth.authenticate(EITHER, "not-the-key", f"Bearer {token}")
    assert err.value.reason == "SERVICE_KEY_INVALID"
