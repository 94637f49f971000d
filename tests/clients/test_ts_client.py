"""The TypeScript client (clients/ts) under Node, through Envoy with the Stripe sandbox."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import SERVICE_KEY
from tollbooth.config import REPO_ROOT

pytestmark = pytest.mark.envoy


def test_node_test_issues_a_token_lists_the_catalog_and_creates_a_checkout(tmp_path):  # type: ignore[no-untyped-def]
    from tests.checkout.support import start_shop

    node = shutil.which("node")
    if node is None or not (REPO_ROOT / "node_modules" / "@bufbuild" / "protobuf").exists():
        pytest.fail("node and the npm packages are needed: `make setup` runs npm ci")
    shop = start_shop(tmp_path)
    try:
        shop.price("ts-pro")
        env = {
            **os.environ,
            "BILLING_URL": shop.stack.rest_url,
            "BILLING_SERVICE_KEY": SERVICE_KEY,
            "BILLING_LOOKUP_KEY": "ts-pro",
        }
        out = subprocess.run(
            [node, "--test", "clients/ts/test/"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shop.close()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "# fail 0" in out.stdout and "# pass 3" in out.stdout, out.stdout


def test_the_client_types_compile_under_tsc_strict():  # type: ignore[no-untyped-def]
    tsc = REPO_ROOT / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.fail("typescript is missing: `make setup` runs npm ci")
    out = subprocess.run(
        [
            str(tsc),
            "--noEmit",
            "--strict",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--target",
            "es2022",
            "--skipLibCheck",
            "clients/ts/typecheck/usage.ts",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_entry_point_exports_every_service_of_the_protos():  # type: ignore[no-untyped-def]
    """`createRestClient(Service, …)` works for any service (README "For frontend
    developers"): each one in protos/billing/v1 is importable from clients/ts/src/index.js
    (EntitlementService is on the browser surface), with its message types."""
    node = shutil.which("node")
    if node is None or not (REPO_ROOT / "node_modules" / "@bufbuild" / "protobuf").exists():
        pytest.fail("node and the npm packages are needed: `make setup` runs npm ci")
    declared = set()
    for proto in (REPO_ROOT / "protos" / "billing" / "v1").glob("*.proto"):
        declared |= set(re.findall(r"^service (\w+) \{", proto.read_text(), re.MULTILINE))
    assert {"EntitlementService", "CatalogService"} <= declared
    script = (
        'const m = await import("./clients/ts/src/index.js");'
        "console.log(JSON.stringify(Object.keys(m).filter((k) => m[k]?.kind === 'service')));"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout)) == declared
    # The declarations say the same (tsc reads index.d.ts, not index.js).
    typed = (REPO_ROOT / "clients" / "ts" / "src" / "index.d.ts").read_text()
    runtime = (REPO_ROOT / "clients" / "ts" / "src" / "index.js").read_text()
    assert typed == runtime


def _readme_block(heading: str, fence: str) -> str:
    """The first ```fence block of the README section `heading`."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"^```{fence}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert match, f"no ```{fence} block under {heading}"
    return match.group(1)


def test_the_readme_example_runs_as_written_against_the_default_configuration(tmp_path):  # type: ignore[no-untyped-def]
    """README "For frontend developers": the TypeScript example, with the token a backend
    issued, against a stack whose redirect origins are the defaults (`make run`'s: the CORS
    origins) and the walkthrough's catalog (`pro`). Only the port is rewritten."""
    from tests.checkout.support import Shop, reserve_port
    from tests.conftest import WEBHOOK_SECRET, make_env
    from tests.devstack import migrated_sqlite, start_stack
    from tollbooth.sandbox.app import start_sandbox
    from tollbooth.sandbox.config import SandboxConfig

    node = shutil.which("node")
    if node is None or not (REPO_ROOT / "node_modules" / "@bufbuild" / "protobuf").exists():
        pytest.fail("node and the npm packages are needed: `make setup` runs npm ci")
    example = _readme_block("For frontend developers", "ts")
    url = migrated_sqlite(tmp_path / "billing.db")
    held = reserve_port()
    sandbox_port = held.getsockname()[1]
    env = make_env(url, BILLING_SANDBOX_PORT=str(sandbox_port))
    del env["BILLING_REDIRECT_ORIGINS"]  # the default, as `make run` has it
    stack = start_stack(url, env, tmp_path)
    try:
        sandbox = start_sandbox(
            SandboxConfig(
                webhook_secret=WEBHOOK_SECRET,
                port=sandbox_port,
                db_path=tmp_path / "sandbox.db",
                webhook_url=f"{stack.rest_url}/v1/billing/webhooks",
            ),
            sock=held,
        )
    except Exception:
        stack.close()
        raise
    shop = Shop(stack, sandbox, None)
    try:
        shop.price("pro")  # the walkthrough's plan
        token = shop.token("ts-readme-user")
        script = (
            "const token = process.env.BILLING_TOKEN;\n"
            + example.replace("http://localhost:8080", stack.rest_url)
            + "\nconsole.log(JSON.stringify({ products: products.length, url }));\n"
        )
        out = subprocess.run(
            [node, "--input-type=module", "-e", script],
            cwd=REPO_ROOT,
            env={**os.environ, "BILLING_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shop.close()
    assert out.returncode == 0, out.stdout + out.stderr
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    assert printed["products"] == 1
    assert printed["url"].startswith(f"{sandbox.url}/sandbox/checkout/cs_test_")
