"""The tests' own port hand-out (tests/devstack.py): ports a process of ours binds later come
from below the kernel's ephemeral range, where no outgoing connection and no bind to port 0
can take them meanwhile, and one test process never hands out a port twice."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.devstack import free_port, free_run


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_free_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    low = _ephemeral_low()
    ports = [free_port() for _ in range(200)]
    assert all(p < low for p in ports)
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_a_run_avoids_what_it_is_told_and_what_was_handed_out() -> None:
    before = {free_port() for _ in range(50)}
    base = free_run(5, avoid={1})
    run = set(range(base, base + 5))
    assert not run & before
    assert base + 5 <= _ephemeral_low()
    later = {free_port() for _ in range(50)}
    assert not later & run


def test_parallel_test_workers_draw_ports_from_disjoint_ranges(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Under pytest-xdist (`make test`) each worker hands out ports only from its own slice
    of the range, so two workers (each with its own record of what it handed out) never
    pick the same port."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    drawn = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        drawn[worker] = {free_run(3) for _ in range(40)}
    first_high = max(drawn["gw0"]) + 2
    assert first_high < min(drawn["gw1"])


def test_a_run_drawn_at_the_top_of_a_workers_share_stays_in_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A run of n ports whose base is drawn last in worker gw0's slice ended up to n - 1
    ports into gw1's slice (the slice bounded the base, not the run, and moved with n), where
    gw1 hands out single ports."""
    import tests.devstack as devstack

    class Highest:
        """Draws from the top of the range down: the first free run nearest the share's top
        (the very top may be in use by a server of another test, or handed out before by
        this process: always drawing it failed the test in one CI run)."""

        def __init__(self) -> None:
            self.drawn = 0

        def randrange(self, start: int, stop: int) -> int:
            self.drawn += 1
            return max(start, stop - self.drawn)

    monkeypatch.setattr(devstack.random, "Random", Highest)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    base = free_run(5)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    gw1_first = devstack._worker_share(10_000, _ephemeral_low())[0]
    assert base + 5 <= gw1_first
