"""The README runs as written: every shell block, in order, against a fresh `tollbooth run`
(what `make run` starts: server, sidecar, Envoy and the sandbox, with generated credentials),
once on `make run`'s SQLite and once on PostgreSQL (when BILLING_TEST_POSTGRES_URL is set).

Blocks are the README's ```sh and ```bash fences; a block preceded by a
`<!-- walkthrough: skip (why) -->` line is left out (starting the stack itself, a server that
runs in the foreground), and the reason shows in the README. The only rewriting is of the
defaults a fresh stack on free ports cannot share: the ports (8080, 50051, 12111, 9464) and
`var/` (the data directory). The script runs under `set -euo pipefail`; `curl` is wrapped to
record every HTTP status, and a 4xx or 5xx fails the test unless the block announces that
status in a comment (`# ... 400 FIELD_UNKNOWN ...`), once per answer. A line that ends in
`| get FIELD  # VALUE` (one word: `# 1000`, `# paid`) must print exactly that value (and
announces no status: `received 1 | get status  # 500` is a value the receiver printed). The
README's notification receiver (`tollbooth notifications receive --port 9000`) gets a free
port too; the script runs in its own process group, so a receiver it left running when a
line failed is stopped with it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PG_ENV
from tests.devstack import HeldPorts, free_run, throwaway_postgres

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SKIP = re.compile(r"<!--\s*walkthrough:\s*skip\b")
FENCE = re.compile(r"^```(sh|bash)\s*$")
STATUS = re.compile(r"\b([45]\d\d)\b")
PROMISE = re.compile(r"^(?P<cmd>.*\|\s*get\s+\S+)\s+#\s*(?P<value>[A-Za-z0-9_.-]+)\s*$")


def checked(text: str, line: int, mismatches: Path) -> str:
    """`text` with every `| get FIELD  # VALUE` line also recording a value other than VALUE."""
    out = []
    for n, raw in enumerate(text.splitlines()):
        m = PROMISE.match(raw)
        if m:
            value = m["value"]
            where = f"README line {line + 1 + n}"
            raw = (
                f'{m["cmd"]} | {{ read -r got || true; echo "$got"; [ "$got" = \'{value}\' ] || '
                f'echo "{where}: {value} announced, $got printed" >> {mismatches}; }}'
            )
        out.append(raw)
    return "\n".join(out)


@dataclass(frozen=True)
class Block:
    line: int
    text: str

    def announced(self) -> list[str]:
        """Every 4xx/5xx status the block's comments name (a `| get FIELD  # 500` line
        promises a printed value, not an HTTP answer: it announces none)."""
        found: list[str] = []
        for raw in self.text.splitlines():
            if PROMISE.match(raw):
                continue
            _, hash_, comment = raw.partition("#")
            if hash_:
                found += STATUS.findall(comment)
        return found


def blocks(text: str) -> tuple[list[Block], list[int]]:
    """The shell blocks to run, and the lines of those marked skip."""
    lines = text.splitlines()
    run: list[Block] = []
    skipped: list[int] = []
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            start = i
            i += 1
            body = []
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
            if SKIP.search(before):
                skipped.append(start + 1)
            else:
                run.append(Block(start + 1, "\n".join(body)))
        i += 1
    return run, skipped


def test_the_extractor_sees_blocks_skips_and_announcements() -> None:
    sample = "\n".join(
        [
            "```sh",
            "curl -s x  # 400 FIELD_UNKNOWN",
            "received 1 | get status  # 500",
            "```",
            "<!-- walkthrough: skip (starts the stack) -->",
            "```sh",
            "make run",
            "```",
            "```python",
            "print()",
            "```",
        ]
    )
    run, skipped = blocks(sample)
    assert [b.line for b in run] == [1] and skipped == [6]
    assert run[0].announced() == ["400"]


def test_a_promised_value_is_checked(tmp_path: Path) -> None:
    mismatches = tmp_path / "mismatches"
    text = "echo '{\"a\": 7}' | get a   # 7\necho '{\"a\": 8}' \\\n  | get a  # 7\necho x  # 7"
    script = (
        "get() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' $1; }\n"
    )
    script += checked(text, 10, mismatches)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["7", "8", "x"]
    assert mismatches.read_text().splitlines() == ["README line 13: 7 announced, 8 printed"]


PRELUDE = r"""
set -euo pipefail
cd {repo}
export BILLING_DATA_DIR={data} BILLING_RUN_DIR={data}/run
export BILLING_REST_PORT={rest} BILLING_GRPC_PORT={grpc} BILLING_SANDBOX_PORT={sandbox}
export BILLING_SIDECAR_PORT={sidecar} BILLING_ENVOY_ADMIN_PORT={admin}
export BILLING_METRICS_PORT={metrics}
curl() {{
  local body code
  body=$(mktemp)
  if ! code=$(command curl -o "$body" -w '%{{http_code}}' "$@"); then
    cat "$body"; rm -f "$body"; return 1
  fi
  cat "$body"
  rm -f "$body"
  echo "$code" >> {log}
}}
"""


def start_run(data: Path, ports: dict[str, int], database_url: str = "") -> subprocess.Popen[str]:
    """`run` as `make run` starts it: SQLite in the data directory, or `database_url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "STRIPE_"))}
    if database_url:
        env["BILLING_DATABASE_URL"] = database_url
    env.update(
        {
            "BILLING_DATA_DIR": str(data),
            "BILLING_RUN_DIR": str(data / "run"),
            "BILLING_REST_PORT": str(ports["rest"]),
            "BILLING_GRPC_PORT": str(ports["grpc"]),
            "BILLING_SANDBOX_PORT": str(ports["sandbox"]),
            "BILLING_SIDECAR_PORT": str(ports["sidecar"]),
            "BILLING_ENVOY_ADMIN_PORT": str(ports["admin"]),
            "BILLING_METRICS_PORT": str(ports["metrics"]),
            "BILLING_SANDBOX_RETRY_BASE_MS": "100",
            # The README's receiver refuses a message twice: retried after ~0.1 s and ~0.2 s
            # instead of ~1 s and ~2 s (the attempts and their order are the same).
            "BILLING_NOTIFY_RETRY_FIRST_MS": "100",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tollbooth.cli", "run"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopping it reaches every child
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    deadline, lines = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "run exited early:\n" + "".join(lines[-50:])
        lines.append(line)
        try:
            if json.loads(line).get("event") == "ready":
                return
        except ValueError:
            continue
    raise AssertionError("run did not become ready:\n" + "".join(lines[-50:]))


def drain(proc: subprocess.Popen[str], path: Path) -> threading.Thread:
    """Copy what the stack prints after `ready` into `path`, as it comes."""

    def copy() -> None:
        assert proc.stdout is not None
        with open(path, "a", encoding="utf-8") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()

    thread = threading.Thread(target=copy, name="run-output", daemon=True)
    thread.start()
    return thread


def test_the_stack_output_after_ready_is_drained(tmp_path: Path) -> None:
    """Nobody reads `run`'s stdout after `ready` but `drain`: without it, once the pipe holds
    64 KiB every process of the stack blocks on its next log line, and a README call times
    out (504) in the middle of the walkthrough."""
    child = "print('{\"event\": \"ready\"}', flush=True)\nfor _ in range(4096): print('x' * 255)"
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_ready(proc)
        drained = drain(proc, tmp_path / "run.log")
        assert proc.wait(timeout=60) == 0  # 1 MiB after ready: written, not blocked
        drained.join(timeout=60)
        assert (tmp_path / "run.log").read_text().count("x" * 255 + "\n") == 4096
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def localise(text: str, ports: dict[str, int], data: Path) -> str:
    for default, name in (("8080", "rest"), ("50051", "grpc"), ("12111", "sandbox")):
        text = text.replace(f"localhost:{default}", f"localhost:{ports[name]}")
    text = text.replace("localhost:9464", f"localhost:{ports['metrics']}")
    # The notification receiver the README starts (`--port 9000`, `http://127.0.0.1:9000/`).
    text = text.replace("127.0.0.1:9000/", f"127.0.0.1:{ports['receiver']}/")
    text = text.replace("--port 9000 ", f"--port {ports['receiver']} ")
    return text.replace("var/secrets/", f"{data}/secrets/")


@pytest.fixture(params=["sqlite", "postgres"])
def stack_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """`make run`'s default (SQLite in the data directory: ""), then a fresh PostgreSQL
    database that `run` migrates itself (seed 001's notification flow is specified on it)."""
    if request.param == "sqlite":
        yield ""
        return
    admin = os.environ.get(PG_ENV, "").strip()
    if not admin:
        pytest.skip(f"the PostgreSQL walkthrough needs {PG_ENV}")
    with throwaway_postgres(admin, "tollbooth_walkthrough") as url:
        yield url


@pytest.mark.timeout(600)
def test_every_shell_block_of_the_readme_runs_in_order(tmp_path: Path, stack_database: str) -> None:
    run, skipped = blocks(README.read_text(encoding="utf-8"))
    assert len(run) >= 10 and len(skipped) <= 3, (len(run), skipped)
    names = ("rest", "grpc", "sandbox", "sidecar", "admin", "receiver")
    with HeldPorts(len(names)) as held:  # bound together: distinct
        ports = dict(zip(names, held.ports, strict=True))
    # Two server processes, the sidecar, the sandbox and the notification delivery each serve
    # metrics on BILLING_METRICS_PORT+i.
    ports["metrics"] = free_run(5, avoid=ports.values())
    data = tmp_path / "data"
    data.mkdir()
    log = tmp_path / "statuses"
    mismatches = tmp_path / "mismatches"
    mismatches.touch()
    script = [PRELUDE.format(repo=REPO, data=data, log=log, **ports)]
    for n, block in enumerate(run):
        script.append(f'echo "@@ block {n} (README line {block.line})"; echo "@@ {n}" >> {log}')
        script.append(checked(localise(block.text, ports, data), block.line, mismatches))
    (tmp_path / "walkthrough.sh").write_text("\n".join(script), encoding="utf-8")
    proc = start_run(data, ports, stack_database)
    try:
        wait_ready(proc)
        drain(proc, tmp_path / "run.log")  # the stack's own log, read on: see `drain`
        with open(tmp_path / "walkthrough.out", "w") as out:
            script_proc = subprocess.Popen(
                ["bash", str(tmp_path / "walkthrough.sh")],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=REPO,
                start_new_session=True,  # its group: what it started in the background too
            )
            try:
                returncode = script_proc.wait(timeout=500)
            finally:
                try:  # a background process a failed line left running (the receiver)
                    os.killpg(script_proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                script_proc.wait()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = (tmp_path / "walkthrough.out").read_text()[-6000:]
    assert returncode == 0, f"the walkthrough stopped (exit {returncode}):\n{output}"
    statuses: dict[int, list[str]] = {}
    current = -1
    for entry in log.read_text().split():
        if entry == "@@":
            continue
        if entry.isdigit() and len(entry) < 3:
            current = int(entry)
            continue
        statuses.setdefault(current, []).append(entry)
    unannounced = {}
    for n, block in enumerate(run):
        errors = [s for s in statuses.get(n, []) if s[0] in "45"]
        allowed = block.announced()
        extra = [s for s in errors if not (s in allowed and allowed.remove(s) is None)]
        if extra:
            unannounced[f"README line {block.line}"] = extra
    assert unannounced == {}, f"4xx/5xx the README does not announce: {unannounced}\n{output}"
    assert sum(len(v) for v in statuses.values()) >= 30
    promised = sum(1 for b in run for ln in b.text.splitlines() if PROMISE.match(ln))
    assert promised >= 3, promised
    assert mismatches.read_text() == "", f"values the README announces:\n{mismatches.read_text()}"
