"""`BILLING_SANDBOX_HOST`: the server reaches the sandbox where it is bound, not on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from tests.sandbox.support import WEBHOOK_SECRET
from tollbooth.config import Settings, dial_url
from tollbooth.provider.client import StripeProvider
from tollbooth.sandbox.app import start_sandbox
from tollbooth.sandbox.config import SandboxConfig


def test_the_provider_dials_the_sandbox_on_its_configured_address(tmp_path: Path) -> None:
    # 127.0.0.2 is loopback too, but nothing listens there on 127.0.0.1's port.
    config = SandboxConfig(
        webhook_secret=WEBHOOK_SECRET,
        host="127.0.0.2",
        port=0,
        db_path=tmp_path / "sandbox.db",
        webhook_url="",
    )
    with start_sandbox(config) as sandbox:
        port = sandbox.config.port
        settings = Settings.from_env(
            {
                "BILLING_DATA_DIR": str(tmp_path / "data"),
                "BILLING_SANDBOX_HOST": "127.0.0.2",
                "BILLING_SANDBOX_PORT": str(port),
            }
        )
        provider = StripeProvider.from_settings(settings)
        assert provider.base_url == f"http://127.0.0.2:{port}"
        customer = provider.create_customer("acct_bind_host", email="bind@example.com", name="Bind")
        assert customer["id"].startswith("cus_")
        assert sandbox.url == f"http://127.0.0.2:{port}"


def test_a_wildcard_bind_is_dialled_on_loopback() -> None:
    assert dial_url("0.0.0.0", 12111) == "http://127.0.0.1:12111"
    assert dial_url("", 12111) == "http://127.0.0.1:12111"
    assert dial_url("::", 12111) == "http://[::1]:12111"
    assert dial_url("[::1]", 80) == "http://[::1]:80"
    assert dial_url("10.1.2.3", 80) == "http://10.1.2.3:80"
