"""AccountService through real gRPC stubs, on SQLite and PostgreSQL (seed 001, step 1)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from billing.v1 import (
    account_pb2,
    account_pb2_grpc,
    checkout_pb2,
    credit_pb2,
    credit_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from tests.accounts.support import create, error_metadata, unique
from tests.conftest import SERVICE_MD, bearer_md
from tests.helpers import error_reason, keyed


def accounts(channel: grpc.Channel) -> account_pb2_grpc.AccountServiceStub:
    return account_pb2_grpc.AccountServiceStub(channel)


def test_seed_body_creates_an_account_found_by_id_and_by_alias(channel):  # type: ignore[no-untyped-def]
    made = create(channel, name="Acme Corp", email="billing@acme.com", alias="your-internal-id-123")
    assert made.id.startswith("acct_")
    assert (made.name, made.email, made.alias) == (
        "Acme Corp",
        "billing@acme.com",
        "your-internal-id-123",
    )
    assert not made.archived and made.stripe_customer_id == ""
    stub = accounts(channel)
    by_id = stub.GetAccount(account_pb2.GetAccountRequest(account=made.id), metadata=SERVICE_MD)
    by_alias = stub.GetAccount(
        account_pb2.GetAccountRequest(account="your-internal-id-123"), metadata=SERVICE_MD
    )
    assert by_id == made and by_alias == made


def test_id_and_alias_both_work_for_grants_and_balance(channel):  # type: ignore[no-untyped-def]
    made = create(channel, alias=unique("org"))
    credits = credit_pb2_grpc.CreditServiceStub(channel)
    for ref in (made.id, made.alias):
        credits.GrantCredits(
            keyed(credit_pb2.GrantCreditsRequest(account=ref, credit_type="units", amount="25")),
            metadata=SERVICE_MD,
        )
    for ref in (made.id, made.alias):
        balance = credits.GetBalance(
            credit_pb2.GetBalanceRequest(account=ref, type="units"), metadata=SERVICE_MD
        )
        assert balance.balance == "50"


def test_same_alias_again_is_already_exists_naming_the_existing_account(channel):  # type: ignore[no-untyped-def]
    alias = unique("dup")
    first = create(channel, alias=alias, name="First")
    with pytest.raises(grpc.RpcError) as err:
        create(channel, alias=alias, name="Second")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(err.value) == "ACCOUNT_ALIAS_TAKEN"
    assert error_metadata(err.value)["account_id"] == first.id
    again = accounts(channel).GetAccount(
        account_pb2.GetAccountRequest(account=alias), metadata=SERVICE_MD
    )
    assert again.name == "First"


def test_request_id_makes_create_idempotent(channel):  # type: ignore[no-untyped-def]
    key = unique("req")
    first = create(channel, email="a@example.com", request_id=key)
    second = create(channel, email="a@example.com", request_id=key)
    assert second.id == first.id
    listed = accounts(channel).ListAccounts(
        account_pb2.ListAccountsRequest(email="a@example.com"), metadata=SERVICE_MD
    )
    assert [a.id for a in listed.accounts].count(first.id) == 1
    with pytest.raises(grpc.RpcError) as err:
        create(channel, email="b@example.com", request_id=key)
    assert error_reason(err.value) == "IDEMPOTENCY_KEY_REUSED"


def test_bad_alias_and_email_are_refused_and_create_nothing(channel):  # type: ignore[no-untyped-def]
    for kwargs, field in (
        ({"alias": "acct_looks_like_an_id"}, "alias"),
        ({"alias": "has space"}, "alias"),
        ({"email": "not-an-email"}, "email"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            create(channel, name="refused-one", **kwargs)  # type: ignore[arg-type]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_metadata(err.value)["field"] == field
        if field == "email":  # one reason for a bad e-mail, in every RPC that takes one
            assert error_reason(err.value) == "EMAIL_INVALID"
    listed = accounts(channel).ListAccounts(
        account_pb2.ListAccountsRequest(page_size=100), metadata=SERVICE_MD
    )
    assert "refused-one" not in {a.name for a in listed.accounts}


def test_list_pages_and_filters_by_email_and_alias_prefix(channel):  # type: ignore[no-untyped-def]
    prefix = unique("team")
    email = f"{prefix}@example.com"
    made = [create(channel, alias=f"{prefix}-{n}", email=email) for n in range(5)]
    other = create(channel, alias=unique("else"), email=email)
    stub = accounts(channel)
    seen, token = [], ""
    while True:
        page = stub.ListAccounts(
            account_pb2.ListAccountsRequest(alias_prefix=prefix, page_size=2, page_token=token),
            metadata=SERVICE_MD,
        )
        assert len(page.accounts) <= 2
        seen += [a.id for a in page.accounts]
        token = page.next_page_token
        if not token:
            break
    assert seen == [a.id for a in made]
    by_email = stub.ListAccounts(account_pb2.ListAccountsRequest(email=email), metadata=SERVICE_MD)
    assert [a.id for a in by_email.accounts] == [a.id for a in made] + [other.id]
    with pytest.raises(grpc.RpcError) as err:
        stub.ListAccounts(
            account_pb2.ListAccountsRequest(email="x@example.com", page_token=token or "forged"),
            metadata=SERVICE_MD,
        )
    assert error_reason(err.value) == "PAGE_TOKEN_INVALID"


def test_alias_prefix_is_literal_not_a_pattern(channel):  # type: ignore[no-untyped-def]
    base = unique("pct")
    create(channel, alias=f"{base}-x")
    page = accounts(channel).ListAccounts(
        account_pb2.ListAccountsRequest(alias_prefix=base[:3] + "%"), metadata=SERVICE_MD
    )
    assert page.accounts == []


def update(channel, account: account_pb2.Account, *paths: str) -> account_pb2.Account:  # type: ignore[no-untyped-def]
    return accounts(channel).UpdateAccount(
        keyed(
            account_pb2.UpdateAccountRequest(
                account=account, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
            )
        ),
        metadata=SERVICE_MD,
    )


def test_update_changes_only_the_masked_fields(channel):  # type: ignore[no-untyped-def]
    made = create(channel, alias=unique("upd"), name="Old", email="old@example.com")
    changed = update(
        channel,
        account_pb2.Account(id=made.alias, name="New", email="ignored@example.com"),
        "name",
    )
    assert (changed.id, changed.name, changed.email) == (made.id, "New", "old@example.com")
    implied = update(
        channel, account_pb2.Account(id=made.id, metadata={"plan": "gold"})
    )  # empty mask: what the request populated
    assert implied.name == "New" and dict(implied.metadata) == {"plan": "gold"}
    cleared = update(channel, account_pb2.Account(id=made.id, name="Only"), "*")
    assert (cleared.name, cleared.email, dict(cleared.metadata)) == ("Only", "", {})
    assert cleared.alias == made.alias


def test_alias_is_immutable_and_unknown_paths_are_refused(channel):  # type: ignore[no-untyped-def]
    made = create(channel, alias=unique("imm"), name="Kept")
    for account, paths, field in (
        (account_pb2.Account(id=made.id, alias="another", name="X"), ["alias", "name"], "alias"),
        (account_pb2.Account(id=made.id, name="X"), ["name", "colour"], "update_mask"),
        (account_pb2.Account(id=made.id, email="bad"), ["email"], "email"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            update(channel, account, *paths)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_metadata(err.value)["field"] == field
        if field == "update_mask":  # the path it names no field with
            assert error_metadata(err.value) == {"field": "update_mask", "path": "colour"}
            assert error_reason(err.value) == "FIELD_INVALID"
    same = update(channel, account_pb2.Account(id=made.id, alias=made.alias, name="Y"), "alias")
    assert same.name == "Kept" and same.alias == made.alias


def test_another_alias_without_a_mask_is_refused_not_ignored(channel):  # type: ignore[no-untyped-def]
    """AIP-134's implied mask is every field the body populates, the immutable alias too: a
    body renaming the alias is refused as with `update_mask=alias` (before: 200, the alias
    silently kept), and its other fields are not applied; the alias it already has is fine."""
    made = create(channel, alias=unique("impl"), name="Kept")
    with pytest.raises(grpc.RpcError) as err:
        update(channel, account_pb2.Account(id=made.id, alias="renamed", name="X"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_metadata(err.value)["field"] == "alias"
    kept = accounts(channel).GetAccount(
        account_pb2.GetAccountRequest(account=made.id), metadata=SERVICE_MD
    )
    assert (kept.alias, kept.name) == (made.alias, "Kept")
    same = update(channel, account_pb2.Account(id=made.id, alias=made.alias, name="Y"))
    assert (same.alias, same.name) == (made.alias, "Y")


def test_the_wildcard_mask_stands_alone(channel):  # type: ignore[no-untyped-def]
    """`*` with other paths is refused (INVALID_ARGUMENT, field update_mask), as UpdateProduct,
    UpdatePrice and UpdateMetric refuse it; nothing is changed."""
    made = create(channel, alias=unique("wild"), name="Kept", email="kept@example.com")
    with pytest.raises(grpc.RpcError) as err:
        update(channel, account_pb2.Account(id=made.id, name="X"), "*", "name")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_metadata(err.value)["field"] == "update_mask"
    kept = accounts(channel).GetAccount(
        account_pb2.GetAccountRequest(account=made.id), metadata=SERVICE_MD
    )
    assert (kept.name, kept.email) == ("Kept", "kept@example.com")


def test_unknown_accounts_are_not_found(channel):  # type: ignore[no-untyped-def]
    stub = accounts(channel)
    calls = [
        lambda: stub.GetAccount(
            account_pb2.GetAccountRequest(account="acct_000000000000000000000000"),
            metadata=SERVICE_MD,
        ),
        lambda: stub.GetAccount(
            account_pb2.GetAccountRequest(account="nobody-here"), metadata=SERVICE_MD
        ),
        lambda: update(channel, account_pb2.Account(id="nobody-here", name="x"), "name"),
        lambda: stub.ArchiveAccount(
            keyed(account_pb2.ArchiveAccountRequest(account="nobody-here")), metadata=SERVICE_MD
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_bearer_tokens_cannot_call_the_account_service(channel):  # type: ignore[no-untyped-def]
    made = create(channel, alias=unique("own"))
    token = token_pb2_grpc.TokenServiceStub(channel).IssueToken(
        token_pb2.IssueTokenRequest(principal_id=made.alias), metadata=SERVICE_MD
    )
    with pytest.raises(grpc.RpcError) as err:
        accounts(channel).GetAccount(
            account_pb2.GetAccountRequest(account=made.id),
            metadata=bearer_md(token.access_token),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_issue_token_uses_the_created_account(channel):  # type: ignore[no-untyped-def]
    made = create(channel, alias=unique("tok"), email="t@example.com")
    issued = token_pb2_grpc.TokenServiceStub(channel).IssueToken(
        token_pb2.IssueTokenRequest(principal_id=made.alias), metadata=SERVICE_MD
    )
    assert issued.billing_account_id == made.id and not issued.account_created
    # ...and an account IssueToken created is one the account service knows.
    fresh = unique("fresh")
    minted = token_pb2_grpc.TokenServiceStub(channel).IssueToken(
        token_pb2.IssueTokenRequest(principal_id=fresh, email="f@example.com"), metadata=SERVICE_MD
    )
    got = accounts(channel).GetAccount(
        account_pb2.GetAccountRequest(account=fresh), metadata=SERVICE_MD
    )
    assert (got.id, got.alias, got.email) == (minted.billing_account_id, fresh, "f@example.com")


def test_archived_account_takes_no_tokens_grants_or_checkouts_but_keeps_history(channel):  # type: ignore[no-untyped-def]
    made = create(channel, alias=unique("arch"))
    credits = credit_pb2_grpc.CreditServiceStub(channel)
    credits.GrantCredits(
        keyed(credit_pb2.GrantCreditsRequest(account=made.id, credit_type="units", amount="5")),
        metadata=SERVICE_MD,
    )
    token = token_pb2_grpc.TokenServiceStub(channel).IssueToken(
        token_pb2.IssueTokenRequest(principal_id=made.alias, scopes=["checkout"]),
        metadata=SERVICE_MD,
    )
    archived = accounts(channel).ArchiveAccount(
        keyed(account_pb2.ArchiveAccountRequest(account=made.alias)), metadata=SERVICE_MD
    )
    assert archived.archived and archived.HasField("archive_time")
    again = accounts(channel).ArchiveAccount(
        keyed(account_pb2.ArchiveAccountRequest(account=made.id)), metadata=SERVICE_MD
    )
    assert again.archive_time == archived.archive_time
    from billing.v1 import checkout_pb2_grpc

    refusals = [
        lambda: token_pb2_grpc.TokenServiceStub(channel).IssueToken(
            token_pb2.IssueTokenRequest(principal_id=made.alias), metadata=SERVICE_MD
        ),
        lambda: credits.GrantCredits(
            keyed(credit_pb2.GrantCreditsRequest(account=made.id, credit_type="units", amount="1")),
            metadata=SERVICE_MD,
        ),
        lambda: checkout_pb2_grpc.CheckoutServiceStub(channel).CreateCheckoutSession(
            checkout_pb2.CreateCheckoutSessionRequest(
                items=[checkout_pb2.CheckoutItem(lookup_key="anything")],
                success_url="https://app.example/ok",
            ),
            metadata=bearer_md(token.access_token),
        ),
    ]
    for call in refusals:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(err.value) == "ACCOUNT_ARCHIVED"
    balance = credits.GetBalance(
        credit_pb2.GetBalanceRequest(account=made.alias, type="units"), metadata=SERVICE_MD
    )
    assert balance.balance == "5"
    listed = accounts(channel).ListAccounts(
        account_pb2.ListAccountsRequest(alias_prefix=made.alias), metadata=SERVICE_MD
    )
    assert listed.accounts == []
    listed = accounts(channel).ListAccounts(
        account_pb2.ListAccountsRequest(alias_prefix=made.alias, include_archived=True),
        metadata=SERVICE_MD,
    )
    assert [a.id for a in listed.accounts] == [made.id]


def test_an_email_with_a_capital_beyond_ascii_is_found_as_stored_and_in_any_case(channel):  # type: ignore[no-untyped-def]
    """`Élodie.Ünal@…` is found by ListAccounts' `email` as stored, in upper or lower case, on
    SQLite as on PostgreSQL: the query lowered its side in Python and the column in SQL, and
    SQLite's lower() folds ASCII only, so on SQLite not even the address as stored matched."""
    tag = unique("mail")
    stored = f"Élodie.Ünal-{tag}@Example.com"
    made = create(channel, email=stored, alias=unique("uni"))
    stub = accounts(channel)
    for asked in (stored, stored.lower(), stored.upper()):
        listed = stub.ListAccounts(
            account_pb2.ListAccountsRequest(email=asked), metadata=SERVICE_MD
        )
        assert [a.id for a in listed.accounts] == [made.id], asked
    customers = customer_pb2_grpc.CustomerServiceStub(channel)
    for asked in (stored, stored.lower()):
        answer = customers.GetCustomerSubscription(
            customer_pb2.GetCustomerSubscriptionRequest(customerEmail=asked), metadata=SERVICE_MD
        )
        assert not answer.HasField("subscription"), asked  # found: no plan, not 404


def test_alias_prefix_matches_the_case_given(channel):  # type: ignore[no-untyped-def]
    """An alias is an exact id (GetAccount takes `Team-7` and `team-7` for two accounts), so
    `alias_prefix` matches in the case given, on SQLite as on PostgreSQL: SQLite's LIKE folds
    ASCII case, and `TEAM` listed `team-…` there only."""
    tag = unique("pfx")
    lower = create(channel, alias=f"{tag}-team")
    upper = create(channel, alias=f"{tag.upper()}-TEAM")
    stub = accounts(channel)

    def listed(prefix: str) -> list[str]:
        answer = stub.ListAccounts(
            account_pb2.ListAccountsRequest(alias_prefix=prefix), metadata=SERVICE_MD
        )
        return [a.id for a in answer.accounts]

    assert listed(tag) == [lower.id]
    assert listed(tag.upper()) == [upper.id]
    assert listed(f"{tag}-TEAM") == []


@pytest.mark.parametrize("alias", ["..", "-a", ":x", "@example"])
def test_an_alias_not_beginning_with_a_letter_or_digit_is_refused_saying_so(alias: str) -> None:
    """`..` holds only characters the rule lists: the message must name the rule it breaks."""
    from tollbooth.accounts.service import validate_alias
    from tollbooth.errors import DomainError

    with pytest.raises(DomainError) as exc:
        validate_alias(alias)
    assert "beginning with a letter or a digit" in str(exc.value)
