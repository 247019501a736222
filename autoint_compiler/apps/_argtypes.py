"""argparse value types with ranges: a bad flag is a one-line usage error (exit status 2) naming the
option, never a traceback from deep inside an experiment. Every numeric option of every subcommand
uses one of these (``tests/test_reliability_cli.py`` checks each against its bounds; the README's
"Limits" table lists them)."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _bounds_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    return f">= {lo}" if hi is None else f"<= {hi}"


def _int(text: str, what: str) -> int:
    text = text.strip()
    if len(text) > 40:  # int() of a megabyte of digits is quadratic; no bound here needs 40 digits
        raise argparse.ArgumentTypeError(f"expected {what}, got a number of {len(text)} characters")
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def int_range(lo: int | None = None, hi: int | None = None, what: str = "an integer") -> Callable[[str], int]:
    """An ``int`` in ``[lo, hi]`` (either bound optional)."""

    def parse(text: str) -> int:
        v = _int(text, what)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {what} {_bounds_text(lo, hi)}, got {v}")
        return v

    parse.__name__ = "int"
    parse.bounds = (lo, hi)  # read by the tests and the README's limits table
    return parse


def int_list(
    lo: int = 1,
    hi: int | None = None,
    *,
    what: str = "integers",
    max_items: int = 256,
    allow_none: bool = False,
    tuple_type: bool = False,
) -> Callable[[str], list[int] | tuple[int, ...]]:
    """A list of ints separated by ``,`` (or ``x``: ``64x64x64``), each in ``[lo, hi]``, 1 to
    ``max_items`` of them; every item must be a number (``8,x`` is refused, not read as ``8``). With
    ``allow_none``, the word ``none`` is the empty list."""

    def parse(text: str) -> list[int] | tuple[int, ...]:
        raw = text.strip()
        if allow_none and raw.lower() == "none":
            return () if tuple_type else []
        items = [v.strip() for v in raw.replace("x", ",").split(",")]
        if not raw or any(not v for v in items):
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, e.g. 8,16; got {text!r}")
        if len(items) > max_items:
            raise argparse.ArgumentTypeError(f"expected at most {max_items} values, got {len(items)}")
        vals = [_int(v, f"comma-separated {what}") for v in items]
        for v in vals:
            if v < lo or (hi is not None and v > hi):
                raise argparse.ArgumentTypeError(f"expected {what} {_bounds_text(lo, hi)}, got {v} in {text!r}")
        return tuple(vals) if tuple_type else vals

    parse.__name__ = "list"
    parse.bounds = (lo, hi)
    return parse


def float_range(
    lo: float | None = None, hi: float | None = None, *, open_lo: bool = False, what: str = "number"
) -> Callable[[str], float]:
    """A finite ``float`` in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``)."""
    if open_lo and lo is not None:
        bounds = f"> {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
    else:
        bounds = _bounds_text(lo, hi)

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        bad = not math.isfinite(v) or (hi is not None and v > hi)
        if lo is not None:
            bad = bad or (v <= lo if open_lo else v < lo)
        if bad:
            raise argparse.ArgumentTypeError(f"expected a finite {what} {bounds}, got {text!r}")
        return v

    parse.__name__ = "float"
    parse.bounds = (lo, hi)
    parse.open_lo = open_lo
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
positive_float.bounds = (0, None)
positive_float.open_lo = True

SEED = int_range(-(2**63), 2**64 - 1, "a seed")
