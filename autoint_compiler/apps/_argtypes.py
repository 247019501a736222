"""argparse value types with ranges: a bad flag is a one-line usage error (exit status 2), never a
traceback from deep inside an experiment."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def int_range(lo: int | None = None, hi: int | None = None, what: str = "an integer") -> Callable[[str], int]:
    """An ``int`` in ``[lo, hi]`` (either bound optional)."""

    def parse(text: str) -> int:
        try:
            v = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"between {lo} and {hi}")
            raise argparse.ArgumentTypeError(f"expected {what} {bounds}, got {v}")
        return v

    parse.__name__ = "int"
    return parse


def positive_float(text: str) -> float:
    """A finite ``float`` > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


positive_float.__name__ = "float"

SEED = int_range(-(2**63), 2**64 - 1, "a seed")
