"""Issue 17's attack: 200 checkout creates from one browser token in a burst, through Envoy,
with two replicas sharing PostgreSQL. At most the configured number get through; the rest are
429 with Retry-After and the RateLimit headers, reason RATE_LIMITED, and create nothing."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import SERVICE_KEY, WEBHOOK_SECRET
from tests.devstack import free_port
from tests.limits.support import gateway, port_of, server
from tollbooth.db.models import CheckoutSession
from tollbooth.sandbox.app import running_sandbox
from tollbooth.sandbox.config import SandboxConfig

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]
LIMIT = 10
BURST = 200


def test_a_burst_of_checkout_creates_gets_at_most_the_limit_through(
    pg_url: str, tmp_path: Path
) -> None:
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
        service = {"x-api-key": SERVICE_KEY}
        product = gw.request(
            "POST",
            f"/mgt/v1/catalog/products?request_id={uuid.uuid4().hex}",
            {"name": "Burst plan"},
            service,
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
            },
            service,
        )
        assert price.status == 200, price.body
        issued = gw.request(
            "POST",
            "/mgt/v1/token/issue",
            {"principal_id": f"burst-{uuid.uuid4().hex[:8]}", "scopes": ["checkout"]},
            service,
        )
        assert issued.status == 200, issued.body
        bearer = {"authorization": f"Bearer {issued.json()['access_token']}"}

        def create(_: int):  # type: ignore[no-untyped-def]
            return gw.request(
                "POST",
                "/api/v1/checkout/sessions",
                {
                    "items": [{"lookup_key": "burst-pack"}],
                    "success_url": "https://app.example/ok",
                },
                bearer,
            )

        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(create, range(BURST)))

        ok = [a for a in answers if a.status == 200]
        refused = [a for a in answers if a.status == 429]
        assert len(ok) + len(refused) == BURST, {a.status for a in answers}
        assert 1 <= len(ok) <= LIMIT
        for answer in refused:
            assert answer.reason == "RATE_LIMITED"
            assert 1 <= int(answer.headers["retry-after"]) <= 60
            assert answer.headers["ratelimit-policy"] == f'"session_creates";q={LIMIT};w=60'
            assert re.fullmatch(r'"session_creates";r=0;t=\d+', answer.headers["ratelimit"])
        # Nothing done for the refused: one stored session per success, no more.
        with deps.db.transaction(readonly=True) as session:
            stored = session.scalar(select(func.count()).select_from(CheckoutSession))
        assert stored == len(ok)
        # Both replicas answered part of the burst (the count is theirs together).
        hosts = gw.clusters()
        for port in (port_of(one), port_of(two)):
            match = re.search(rf"billing_grpc::127\.0\.0\.1:{port}::rq_total::(\d+)", hosts)
            assert match and int(match.group(1)) > 0
