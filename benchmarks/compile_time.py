"""Compile time of a spec and size of the generated code.

cold: ``ac.compile(spec)`` in a fresh Python subprocess, timed from before ``import autoint_compiler``
      to the returned network (so it includes importing the package, torch and the generated module;
      generated text is executed directly, there is no on-disk cache).  The child also reports the
      import part on its own, and the parent the whole subprocess wall time.
warm: in one process, after a first compile, ``ac.compile`` of a different spec of the same size (a
      new name, so the in-process module table cannot be reused).
      ``compile_source`` (spec -> IR -> grad IR -> Python text, no torch) is timed separately.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .nets import ROOT_DIR, make_spec

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import autoint_compiler as ac
compile_fn = ac.compile
t1 = time.perf_counter()
net = compile_fn(json.loads(sys.argv[1]))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}))
"""


def cold(spec: dict, repeats: int = 3) -> dict:
    totals, imports, compiles, walls = [], [], [], []
    err = ""
    for _ in range(repeats):
        w0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], cwd=ROOT_DIR,
                              capture_output=True, text=True, timeout=300)
        walls.append(time.perf_counter() - w0)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            err = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]
            break
        d = json.loads(lines[-1])
        totals.append(d["total_s"])
        imports.append(d["import_s"])
        compiles.append(d["compile_s"])
    if err:
        return {"status": f"cold compile failed: {err}"}
    return {"cold_total_s": statistics.median(totals), "cold_total_min_s": min(totals),
            "cold_import_s": statistics.median(imports), "cold_compile_after_import_s": statistics.median(compiles),
            "cold_subprocess_wall_s": statistics.median(walls), "cold_repeats": len(totals), "status": "ok"}


def warm(size: str, activation: str, repeats: int = 7) -> dict:
    import autoint_compiler as ac

    out: dict = {}
    try:
        tag = f"{os.getpid()}_{time.time_ns()}"
        net = ac.compile(make_spec(size, activation, name=f"first_{tag}"))  # the first compile
        src = net.source
        out["source_bytes"] = len(src.encode())
        out["source_lines"] = src.count("\n") + (0 if src.endswith("\n") else 1)
        out["grad_forward_lines"] = _forward_lines(src, "GradNet")
        out["integral_forward_lines"] = _forward_lines(src, "IntegralNet")
        rep = getattr(net, "report", {}) or {}
        out["integral_nodes"] = rep.get("integral_nodes", "")
        out["grad_nodes"] = rep.get("grad_nodes", "")
        ts, tsrc = [], []
        for i in range(repeats):
            spec = make_spec(size, activation, seed=i + 1, name=f"warm_{i}_{tag}")
            t0 = time.perf_counter()
            ac.compile(spec)
            ts.append(time.perf_counter() - t0)
            if hasattr(ac, "compile_source"):
                spec = make_spec(size, activation, seed=i + 1, name=f"src_{i}_{tag}")
                t0 = time.perf_counter()
                ac.compile_source(spec)
                tsrc.append(time.perf_counter() - t0)
        out.update(warm_s=statistics.median(ts), warm_min_s=min(ts), warm_max_s=max(ts), warm_repeats=len(ts))
        if tsrc:
            out.update(warm_compile_source_s=statistics.median(tsrc))
        out["status"] = "ok"
    except Exception as exc:
        out["status"] = f"warm compile failed: {type(exc).__name__}: {exc}"[:300]
    return out


def _forward_lines(src: str, cls: str) -> int:
    """Lines of ``cls.forward`` in the generated text (0 if not found)."""
    lines = src.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.startswith(f"class {cls}"))
        fwd = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("def forward"))
    except StopIteration:
        return 0
    n = 0
    for ln in lines[fwd + 1:]:
        if ln.strip() and not ln.startswith("        "):
            break
        n += 1
    return n


def run(size: str, activation: str, *, cold_repeats: int = 3, warm_repeats: int = 7) -> dict:
    row = {"size": size, "activation": activation}
    w = warm(size, activation, warm_repeats)
    c = cold(make_spec(size, activation, name=f"cold_{size}_{activation}"), cold_repeats)
    status = "; ".join(s for s in (w.pop("status", "ok"), c.pop("status", "ok")) if s != "ok") or "ok"
    row.update(w)
    row.update(c)
    row["status"] = status
    return row


__all__ = ["run", "cold", "warm", "Path"]
