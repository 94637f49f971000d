"""Every query of the credit domain, one module per table (plus the fast paths' writes).

The outbox (a balance depleted) is written through `tollbooth.notifications.outbox`.

`from tollbooth.credit import repository` then `repository.lock_balance(...)`: the functions
are gathered here. Every query of an owned row (a balance, grant, reservation or ledger
entry) takes the account id.
"""

from tollbooth.credit.repository.balances import (
    account_balance,
    balance_figures,
    due_balances,
    due_credit_types,
    ensure_balance,
    ensure_balances,
    lock_balance,
    lock_balance_figures,
    lock_balances,
    plain_account_balance,
    read_balance,
)
from tollbooth.credit.repository.grants import (
    active_grants,
    grant,
    grants_by_ids,
    list_grants,
    spendable_grants,
    spendable_grants_of,
)
from tollbooth.credit.repository.ledger import debit_entry, list_ledger
from tollbooth.credit.repository.reservations import held_reservations, reservation
from tollbooth.credit.repository.writes import write_burns, write_debit

__all__ = [
    "account_balance",
    "active_grants",
    "balance_figures",
    "debit_entry",
    "due_balances",
    "due_credit_types",
    "ensure_balance",
    "ensure_balances",
    "grant",
    "grants_by_ids",
    "held_reservations",
    "list_grants",
    "list_ledger",
    "lock_balance",
    "lock_balance_figures",
    "lock_balances",
    "plain_account_balance",
    "read_balance",
    "reservation",
    "spendable_grants",
    "spendable_grants_of",
    "write_burns",
    "write_debit",
]
