"""Repeated timing with warm-up, reported as median, quartiles and min.

Methods being compared are timed *interleaved* (round robin: one sample of each method per round), so
slow drift of the machine (frequency, other load) hits all of them alike and ratios stay honest.
A sample of a very fast call runs it ``inner`` times in a row (calibrated during warm-up so that one
sample takes at least ``min_sample_s``); the reported time is per call.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Stats:
    samples_ms: list[float] = field(default_factory=list)
    inner: int = 1
    warmup: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.samples_ms)

    def _q(self, q: float) -> float:
        xs = sorted(self.samples_ms)
        if not xs:
            return math.nan
        pos = q * (len(xs) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else math.nan

    @property
    def q25(self) -> float:
        return self._q(0.25)

    @property
    def q75(self) -> float:
        return self._q(0.75)

    @property
    def min(self) -> float:
        return min(self.samples_ms) if self.samples_ms else math.nan

    def row(self) -> dict:
        return {
            "median_ms": self.median, "q25_ms": self.q25, "q75_ms": self.q75, "min_ms": self.min,
            "iqr_ms": self.q75 - self.q25, "repeats": len(self.samples_ms), "inner": self.inner,
            "warmup": self.warmup,
        }


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 2, repeats: int = 7,
                     min_sample_s: float = 0.02, device: str = "cpu",
                     between: Callable[[], None] | None = None,
                     max_total_s: float | None = None) -> dict[str, Stats]:
    """Time every callable in ``fns``; a callable that raises gets ``Stats.error`` and is dropped.

    ``between`` (untimed) runs before every sample, e.g. to restore weights after a training step.
    ``max_total_s`` stops adding rounds once exceeded (at least 3 rounds, or ``repeats`` if fewer).
    """
    stats = {k: Stats(warmup=warmup) for k in fns}
    live = dict(fns)
    for name, fn in list(live.items()):
        try:
            best = math.inf
            for _ in range(max(warmup, 1)):
                if between:
                    between()
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                best = min(best, time.perf_counter() - t0)
            stats[name].inner = max(1, min(1000, math.ceil(min_sample_s / max(best, 1e-9))))
        except Exception as exc:  # record, never crash the whole run
            stats[name].error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            del live[name]
    t_start = time.perf_counter()
    for r in range(repeats):
        for name, fn in list(live.items()):
            st = stats[name]
            try:
                if between:
                    between()
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(st.inner):
                    fn()
                _sync(device)
                st.samples_ms.append((time.perf_counter() - t0) * 1e3 / st.inner)
            except Exception as exc:
                st.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                del live[name]
        if max_total_s is not None and r + 1 >= min(3, repeats) and time.perf_counter() - t_start > max_total_s:
            break
    return stats
