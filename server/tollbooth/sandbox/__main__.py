"""`python -m tollbooth.sandbox`: an alias of `tollbooth sandbox` (the sandbox on its own)."""

from __future__ import annotations

import sys

from tollbooth import commandline
from tollbooth.sandbox.command import sandbox_alone

if __name__ == "__main__":
    sys.exit(commandline.run(sandbox_alone, prog_name="python -m tollbooth.sandbox"))
