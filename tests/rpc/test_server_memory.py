"""A serving process settles its memory before it takes calls (`rpc.server.settle_memory`):
start-up objects frozen out of the cyclic collector's walks, the collector's thresholds raised.

Run in a child process: the collector's state is per process, and the test process's own must
stay as it is.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tollbooth.rpc.server import GC_THRESHOLDS

CHILD = r"""
import gc, json, os, sys
from tollbooth.rpc import server as rpc_server

before = {"threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}

class Started(Exception):
    pass

class FakeServer:
    def start(self):
        # What the collector looks like when the first call can arrive.
        print(json.dumps({"before": before, "threshold": list(gc.get_threshold()),
                          "frozen": gc.get_freeze_count()}), flush=True)
        os._exit(0)

class FakeSettings:
    grpc_host, grpc_port = "127.0.0.1", 0

class FakeDeps:
    settings = FakeSettings()

rpc_server.build_server = lambda deps, address, servicers: (FakeServer(), 0, None)
rpc_server.serve(FakeDeps(), [])
sys.exit("serve() returned without starting the server")
"""


def test_serve_freezes_start_up_objects_and_raises_the_thresholds_before_the_first_call() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["before"]["frozen"] == 0 and tuple(seen["before"]["threshold"]) != GC_THRESHOLDS
    assert tuple(seen["threshold"]) == GC_THRESHOLDS
    assert seen["frozen"] > 1000  # the imported modules' objects, at least
