"""What the GPU compiler makes of the Triton backend's kernels, without a GPU: each kernel compiled for
an NVIDIA target (default sm_90, an H100) by Triton and the ``ptxas`` bundled with it, reporting the
registers per thread, the bytes spilled to local memory, the shared memory and the compile time.

A kernel that spills tens of kilobytes per thread is slow whatever else it saves; that is what made the
first whole-network kernels (IEEE float32 ``tl.dot``: FMA GEMMs, every operand in registers) 12-22x
slower than the per-layer kernels on an H100. This harness compares configurations on any machine
with triton installed (compile results depend on the triton version, not on the CPU):

  python -m benchmarks.triton_ptxas                       # the default grid -> benchmarks/results/triton/ptxas.*
  python -m benchmarks.triton_ptxas --widths 128 --vars 2 --chunks 64 --rows 64 --warps 8 --precisions tf32x3
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import io
import itertools
import os
import re
import time
from pathlib import Path

os.environ["TRITON_ALWAYS_COMPILE"] = "1"  # a compile each time (the cache would hide ptxas's report)
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"

FIELDS = ["width", "vars", "kernel", "precision", "chunk", "block_m", "warps", "registers", "spill_bytes",
          "shared_bytes", "compile_s"]  # fmt: skip


def _signature(fn, consts: dict) -> tuple[dict, dict]:
    """Triton signature types for a generated kernel: upper-case single letters (+ digits) are float32
    pointers, constexprs come from ``consts``, the rest are int32."""
    sig, values = {}, {}
    for p in inspect.signature(fn.fn).parameters:
        if p in consts:
            sig[p], values[p] = "constexpr", consts[p]
        elif re.fullmatch(r"[A-Z]\d*", p) and p not in ("M", "N", "K"):
            sig[p] = "*fp32"
        else:
            sig[p] = "i32"
    return sig, values


def compile_report(fn, consts: dict, warps: int, stages: int = 1, arch: int = 90) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, values = _signature(fn, consts)
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):
        k = triton.compile(
            ASTSource(fn, sig, values),
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": warps, "num_stages": stages},
        )
    seconds = time.perf_counter() - start
    text = log.getvalue()
    regs = re.findall(r"Used (\d+) registers", text)
    spills = re.findall(r"(\d+) bytes spill stores", text)
    return {
        "registers": int(regs[-1]) if regs else -1,
        "spill_bytes": int(spills[-1]) if spills else 0,
        "shared_bytes": k.metadata.shared,
        "compile_s": round(seconds, 1),
    }


def run(
    widths, n_vars, chunks, rows, warps, precisions, out_dir: Path | None, layers: bool = True, append: bool = False
) -> list[dict]:
    import triton.language as tl

    from autoint_compiler.backends.triton_backend import generate
    from autoint_compiler.compiler import compile_source, load_module

    from .triton_bench import spec_for

    results = []
    if append and out_dir is not None and (out_dir / "ptxas.csv").exists():
        with (out_dir / "ptxas.csv").open() as f:
            results = list(csv.DictReader(f))

    def emit(row):
        results.append(row)
        print(", ".join(f"{k}={row[k]}" for k in FIELDS), flush=True)
        if out_dir is not None:  # after every kernel: a long compile cut short keeps what came before
            _write(results, out_dir)

    for width, v in itertools.product(widths, n_vars):
        cs = compile_source(spec_for(width, v))
        if layers:  # the per-layer GEMM kernels (their autotune configs' first: 64 x 64 x 32, 4 warps, 3 stages)
            mod = load_module(cs.name + "_layers", generate(cs.program, version="ptxas"))
            for name in sorted(n for n in dir(mod) if n.startswith("_layer") and n.endswith("_fwd"))[:2]:
                consts = {
                    "PREC": "ieee",
                    "ACC": tl.float32,
                    "STORE_Z": False,
                    "BLOCK_M": 64,
                    "BLOCK_N": 64,
                    "BLOCK_K": 32,
                }
                rep = compile_report(getattr(mod, name).fn, consts, 4, stages=3)
                emit(dict(width=width, vars=v, kernel=name, precision="ieee", chunk="", block_m=64, warps=4, **rep))
        for chunk in chunks:
            mod = load_module(f"{cs.name}_c{chunk}", generate(cs.program, version="ptxas", fused_chunk=chunk))
            for prec, bm, w in itertools.product(precisions, rows, warps):
                rep = compile_report(mod._grad_fused_kernel.fn, {"PREC": prec, "ACC": tl.float32, "BLOCK_M": bm}, w)
                emit(dict(width=width, vars=v, kernel="_grad_fused_kernel", precision=prec, chunk=chunk, block_m=bm,
                          warps=w, **rep))  # fmt: skip
    return results


def shipped(widths, n_vars, precisions, out_dir: Path | None) -> list[dict]:
    """What the generated modules ship: each whole-network kernel a network has (Φ's and, within the
    live-column budget, the grad network's) at every block configuration its autotuner may pick
    (``FUSED_BLOCKS``), for the float32 default (tf32x3) and bf16; the chosen configurations must not spill."""
    import triton.language as tl

    from autoint_compiler.backends.triton_backend import generate
    from autoint_compiler.compiler import compile_source, load_module

    from .triton_bench import spec_for

    results = []

    def emit(row):
        results.append(row)
        print(", ".join(f"{k}={row[k]}" for k in FIELDS), flush=True)
        if out_dir is not None:
            _write(results, out_dir)

    for width, v in itertools.product(widths, n_vars):
        cs = compile_source(spec_for(width, v))
        mod = load_module(f"{cs.name}_shipped", generate(cs.program, version="ptxas"))
        for kernel in ("_integral_fused_kernel", "_grad_fused_kernel"):
            if not hasattr(mod, kernel):  # the module runs the per-layer kernels (its forward says why)
                emit(dict(width=width, vars=v, kernel=kernel + " (not fused)", precision="", chunk="", block_m="",
                          warps="", registers="", spill_bytes="", shared_bytes="", compile_s=""))  # fmt: skip
                continue
            for prec, (bm, w) in itertools.product(precisions, mod.FUSED_BLOCKS):
                fn = getattr(mod, kernel).fn
                rep = compile_report(fn, {"PREC": prec, "ACC": tl.float32, "BLOCK_M": bm}, w)
                emit(dict(width=width, vars=v, kernel=kernel, precision=prec, chunk=128, block_m=bm, warps=w, **rep))
    return results


def _write(results: list[dict], out_dir: Path) -> None:
    import triton

    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "ptxas.csv").open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=FIELDS)
        wr.writeheader()
        wr.writerows(results)
    lines = [
        f"ptxas report for sm_90 (triton {triton.__version__}), compiled on a CPU-only machine: registers per "
        "thread, bytes spilled per thread, shared memory per block, compile seconds (this machine).",
        "",
        "| " + " | ".join(FIELDS) + " |",
        "|" + "---|" * len(FIELDS),
    ]
    lines += ["| " + " | ".join(str(r[k]) for k in FIELDS) + " |" for r in results]
    (out_dir / "ptxas.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: tuple(int(x) for x in s.split(",") if x)  # noqa: E731
    ap.add_argument("--widths", type=ints, default=(64, 128, 256))
    ap.add_argument("--vars", type=ints, default=(1, 2))
    ap.add_argument("--chunks", type=ints, default=(64,))
    ap.add_argument("--rows", type=ints, default=(64,))
    ap.add_argument("--warps", type=ints, default=(8,))
    ap.add_argument("--precisions", type=lambda s: tuple(s.split(",")), default=("ieee", "tf32x3"))
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer GEMM kernels")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/triton"))
    ap.add_argument("--append", action="store_true", help="add to the rows already in OUT/ptxas.csv")
    ap.add_argument("--shipped", action="store_true", help="the kernels and configurations the modules ship")
    args = ap.parse_args(argv)
    if args.shipped:
        shipped(args.widths, args.vars, args.precisions, args.out)
        return 0
    run(args.widths, args.vars, args.chunks, args.rows, args.warps, args.precisions, args.out, not args.no_layers,
        args.append)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
