"""How `tollbooth run` starts its children (`supervisor.Child`, `supervisor.launch_argv`): never
through a forked Python callback, so grpcio's fork handlers never run in a child; each child
still dies with the supervisor and leaves Ctrl-C to it."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tollbooth.supervisor import Child, launch_argv


@contextmanager
def grpc_calls_in_flight() -> Iterator[None]:
    """A gRPC server in this process and a thread calling it without pause (the supervisor
    has used gRPC channels, its health waits, before it starts or restarts most children)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    calls: list[int] = []

    def spin() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                calls.append(1)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        while not calls and thread.is_alive():
            stop.wait(0.01)  # until the first call has been answered
        assert calls, "the gRPC calls never started"
        yield
    finally:
        stop.set()
        thread.join(timeout=15)
        server.stop(None)


def test_children_start_while_this_process_has_grpc_calls_in_flight() -> None:
    """Started with a forked Python callback (`preexec_fn`), about one child in ten died of
    SIGABRT before it reached exec here (grpc/grpc#43055: grpcio's fork handlers restart a
    poller in the child). Every child started this way runs its command."""
    codes = []
    with grpc_calls_in_flight():
        for _ in range(100):
            child = Child("true", ["/bin/true"], {})
            child.start()
            assert child.proc is not None
            codes.append(child.proc.wait(timeout=30))
    assert codes == [0] * 100


PROBE = (
    "import ctypes, signal\n"
    "value = ctypes.c_int(0)\n"
    "ctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(value))\n"  # PR_GET_PDEATHSIG
    "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, value.value)\n"
)


def test_a_launched_child_ignores_sigint_and_gets_sigterm_when_its_parent_dies() -> None:
    """What `preexec_fn` did, done in the child before exec: SIGINT ignored (Ctrl-C is the
    supervisor's to handle) and SIGTERM as its parent-death signal."""
    out = subprocess.run(
        launch_argv([sys.executable, "-c", PROBE]), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "15"]


def test_a_child_whose_supervisor_is_already_gone_does_not_run() -> None:
    """A child that finds it is no longer the supervisor's (the supervisor died before the
    parent-death signal was set) exits without running its command."""
    out = subprocess.run(
        launch_argv([sys.executable, "-c", "print('ran')"], parent=1),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert "ran" not in out.stdout


def test_a_command_that_cannot_run_says_so() -> None:
    out = subprocess.run(
        launch_argv(["/nonexistent/envoy", "-c", "x"]), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 127
    assert "cannot run /nonexistent/envoy" in out.stderr


def test_a_launched_child_ignores_no_signal_but_sigint() -> None:
    """The launcher is Python, which ignores SIGPIPE and SIGXFSZ at startup, and an ignored
    signal stays ignored across exec: the child (Envoy, any command) would inherit them, where
    `subprocess` (restore_signals) gave it their defaults. Only SIGINT is ignored, as before."""
    probe = ["/bin/grep", "SigIgn", "/proc/self/status"]
    # What a child started by `subprocess` ignores here (what this test's own environment
    # leaves ignored, e.g. a signal its parent ignored), the baseline the launcher must keep.
    plain = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    assert plain.returncode == 0, plain.stderr
    baseline = int(plain.stdout.split()[1], 16)
    out = subprocess.run(launch_argv(probe), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    ignored = int(out.stdout.split()[1], 16)
    assert ignored == baseline | 1 << (signal.SIGINT - 1), (hex(ignored), hex(baseline))


def test_a_command_named_without_a_path_is_found_on_path() -> None:
    """As `subprocess.Popen` (the start before the launcher) finds it: a command given by
    name is looked up on PATH, not refused with 127."""
    out = subprocess.run(launch_argv(["true"]), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_a_child_given_sigint_as_it_starts_still_runs_its_command() -> None:
    """Ctrl-C reaches the whole process group, the child too: the launcher is a Python that
    only ignores SIGINT once its own start-up is done, and a SIGINT in those first
    milliseconds killed the child (-2, or a KeyboardInterrupt traceback), where `preexec_fn`
    had it ignored before exec. The child starts with SIGINT blocked until it ignores it."""
    codes = []
    for delay in (0.0, 0.005, 0.01, 0.015):
        for _ in range(3):
            child = Child("sleep", ["/bin/sleep", "0.3"], {})
            child.start()
            assert child.proc is not None
            time.sleep(delay)
            child.proc.send_signal(signal.SIGINT)
            codes.append(child.proc.wait(timeout=30))
    assert codes == [0] * len(codes)
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # restored


def test_a_child_started_by_the_supervisor_blocks_no_signal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGINT is blocked across the spawn only: the command runs with no more signals blocked
    than a child `subprocess` starts from this test (what its environment blocks, if any)."""
    probe = ["/bin/grep", "SigBlk", "/proc/self/status"]
    plain = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    assert plain.returncode == 0, plain.stderr
    baseline = int(plain.stdout.split()[1], 16)
    assert not baseline & 1 << (signal.SIGINT - 1)  # else this test could not tell
    child = Child("status", probe, {}, tmp_path / "log")
    child.start()
    assert child.proc is not None and child.proc.wait(timeout=30) == 0
    assert int((tmp_path / "log").read_text().split()[1], 16) == baseline


def test_a_child_gets_exactly_the_environment_it_is_given(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The launcher is a Python, whose start-up in a C locale sets LC_CTYPE=C.UTF-8 in its
    environment (PEP 538 locale coercion), which exec passed on to the child; `subprocess`
    gave it exactly `env`. A child given no LC_CTYPE gets none; one given it keeps it."""
    for env, expected in (
        ({}, []),
        ({"A": "1"}, ["A=1"]),
        ({"LC_CTYPE": "POSIX"}, ["LC_CTYPE=POSIX"]),
    ):
        log = tmp_path / f"env-{len(env)}-{sorted(env)}"
        child = Child("env", ["/usr/bin/env"], env, log)
        child.start()
        assert child.proc is not None and child.proc.wait(timeout=30) == 0
        assert log.read_text().split() == expected
