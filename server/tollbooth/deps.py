"""What every servicer needs, built once per process: settings, the database, the token codec.

Plumbing: no domain here. What one room's servicer needs besides (the payment provider, the
webhook handlers, the catalog's purchase hints) is handed to it at assembly (`tollbooth.app`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tollbooth import paging
from tollbooth.auth.tokens import TokenCodec
from tollbooth.config import Settings
from tollbooth.db import Database


@dataclass
class Deps:
    settings: Settings
    db: Database
    codec: TokenCodec

    @classmethod
    def build(cls, settings: Settings, db: Database | None = None) -> Deps:
        paging.configure(list(settings.jwt_keys.values()))
        return cls(
            settings=settings,
            # One pooled connection per worker thread (and the few background threads), no
            # overflow: none is opened or closed under steady load (SQLite ignores these).
            db=db
            or Database(settings.database_url, pool_size=settings.db_pool_size, max_overflow=4),
            codec=TokenCodec(
                settings.jwt_keys,
                settings.jwt_signing_kid,
                settings.jwt_issuer,
                settings.jwt_audience,
                leeway_sec=settings.jwt_leeway_sec,
                max_lifetime_sec=settings.token_ttl_max,
            ),
        )
