"""Per-account ownership, checked from the source: a new RPC cannot forget it.

Owned rows (credit balances, grants, reservations and ledger entries, checkout sessions,
payment intents, subscriptions, purchases, usage events) are read only through repository
functions, and a repository function that finds rows by an id takes the owner too: `account_id`
(credit and usage: the account `tollbooth.accounts.service.resolve` returned for the caller) or
`owner` (`tollbooth.accounts.service.owner(caller)`, None for service callers and the provider's
events). Neither may have a default, so every caller states whose rows it reads.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "server" / "tollbooth"

OWNED = {
    "CreditBalance",
    "CreditGrant",
    "CreditReservation",
    "CreditLedgerEntry",
    "CheckoutSession",
    "Subscription",
    "Purchase",
    "UsageEvent",
    "PaymentIntent",
}
# The repositories of owned rows.
REPOSITORIES = [
    *sorted((PACKAGE / "credit" / "repository").glob("*.py")),
    PACKAGE / "checkout" / "repository.py",
    PACKAGE / "subscriptions" / "repository.py",
    PACKAGE / "payments" / "repository.py",
    PACKAGE / "usage" / "repository.py",
]
OWNER_PARAMS = {"account_id", "owner"}
# A balance's primary key is (account, credit type): getting it by key names its owner.
KEYED_BY_OWNER = {"CreditBalance"}


def modules() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if "migrations" in parts or parts[0] == "sandbox":
            continue
        yield path


def is_repository(path: Path) -> bool:
    return "repository" in path.relative_to(PACKAGE).parts or path.stem == "repository"


def names_owned(node: ast.AST, models: set[str] = OWNED) -> bool:
    """`Model` or `Model.column` for an owned model."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in models


def test_owned_rows_are_queried_in_repositories_only() -> None:
    """No `select(Owned...)` or `session.get(Owned, id)` outside a repository module."""
    found = []
    for path in modules():
        if is_repository(path):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in {"select", "get", "update", "delete"} and names_owned(node.args[0]):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, f"owned rows queried outside a repository: {found}"


def test_no_repository_reads_owned_rows_by_primary_key_alone() -> None:
    """`session.get(Owned, id)` skips the owner: no repository uses it either."""
    found = []
    for path in REPOSITORIES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and names_owned(node.args[0], OWNED - KEYED_BY_OWNER)
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found


def by_id(args: ast.arguments) -> bool:
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return any(n == "ids" or (n.endswith("_id") and n not in OWNER_PARAMS) for n in names)


def owner_param(args: ast.arguments) -> bool:
    """An `account_id` or `owner` parameter without a default."""
    positional = [*args.posonlyargs, *args.args]
    required = positional[: len(positional) - len(args.defaults)]
    required += [a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    return any(a.arg in OWNER_PARAMS for a in required)


def test_repository_lookups_by_id_take_the_owner() -> None:
    missing = []
    for path in REPOSITORIES:
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            if by_id(node.args) and not owner_param(node.args):
                missing.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert not missing, f"lookups by id without account_id/owner: {missing}"


def test_the_checks_see_the_lookups() -> None:
    """The rules above find what they guard (a renamed parameter would silence them)."""
    looked_up = {
        node.name
        for path in REPOSITORIES
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef) and by_id(node.args)
    }
    assert {"grant", "grants_by_ids", "reservation", "debit_entry", "checkout_by_id"} <= looked_up
