"""TokenService over gRPC: proto in, proto out; a read first, a write only when needed."""

from __future__ import annotations

import grpc

from billing.v1 import token_pb2, token_pb2_grpc
from tollbooth.accounts.repository import by_principal, known_by_principal
from tollbooth.rpc.convert import ts
from tollbooth.rpc.servicer import Servicer, contract
from tollbooth.token import service
from tollbooth.token.service import IssuedToken, TokenRequest


@contract(token_pb2.DESCRIPTOR.services_by_name["TokenService"])
class TokenServicer(Servicer, token_pb2_grpc.TokenServiceServicer):
    def IssueToken(
        self, request: token_pb2.IssueTokenRequest, context: grpc.ServicerContext
    ) -> token_pb2.IssueTokenResponse:
        s, codec, db = self.deps.settings, self.deps.codec, self.deps.db
        req = TokenRequest(
            principal_id=request.principal_id,
            user_id=request.user_id,
            scopes=list(request.scopes),
            ttl_sec=request.session_ttl_seconds or request.session_ttl_sec,
            ttl_default=s.token_ttl_default,
            ttl_max=s.token_ttl_max,
            email=request.email,
            name=request.name,
            ttl_field="session_ttl_seconds" if request.session_ttl_seconds else "session_ttl_sec",
        )
        issued: IssuedToken | None
        # A known principal whose account needs no write: one read, nothing to commit. On
        # PostgreSQL one plain statement on a pooled connection (no session, no BEGIN).
        if db.dialect == "postgresql":
            issued = service.issue_known(codec, req, lambda p: known_by_principal(db, p))
        else:
            with db.transaction(readonly=True) as session:
                issued = service.issue_known(codec, req, lambda p: by_principal(session, p))
        if issued is None:  # a new principal, or contact details to fill
            with db.transaction() as session:
                issued = service.issue_token(session, codec, req)
        return token_pb2.IssueTokenResponse(
            access_token=issued.access_token,
            token_type="Bearer",
            expire_time=ts(issued.expires_at),
            billing_account_id=issued.billing_account_id,
            principal_id=issued.principal_id,
            scopes=issued.scopes,
            account_created=issued.account_created,
        )
