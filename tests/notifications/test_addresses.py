"""Which addresses the private-address guard refuses (pure: no network), and the setting
that turns it on."""

from __future__ import annotations

import ipaddress

import pytest

from tests.conftest import make_env
from tollbooth.config import ConfigError, Settings
from tollbooth.notifications import addresses
from tollbooth.notifications.delivery import Policy


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "192.0.2.1",
        "::1",
        "::",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    ],
)
def test_non_global_addresses_are_denied(address: str) -> None:
    assert addresses.denied(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_global_addresses_are_allowed(address: str) -> None:
    assert not addresses.denied(ipaddress.ip_address(address))


def test_one_denied_address_among_public_ones_is_enough_to_refuse() -> None:
    found = [(ipaddress.ip_address("8.8.8.8"), 80), (ipaddress.ip_address("10.0.0.1"), 80)]
    with pytest.raises(addresses.AddressDenied, match="10.0.0.1"):
        addresses.check("mixed.example", found)


@pytest.mark.parametrize(("value", "on"), [(None, False), ("0", False), ("1", True)])
def test_the_guard_is_read_from_billing_notify_deny_private(tmp_path, value, on) -> None:  # type: ignore[no-untyped-def]
    extra = {} if value is None else {"BILLING_NOTIFY_DENY_PRIVATE": value}
    settings = Settings.from_env(make_env(f"sqlite:///{tmp_path}/b.db", **extra))
    assert settings.notify_deny_private is on
    assert Policy.from_settings(settings).deny_private is on


def test_an_unusable_guard_value_stops_the_start_naming_the_variable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="BILLING_NOTIFY_DENY_PRIVATE"):
        Settings.from_env(
            make_env(f"sqlite:///{tmp_path}/b.db", BILLING_NOTIFY_DENY_PRIVATE="maybe")
        )
