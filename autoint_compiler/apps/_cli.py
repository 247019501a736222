"""The tail every experiment's CLI shares: one-line errors (exit status 2), the device check, and
``python -m autoint_compiler.apps.<name>`` entry points."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from ..runtime.train import device_error


def fail(message: str) -> int:
    """Print ``autoint-compile: error: <message>`` (one line) and return the usage-error status 2."""
    print(f"autoint-compile: error: {message}", file=sys.stderr)
    return 2


def check_device(device: str) -> int | None:
    """``fail(...)``'s 2 when ``device`` cannot be used here, else ``None``: call it first, so a bad
    ``--device`` is one line and not a traceback after minutes of work."""
    error = device_error(device)
    return None if error is None else fail(error)


def standalone_main(command: str, add_parser: Callable[[Any], Any], argv: Sequence[str] | None, module: str) -> int:
    """``python -m <module> ARGS`` runs as ``autoint-compile <command> ARGS``."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args([command, *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
