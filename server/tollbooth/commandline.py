"""The plumbing of the one command-line program (click): run a command as a function that
returns its exit code, as `tollbooth`, `python -m tollbooth.cli` and the module aliases do.

Exit codes: what the command returns (0 when it returns nothing); 2 for a usage error (an
unknown command or option, a missing argument, an argument that is not UTF-8 text), as
argparse did; 0 for --help.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click


def run(command: click.Command, argv: Sequence[str] | None = None, prog_name: str = "") -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # a byte that is not UTF-8, surrogate-escaped by Python
            print(
                f"Error: the argument {ascii(arg)[:80]} is not UTF-8 text; it can name nothing"
                " stored here",
                file=sys.stderr,
            )
            return 2
    try:
        result = command.main(args=args, prog_name=prog_name or None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    return int(result or 0)
