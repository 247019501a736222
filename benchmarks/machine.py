"""What machine a row was measured on: CPU model, core count, torch version, threads, CUDA device."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=None)
def git_commit() -> str:
    """HEAD of the repository the benchmark runs from (``+dirty`` with uncommitted tracked changes);
    ``AUTOINT_BENCH_COMMIT`` overrides it (for runs from an exported snapshot of a commit)."""
    if os.environ.get("AUTOINT_BENCH_COMMIT"):
        return os.environ["AUTOINT_BENCH_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(device: str = "cpu") -> dict:
    """One dict merged into every CSV row."""
    import torch

    cuda_name = ""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        cuda_name = torch.cuda.get_device_name(torch.device(device))
    return {
        "device": str(device),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count() or 0,
        "cuda_device_name": cuda_name,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }


# ---------------------------------------------------------------------------------------------------
# How busy the rest of the machine was (the bench machine may be shared)
# ---------------------------------------------------------------------------------------------------
def cpu_snapshot() -> tuple[float, float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its reaped children,
    wall time).  Two snapshots give the cores' worth of CPU other processes used in between."""
    import time

    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in f]
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
        st = Path("/proc/self/stat").read_text()
        own_fields = st[st.rindex(")") + 2:].split()
        own = sum(int(own_fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
        return busy / tick, own / tick, time.perf_counter()
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0, time.perf_counter()


def other_load(s0, s1) -> float:
    """Cores' worth of CPU used by *other* processes between two ``cpu_snapshot()``s (nan if unknown)."""
    wall = s1[2] - s0[2]
    if wall <= 0 or s1[0] == 0:
        return float("nan")
    return max(0.0, ((s1[0] - s0[0]) - (s1[1] - s0[1])) / wall)


def wait_for_quiet(max_other: float, max_wait_s: float, log=print) -> float:
    """Wait (up to ``max_wait_s``) until other processes use < ``max_other`` cores over 2 s; returns the
    last measured other load."""
    import time

    t0 = time.perf_counter()
    while True:
        s0 = cpu_snapshot()
        time.sleep(2.0)
        load = other_load(s0, cpu_snapshot())
        if load < max_other or time.perf_counter() - t0 > max_wait_s:
            return load
        log(f"machine busy: other processes use {load:.2f} cores; waiting")
