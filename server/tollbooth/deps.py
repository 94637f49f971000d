"""What every servicer needs, built once per process: settings, the database, the token codec.

One `Deps` per environment (`tollbooth.environments`): the configured (test) environment's,
and, when the live environment is configured, the live one's in `others`, with its own
settings view, database and token codec. Nothing in one reaches the other's database.

Plumbing: no domain here. What one room's servicer needs besides (the payment provider, the
webhook handlers, the catalog's purchase hints) is handed to it at assembly (`tollbooth.app`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tollbooth import environments, paging
from tollbooth.auth.tokens import TokenCodec
from tollbooth.config import Settings
from tollbooth.db import Database


def codec_of(settings: Settings) -> TokenCodec:
    return TokenCodec(
        settings.jwt_keys,
        settings.jwt_signing_kid,
        settings.jwt_issuer,
        settings.jwt_audience,
        leeway_sec=settings.jwt_leeway_sec,
        max_lifetime_sec=settings.token_ttl_max,
    )


def pooled(settings: Settings) -> Database:
    """The environment's database, its pool sized to the server's workers."""
    return Database(settings.database_url, pool_size=settings.db_pool_size, max_overflow=4)


@dataclass
class Deps:
    settings: Settings
    db: Database
    codec: TokenCodec
    # The environment these serve, and the other environments served beside it, by name.
    environment: str = environments.TEST
    others: dict[str, Deps] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, db: Database | None = None) -> Deps:
        paging.configure(list(settings.jwt_keys.values()))
        deps = cls(
            settings=settings,
            # One pooled connection per worker thread (and the few background threads), a
            # small overflow: none is opened or closed under steady load (SQLite ignores these).
            db=db or pooled(settings),
            codec=codec_of(settings),
            environment=environments.name_of(settings),
        )
        for name, view in environments.of(settings).items():
            if view is not settings:
                deps.others[name] = cls(view, pooled(view), codec_of(view), name)
        return deps

    @property
    def environments(self) -> dict[str, Deps]:
        """Every environment served, this one first."""
        return {self.environment: self, **self.others}

    def dispose(self) -> None:
        """Close every environment's database pool."""
        for deps in self.environments.values():
            deps.db.dispose()
