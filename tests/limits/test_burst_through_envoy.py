"""Issue 17's attack: 200 checkout creates from one browser token in a burst, through Envoy,
with two replicas sharing PostgreSQL. At most the configured number get through; the rest are
429 with Retry-After and the RateLimit headers, reason RATE_LIMITED, and create nothing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import SERVICE_KEY, WEBHOOK_SECRET
from tests.devstack import free_port
from tests.limits.support import gateway, port_of, server
from tollbooth.app import Deps
from tollbooth.db.models import CheckoutSession, RateLimitCounter
from tollbooth.sandbox.app import running_sandbox
from tollbooth.sandbox.config import SandboxConfig

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]
LIMIT = 10
BURST = 200
SERVICE = {"x-api-key": SERVICE_KEY}


@dataclass
class Burst:
    gw: Any
    deps: Deps
    ports: tuple[int, int]
    bearer: dict[str, str]
    alias: str
    account_id: str


@contextmanager
def burst_stack(pg_url: str, tmp_path: Path) -> Iterator[Burst]:
    """Two replicas on PostgreSQL behind Envoy, a sandbox, a stackable one-time price
    `burst-pack` and an account with a `checkout` token."""
    sandbox_port = free_port()
    env = {
        "BILLING_SANDBOX_PORT": str(sandbox_port),
        "BILLING_RATE_LIMIT_SESSION_CREATES": f"{LIMIT}/minute",
    }
    config = SandboxConfig(
        webhook_secret=WEBHOOK_SECRET,
        port=sandbox_port,
        db_path=tmp_path / "sandbox.db",
        webhook_url="",
    )
    with (
        running_sandbox(config),
        server(pg_url, **env) as (one, deps, _h1),
        server(pg_url, **env) as (two, _d2, _h2),
        gateway(pg_url, tmp_path, [port_of(one), port_of(two)], **env) as gw,
    ):
        product = gw.request(
            "POST",
            f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
            {"name": "Burst plan"},
            SERVICE,
        )
        assert product.status == 200, product.body
        price = gw.request(
            "POST",
            f"/mgt/v1/catalog/prices?request_id={uuid.uuid4().hex}",
            {
                "product_id": product.json()["product_id"],
                "currency": "usd",
                "unit_amount": 500,
                "type": "PRICE_TYPE_ONE_TIME",
                "lookup_key": "burst-pack",
                # Stackable: every create is a checkout of its own (a price bought once would
                # share one open checkout across the burst, which says nothing of the limit).
                "stackable": True,
            },
            SERVICE,
        )
        assert price.status == 200, price.body
        alias = f"burst-{uuid.uuid4().hex[:8]}"
        issued = gw.request(
            "POST", "/mgt/v1/token/issue", {"principal_id": alias, "scopes": ["checkout"]}, SERVICE
        )
        assert issued.status == 200, issued.body
        yield Burst(
            gw,
            deps,
            (port_of(one), port_of(two)),
            {"authorization": f"Bearer {issued.json()['access_token']}"},
            alias,
            issued.json()["billing_account_id"],
        )


def check_the_burst(burst: Burst, answers: list) -> None:  # type: ignore[type-arg]
    """At most LIMIT through, the rest 429 as documented; nothing stored for the refused; both
    replicas answered part of it."""
    ok = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    assert len(ok) + len(refused) == len(answers), {a.status for a in answers}
    assert 1 <= len(ok) <= LIMIT
    for answer in refused:
        assert answer.reason == "RATE_LIMITED"
        assert 1 <= int(answer.headers["retry-after"]) <= 60
        assert answer.headers["ratelimit-policy"] == f'"session_creates";q={LIMIT};w=60'
        assert re.fullmatch(r'"session_creates";r=0;t=\d+', answer.headers["ratelimit"])
    # Nothing done for the refused: one stored session per success, no more.
    with burst.deps.db.transaction(readonly=True) as session:
        stored = session.scalar(select(func.count()).select_from(CheckoutSession))
    assert stored == len(ok)
    # Both replicas answered part of the burst (the count is theirs together).
    hosts = burst.gw.clusters()
    for port in burst.ports:
        match = re.search(rf"billing_grpc::127\.0\.0\.1:{port}::rq_total::(\d+)", hosts)
        assert match and int(match.group(1)) > 0


def test_a_burst_of_checkout_creates_gets_at_most_the_limit_through(
    pg_url: str, tmp_path: Path
) -> None:
    with burst_stack(pg_url, tmp_path) as burst:

        def create(_: int):  # type: ignore[no-untyped-def]
            return burst.gw.request(
                "POST",
                "/api/v1/checkout/sessions",
                {
                    "items": [{"lookup_key": "burst-pack"}],
                    "success_url": "https://app.example/ok",
                },
                burst.bearer,
            )

        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(create, range(BURST)))
        check_the_burst(burst, answers)


def test_one_account_named_four_ways_in_a_burst_is_one_limit(pg_url: str, tmp_path: Path) -> None:
    """The same burst from a backend naming the account by alias, by id, by the alias with
    spaces, and from the account's own token, in turns: still at most LIMIT in all."""
    with burst_stack(pg_url, tmp_path) as burst:
        names = [burst.alias, burst.account_id, f" {burst.alias}  ", ""]

        def create(n: int):  # type: ignore[no-untyped-def]
            name = names[n % len(names)]
            body = {
                "items": [{"lookup_key": "burst-pack"}],
                "success_url": "https://app.example/ok",
            }
            if not name:
                return burst.gw.request("POST", "/api/v1/checkout/sessions", body, burst.bearer)
            return burst.gw.request(
                "POST", "/api/v1/checkout/sessions", {**body, "account": name}, SERVICE
            )

        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(create, range(BURST // 2)))
        check_the_burst(burst, answers)


def test_replays_through_envoy_pass_the_used_up_limit_and_are_not_counted(
    pg_url: str, tmp_path: Path
) -> None:
    """The limit used up by checkouts of their own request_ids, through Envoy and two
    replicas: each earlier request sent again is answered 200 with its first body, the count
    unchanged; a new request_id is still 429."""
    with burst_stack(pg_url, tmp_path) as burst:

        def create(request_id: str):  # type: ignore[no-untyped-def]
            return burst.gw.request(
                "POST",
                "/api/v1/checkout/sessions",
                {
                    "items": [{"lookup_key": "burst-pack"}],
                    "success_url": "https://app.example/ok",
                    "request_id": request_id,
                },
                burst.bearer,
            )

        def counted() -> int:
            who = f"%/session_creates/account:{burst.account_id}/%"
            with burst.deps.db.transaction(readonly=True) as session:
                return int(
                    session.scalar(
                        select(RateLimitCounter.count).where(RateLimitCounter.key.like(who))
                    )
                    or 0
                )

        ids = [f"envoy-{uuid.uuid4().hex}" for _ in range(LIMIT)]
        first = [create(rid) for rid in ids]
        assert [a.status for a in first] == [200] * LIMIT, [a.body for a in first]
        refused = create(f"envoy-{uuid.uuid4().hex}")
        assert (refused.status, refused.reason) == (429, "RATE_LIMITED")
        used = counted()
        for rid, earlier in zip(ids, first, strict=True):
            again = create(rid)
            assert again.status == 200, again.body
            assert again.json() == earlier.json()
        assert counted() == used
        with burst.deps.db.transaction(readonly=True) as session:
            assert session.scalar(select(func.count()).select_from(CheckoutSession)) == LIMIT
        later = create(f"envoy-{uuid.uuid4().hex}")
        assert (later.status, later.reason) == (429, "RATE_LIMITED")
        assert counted() == used + 1
