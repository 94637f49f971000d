"""State survives a restart; configuration parsing; the module entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.devstack import free_port
from tests.sandbox.conftest import sandbox_config
from tests.sandbox.support import Receiver, client_for, monthly_price, subscribe
from tollbooth.config import Settings
from tollbooth.sandbox.app import start_sandbox
from tollbooth.sandbox.config import DEFAULT_PORT, Faults, SandboxConfig, secret_from_env

REPO = Path(__file__).resolve().parents[2]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    receiver = Receiver().start()
    db = tmp_path / "restart.db"
    try:
        first = start_sandbox(sandbox_config(db, receiver.url))
        try:
            client = client_for(first.url)
            price = monthly_price(client, 1200, lookup_key="restart-pro")
            done, sub = subscribe(client, price.id, email="restart@example.com")
        finally:
            first.stop()
        second = start_sandbox(sandbox_config(db, receiver.url))
        try:
            client = client_for(second.url)
            assert client.v1.customers.retrieve(str(done.customer)).email == "restart@example.com"
            again = client.v1.subscriptions.retrieve(sub.id)
            assert again.status == "active" and again["items"].data[0].price.id == price.id
            keyed = client.v1.prices.list(params={"lookup_keys": ["restart-pro"]})
            assert [p.id for p in keyed.data] == [price.id]
            assert client.v1.checkout.sessions.retrieve(done.id).status == "complete"
        finally:
            second.stop()
    finally:
        receiver.stop()


def test_fault_syntax() -> None:
    faults = Faults.parse("duplicate=0.3, shuffle=1,delay_ms=0-200,twin=0.1,seed=42")
    assert faults == Faults(duplicate=0.3, shuffle=True, delay_ms=(0, 200), twin=0.1, seed=42)
    assert Faults.parse("delay_ms=50").delay_ms == (50, 50)
    assert Faults.parse("") == Faults() and not Faults().active
    for bad in ("duplicate=2", "nosuch=1", "delay_ms=9-3", "shuffle", "seed=x"):
        with pytest.raises(ValueError):
            Faults.parse(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "seed=\u0661\u0662",  # Arabic-Indic digits: int() reads them as 12
        "seed=\uff11\uff12",  # full-width digits
        "seed=1_2",
        "seed=+12",
        "seed=-12",
        "delay_ms=\u0661\u0660",
        "delay_ms=0-\u0662\u0660\u0660",
        "duplicate=\u0660.\u0665",
        "twin=0.1_0",
        "twin=1e-1",
        "shuffle=\u0661",
        "shuffle=maybe",
    ],
)
def test_fault_values_take_ascii_digits_only(bad: str) -> None:
    with pytest.raises(ValueError) as err:
        Faults.parse(bad)
    assert bad.partition("=")[0] in str(err.value)


def test_a_fault_value_in_other_digits_stops_the_sandbox_from_starting() -> None:
    with pytest.raises(ValueError) as err:
        SandboxConfig.from_env({"BILLING_SANDBOX_FAULTS": "seed=\u0661\u0662"}, "whsec_abc")
    assert "BILLING_SANDBOX_FAULTS" in str(err.value) and "seed" in str(err.value)


def test_config_from_env(tmp_path: Path) -> None:
    cfg = SandboxConfig.from_env(
        {
            "BILLING_SANDBOX_PORT": "12999",
            "BILLING_SANDBOX_DB": "/tmp/x/sandbox.db",
            "BILLING_SANDBOX_WEBHOOK_URL": "http://127.0.0.1:9/hook",
            "BILLING_SANDBOX_FAULTS": "duplicate=1",
        },
        "whsec_abc",
    )
    assert cfg.port == 12999 and str(cfg.db_path) == "/tmp/x/sandbox.db"
    assert cfg.webhook_url == "http://127.0.0.1:9/hook" and cfg.faults.duplicate == 1.0
    assert cfg.base_url == "http://127.0.0.1:12999" and cfg.webhook_secret == "whsec_abc"
    default = SandboxConfig.from_env({}, "whsec_abc")
    assert default.port == DEFAULT_PORT and default.db_path == REPO / "var" / "sandbox.db"
    assert default.webhook_url == "http://127.0.0.1:8080/v1/billing/webhooks"
    # Run alone, it delivers where `make run`'s sandbox does: Envoy's webhook path.
    moved = SandboxConfig.from_env({"BILLING_REST_PORT": "18080"}, "whsec_abc")
    assert moved.webhook_url == "http://127.0.0.1:18080/v1/billing/webhooks"
    stack = Settings.from_env({"BILLING_REST_PORT": "18080", "BILLING_DATA_DIR": str(tmp_path)})
    assert SandboxConfig.for_stack(stack).webhook_url == moved.webhook_url
    with pytest.raises(ValueError):
        SandboxConfig(webhook_secret="")
    assert secret_from_env({"STRIPE_WEBHOOK_SECRET": " whsec_new , whsec_old"}) == "whsec_new"
    assert secret_from_env({}) is None


def test_module_refuses_to_start_without_a_secret() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO / 'server'}:{REPO / 'clients'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "tollbooth.sandbox"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET" in proc.stderr


def test_module_serves_until_sigterm(tmp_path: Path) -> None:
    import signal
    import time

    import httpx

    port = free_port()  # not from port 0: another test's process could be handed it meanwhile
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{REPO / 'server'}:{REPO / 'clients'}",
        "STRIPE_WEBHOOK_SECRET": "whsec_module_test",
        "BILLING_SANDBOX_PORT": str(port),
        "BILLING_SANDBOX_DB": str(tmp_path / "module.db"),
        "BILLING_SANDBOX_WEBHOOK_URL": "",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollbooth.sandbox"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/sandbox/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.1)
        assert health.json()["sandbox"] is True
        customer = client_for(url).v1.customers.create(params={"email": "m@example.com"})
        assert customer.id.startswith("cus_")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert f"stripe sandbox: {url}" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_every_card_the_pages_suggest_is_a_known_test_card() -> None:
    from tollbooth.sandbox.objects import TEST_CARDS, TEST_PM_TOKENS, luhn_ok
    from tollbooth.sandbox.pages import TEST_CARD_HINTS

    suggested = [number.replace(" ", "") for number, _ in TEST_CARD_HINTS]
    assert suggested and all(n in TEST_CARDS and luhn_ok(n) for n in suggested)
    assert set(TEST_PM_TOKENS.values()) <= set(TEST_CARDS)


def test_a_clock_left_advancing_by_a_stop_mid_advance_is_ready_after_a_restart(
    tmp_path: Path,
) -> None:
    """An advance commits period by period: a process stopped in the middle leaves the clock
    `advancing` at the last period it finished. The next start settles it `ready` there."""
    db = tmp_path / "advancing.db"
    first = start_sandbox(sandbox_config(db, ""))
    try:
        client = client_for(first.url)
        clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": 1_767_225_600})
        with first.app.state.store.tx() as store:  # as a stop between two periods leaves it
            left = store.get(clock.id)
            left["status"] = "advancing"
            left["status_details"] = {"advancing": {"target_frozen_time": 1_767_225_600 + 999}}
            store.put(left)
    finally:
        first.stop()
    second = start_sandbox(sandbox_config(db, ""))
    try:
        again = client_for(second.url).v1.test_helpers.test_clocks.retrieve(clock.id)
        assert again.status == "ready" and again.frozen_time == 1_767_225_600
        assert again.status_details.to_dict() == {}
    finally:
        second.stop()
