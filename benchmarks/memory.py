"""Peak memory of one training step, measured in a fresh subprocess per method.

CPU: torch has no allocator statistics for CPU tensors and tracemalloc does not see them, so we use the
process's resident set.  glibc's malloc normally keeps freed blocks (its mmap threshold grows
dynamically), which makes RSS lag and under-report a step's peak; the child therefore runs with
``MALLOC_MMAP_THRESHOLD_=65536`` (fixing the threshold turns the dynamic adjustment off: every block
above 64 KiB is its own mmap, returned to the OS on free, so RSS follows live tensor bytes).  After
warm-up steps (which also run torch.compile and create Adam's state) the child resets the kernel's
high-water mark (``echo 5 > /proc/self/clear_refs``), records VmRSS, runs one step and reads VmHWM:
peak = VmHWM - VmRSS(before) = the step's transient memory (saved activations, temporaries,
gradients).  Checked against known allocations (4 x 4 MiB .. 4 x 12 MiB: exact to < 0.2 MiB).
Where clear_refs cannot be written, ru_maxrss (life-time peak) is used and the row says so.
CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus memory_allocated()
before the step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_in_child(args: dict) -> dict:
    import torch

    from . import methods, nets

    torch.set_num_threads(args["threads"])
    device = args["device"]
    b = nets.build(args["size"], args["activation"], seed=args.get("seed", 0), device=device)
    x = nets.make_inputs(args["batch"], b.in_features, device=device, seed=1)
    target = methods.make_target(x)
    step = methods.train_step_fn(b, args["method"], x, target)
    for _ in range(args.get("warmup", 2)):
        step()
    peaks = []
    how = ""
    for _ in range(args.get("steps", 2)):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            m0 = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            peaks.append((torch.cuda.max_memory_allocated() - m0) / 2**20)
            how = "cuda max_memory_allocated delta"
        else:
            if _reset_hwm():
                r0 = _status_kb("VmRSS")
                step()
                peaks.append((_status_kb("VmHWM") - r0) / 1024)
                how = "peak RSS delta (clear_refs+VmHWM, fixed mmap threshold, subprocess)"
            else:
                import resource

                r0 = _status_kb("VmRSS")
                step()
                peaks.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) / 1024)
                how = "ru_maxrss - VmRSS(before) (life-time peak; may include warm-up)"
    return {"peak_mb": max(peaks), "peaks_mb": peaks, "mem_method": how}


def measure(size: str, activation: str, batch: int, method: str, *, device: str = "cpu", threads: int = 1,
            timeout: float = 600.0) -> dict:
    """Run the child; returns {"peak_mb", "mem_method"} or {"mem_error"}."""
    args = dict(size=size, activation=activation, batch=batch, method=method, device=device,
                threads=threads)
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    env["MALLOC_TRIM_THRESHOLD_"] = "0"
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", json.dumps(args)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"mem_error": f"timeout after {timeout:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"mem_error": f"child exit {proc.returncode}: {tail[:300]}"}


if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    try:
        res = measure_in_child(a)
    except Exception as exc:
        res = {"mem_error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    print(json.dumps(res), flush=True)
