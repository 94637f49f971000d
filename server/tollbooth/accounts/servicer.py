"""AccountService over gRPC: proto in, proto out, one transaction; the provider after it."""

from __future__ import annotations

import grpc

from billing.v1 import account_pb2, account_pb2_grpc
from tollbooth.accounts import convert, customer_sync, manage
from tollbooth.deps import Deps
from tollbooth.provider.client import StripeProvider
from tollbooth.rpc.servicer import Servicer, contract


def populated_paths(account: account_pb2.Account) -> list[str]:
    """The implied update mask of AIP-134: the fields the request populated, the immutable
    alias too (another alias is refused, as with `update_mask=alias`, never silently kept)."""
    paths = [name for name in ("name", "email", "alias") if getattr(account, name)]
    if account.metadata:
        paths.append("metadata")
    return paths


@contract(account_pb2.DESCRIPTOR.services_by_name["AccountService"])
class AccountServicer(Servicer, account_pb2_grpc.AccountServiceServicer):
    def __init__(self, deps: Deps, provider: StripeProvider) -> None:
        super().__init__(deps)
        self.provider = provider

    def CreateAccount(
        self, request: account_pb2.CreateAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.Account:
        return self.write(
            request,
            account_pb2.Account,
            lambda session: convert.account_out(
                manage.create_account(
                    session,
                    name=request.name,
                    email=request.email,
                    alias=request.alias,
                    metadata=dict(request.metadata),
                )
            ),
        )

    def GetAccount(
        self, request: account_pb2.GetAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.Account:
        with self.read() as session:
            return convert.account_out(manage.get_account(session, request.account))

    def ListAccounts(
        self, request: account_pb2.ListAccountsRequest, context: grpc.ServicerContext
    ) -> account_pb2.ListAccountsResponse:
        with self.read() as session:
            page = manage.list_accounts(
                session,
                page_size=request.page_size,
                page_token=request.page_token,
                email=request.email,
                alias_prefix=request.alias_prefix,
                include_archived=request.include_archived,
            )
            return account_pb2.ListAccountsResponse(
                accounts=[convert.account_out(a) for a in page.items],
                next_page_token=page.next_page_token,
            )

    def UpdateAccount(
        self, request: account_pb2.UpdateAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.Account:
        given = request.account
        paths = list(request.update_mask.paths) or populated_paths(given)
        updated = self.write(
            request,
            account_pb2.Account,
            lambda session: convert.account_out(
                manage.update_account(
                    session,
                    given.id,
                    paths,
                    name=given.name,
                    email=given.email,
                    alias=given.alias,
                    metadata=dict(given.metadata),
                )
            ),
        )
        # After the commit: the provider customer follows (a failure is retried next time).
        customer_sync.sync_quietly(self.deps.db, self.provider, updated.id)
        return updated

    def ArchiveAccount(
        self, request: account_pb2.ArchiveAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.Account:
        return self.write(
            request,
            account_pb2.Account,
            lambda session: convert.account_out(manage.archive_account(session, request.account)),
        )
