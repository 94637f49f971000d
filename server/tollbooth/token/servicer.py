"""TokenService over gRPC: proto in, proto out; a read first, a write only when needed."""

from __future__ import annotations

import grpc

from billing.v1 import token_pb2, token_pb2_grpc
from tollbooth.rpc.convert import ts
from tollbooth.rpc.servicer import Servicer, contract
from tollbooth.token import service


@contract(token_pb2.DESCRIPTOR.services_by_name["TokenService"])
class TokenServicer(Servicer, token_pb2_grpc.TokenServiceServicer):
    def IssueToken(
        self, request: token_pb2.IssueTokenRequest, context: grpc.ServicerContext
    ) -> token_pb2.IssueTokenResponse:
        s, codec = self.deps.settings, self.deps.codec
        ttl = request.session_ttl_seconds or request.session_ttl_sec
        # A known principal whose account needs no write: one read, nothing to commit.
        with self.deps.db.transaction(readonly=True) as session:
            issued = service.issue_known(
                session,
                codec,
                principal_id=request.principal_id,
                user_id=request.user_id,
                scopes=list(request.scopes),
                ttl_sec=ttl,
                ttl_default=s.token_ttl_default,
                ttl_max=s.token_ttl_max,
                email=request.email,
                name=request.name,
            )
        if issued is None:  # a new principal, or contact details to fill
            with self.deps.db.transaction() as session:
                issued = service.issue_token(
                    session,
                    codec,
                    principal_id=request.principal_id,
                    user_id=request.user_id,
                    scopes=list(request.scopes),
                    ttl_sec=ttl,
                    ttl_default=s.token_ttl_default,
                    ttl_max=s.token_ttl_max,
                    email=request.email,
                    name=request.name,
                )
        return token_pb2.IssueTokenResponse(
            access_token=issued.access_token,
            token_type="Bearer",
            expire_time=ts(issued.expires_at),
            billing_account_id=issued.billing_account_id,
            principal_id=issued.principal_id,
            scopes=issued.scopes,
            account_created=issued.account_created,
        )
