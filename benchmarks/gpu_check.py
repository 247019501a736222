"""The GPU step (issue 21): every whole-network kernel configuration checked in its own process, then
the timing table. Runs on a bare H100/H200 with only torch and triton installed.

Two phases, so the GPU machine needs no package install:
  python -m benchmarks.gpu_check --prepare DIR          # CPU, needs the package: generate the modules
  python benchmarks/gpu_check.py --run DIR --out OUT    # GPU: checks, then timings, written after every row

Phase 1 (``check``): for each network and each whole-network kernel configuration (fp32 GEMM precision
x register-tile chunk x row block x warps), a fresh process with ``CUDA_LAUNCH_BLOCKING=1`` computes Φ and
the grad network through the whole-network kernel at an odd row count and compares them with the torch
backend (float32, TF32 off). A fault (an illegal memory access kills the CUDA context) then names the
kernel, the network and the configuration instead of ending the run. Results: ``OUT/check.jsonl``.

Phase 2 (``table``): CUDA-event medians at 2^20 rows for the grad network's forward and a training step
(MSE on the grad network, ``backward()``): Triton (whole-network kernel, per-layer kernels fp32 / TF32 /
bf16), torch eager, ``torch.compile``, ``torch.compile`` + bf16 autocast, double backward, and the GEMM
floor (the hidden layers' GEMMs alone for the primal and tangent chains, fp32 / TF32 / bf16); relative
error against a float64 truth. Results: ``OUT/table.csv`` and ``OUT/table.md`` after every row.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # triton_bench's helpers, also when run as a plain script
import triton_bench  # noqa: E402 - stdlib-only at import: the GPU machine needs only torch and triton

#: (fp32 GEMM precision, chunk, BLOCK_M, num_warps): the configurations the autotuner may pick and the
#: neighbours that bisect a fault (precision, chunking, row block, warps)
PRECISIONS = ("ieee", "tf32", "tf32x3")
CHUNKS = (32, 64, 128)
BLOCKS = ((32, 4), (64, 4), (64, 8), (128, 8))
#: the configurations the generated modules may run (FUSED_BLOCKS in templates/triton_module.py.j2)
SAFE_BLOCKS = ((64, 4), (128, 8))
#: max relative error of a correct kernel against the float32 torch backend: a fault is off by O(1)
TOLERANCE = {"ieee": 1e-5, "tf32x3": 1e-5, "tf32": 2e-2, "bf16": 5e-2, "fp16": 2e-2}


def safe_configs(manifest) -> list:
    """(name, (precision, chunk, rows, warps)) for what the generated modules may run: every network,
    tf32x3 / tf32 / bf16, the safe row blocks, 128-column tiles (and 64 for the 128-wide networks)."""
    out = []
    for e in manifest:
        chunks = (64, 128) if e["width"] > 64 else (128,)
        for prec, chunk, (block, warps) in itertools.product(("tf32x3", "tf32", "bf16"), chunks, SAFE_BLOCKS):
            out.append((e["name"], (prec, chunk, block, warps)))
    return out


def spec_for(width: int, n_vars: int) -> dict:
    """triton_bench's network (swish MLP, 3 hidden layers of ``width``), named gpu_w<width>_v<vars>."""
    return {**triton_bench.spec_for(width, n_vars), "name": f"gpu_w{width}_v{n_vars}"}


def prepare(folder: Path, widths=(64, 128), n_vars=(1, 2, 3)) -> None:
    from autoint_compiler import __version__
    from autoint_compiler.backends.triton_backend import generate
    from autoint_compiler.compiler import compile_source

    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for w in widths:
        for v in n_vars:
            cs = compile_source(spec_for(w, v))
            (folder / f"{cs.name}_torch.py").write_text(cs.source)
            for chunk in CHUNKS:
                text = generate(cs.program, version=__version__, fused_chunk=chunk)
                (folder / f"{cs.name}_triton_c{chunk}.py").write_text(text)
            manifest.append({"name": cs.name, "width": w, "vars": v})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


# ---------------------------------------------------------------------------------------------------
# Phase 1: one configuration in this process (run in a child with CUDA_LAUNCH_BLOCKING=1)
# ---------------------------------------------------------------------------------------------------


_load = triton_bench._load  # a generated module from its file (needs only torch and triton)


def one(folder: Path, name: str, prec: str, chunk: int, block: int, warps: int, rows: int, time_rows: int) -> dict:
    import torch
    import triton

    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: under TRITON_INTERPRET=1 (a dry run)
    tm = _load(folder / f"{name}_torch.py")
    xm = _load(folder / f"{name}_triton_c{chunk}.py")
    xm.FUSE_NETWORK = True
    if prec in ("bf16", "fp16", "tf32"):
        xm.PRECISION = prec  # the mixed-precision path, chosen at run time
    else:
        xm.FUSED_FP32_PRECISION = prec
    for k in ("_integral_fused_kernel", "_grad_fused_kernel"):
        getattr(xm, k).configs = [triton.Config({"BLOCK_M": block}, num_warps=warps, num_stages=1)]
    torch.manual_seed(0)
    ref = tm.IntegralNet(device=dev)
    net = xm.IntegralNet(device=dev)
    net.load_state_dict(ref.state_dict())
    gref, gnet = tm.GradNet.from_integral(ref), xm.GradNet.from_integral(net)
    out = {"name": name, "prec": prec, "chunk": chunk, "block": block, "warps": warps, "rows": rows}
    x = torch.rand(rows, tm.IN_FEATURES, device=dev) * 2 - 1
    with torch.no_grad():
        for key, a, b in (("integral", net, ref), ("grad", gnet, gref)):
            t0 = time.time()
            y = a(x)
            _sync()
            out[f"{key}_first_s"] = round(time.time() - t0, 2)
            r = b(x)
            out[f"{key}_err"] = ((y - r).abs().max() / r.abs().max().clamp_min(1e-6)).item()
        if time_rows:
            x = torch.rand(time_rows, tm.IN_FEATURES, device=dev) * 2 - 1
            for key, a in (("integral", net), ("grad", gnet)):
                out[f"{key}_ms"] = _median_ms(lambda a=a: a(x))
    return out


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_ms(fn, warmup=2, iters=9) -> float:
    import torch

    if not torch.cuda.is_available():  # the dry run
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def check(folder: Path, out_dir: Path, names, configs, rows=4099, time_rows=2**20, jobs=8, timeout=120) -> list:
    """Every (network, configuration) in a child process, ``jobs`` at a time; a line per result."""
    from concurrent.futures import ThreadPoolExecutor

    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "check.jsonl"
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1", "PYTHONUNBUFFERED": "1"}

    def child(task):
        name, (prec, chunk, block, warps) = task
        cmd = [sys.executable, str(HERE / "gpu_check.py"), "--one", str(folder), name, prec, str(chunk),
               str(block), str(warps), str(rows), str(time_rows)]  # fmt: skip
        row = {"name": name, "prec": prec, "chunk": chunk, "block": block, "warps": warps}
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            if p.returncode == 0 and lines:
                row = json.loads(lines[-1])
            else:
                tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
                row["error"] = " | ".join(tail)[-600:]
        except subprocess.TimeoutExpired:
            row["error"] = f"timeout after {timeout} s"
        row["ok"] = "error" not in row and max(row["integral_err"], row["grad_err"]) < TOLERANCE[prec]
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        return row

    tasks = [(n, c) for n in names for c in configs] if configs is not None else names
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(child, tasks))


# ---------------------------------------------------------------------------------------------------
# Phase 2: the timing table
# ---------------------------------------------------------------------------------------------------


def _truth(tm, ref, x):
    """The grad network in float64 (same weights): the truth every method's error is measured against."""
    import copy

    import torch

    ref64 = copy.deepcopy(ref).double()
    with torch.no_grad():
        return tm.GradNet.from_integral(ref64)(x.double())


def table(folder: Path, out_dir: Path, names, rows=2**20, budget_s=400.0) -> None:
    """Grad forward and training step per method; a CSV/markdown row written as soon as it is measured."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (dry run)"
    meta = {"device": device, "torch": torch.__version__, "triton": __import__("triton").__version__, "rows": rows}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    path = out_dir / "table.csv"
    new = not path.exists()
    f = path.open("a", newline="")
    w = csv.writer(f)
    if new:
        w.writerow(["network", "method", "grad_fwd_ms", "train_step_ms", "rel_err_vs_f64"])
    for name in names:
        if not _table_network(folder, name, rows, w, f, start + budget_s):
            break
    f.close()


def _table_network(folder: Path, name: str, rows: int, w, f, deadline: float) -> bool:
    """One network's rows (False: the time budget ran out). The Triton module runs with its generated
    defaults (whole-network kernel for inference, autotuned among its safe block configurations);
    its PRECISION is switched at run time for the tf32 / bf16 rows."""
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run under TRITON_INTERPRET=1
    manifest = {e["name"]: e for e in json.loads((folder / "manifest.json").read_text())}
    e = manifest[name]
    tm = _load(folder / f"{name}_torch.py")
    xm = _load(folder / f"{name}_triton_c128.py")
    torch.manual_seed(0)
    ref = tm.IntegralNet(device=dev)
    net = xm.IntegralNet(device=dev)
    net.load_state_dict(ref.state_dict())
    gref, gnet = tm.GradNet.from_integral(ref), xm.GradNet.from_integral(net)
    x = torch.rand(rows, tm.IN_FEATURES, device=dev) * 2 - 1
    target = torch.rand(rows, 1, device=dev)
    truth = _truth(tm, ref, x[: 2**16])
    net_params, ref_params = list(gnet.parameters()), list(gref.parameters())

    def triton(precision, fused=True):
        def fn(inp):
            xm.PRECISION, xm.FUSE_NETWORK = precision, fused
            return gnet(inp)

        return fn

    def autocast_bf16(fn):
        def run(inp):
            with torch.autocast(dev, dtype=torch.bfloat16):
                return fn(inp)

        return run

    def double_backward(inp):
        inp = inp.detach().requires_grad_(True)
        out = ref(inp)
        for c in tm.INTEGRATION_COLUMNS:
            (g,) = torch.autograd.grad(out.sum(), inp, create_graph=True)
            out = g[:, c : c + 1]
        return out

    methods = [  # (name, make the callable, its parameters)
        ("triton_fp32", lambda: triton("fp32"), net_params),
        ("triton_tf32", lambda: triton("tf32"), net_params),
        ("triton_bf16", lambda: triton("bf16"), net_params),
        ("triton_layers_fp32", lambda: triton("fp32", fused=False), net_params),
        ("torch_eager_fp32", lambda: gref, ref_params),
        ("torch_compile_fp32", lambda: torch.compile(gref), ref_params),
        ("torch_compile_bf16_autocast", lambda: autocast_bf16(torch.compile(gref)), ref_params),
        ("double_backward_fp32", lambda: double_backward, ref_params),
    ]
    if dev == "cpu":  # the dry run: no inductor compiles; bf16 needs a GPU in the Triton interpreter
        methods = [m for m in methods if "compile" not in m[0] and "bf16" not in m[0]]
    for method, make, params in methods:
        if time.time() > deadline:
            print("time budget reached: stopping", flush=True)
            return False
        row = [name, method]
        try:
            fn = make()
            t0 = time.time()
            if method == "double_backward_fp32":
                err, fwd_ms = float("nan"), _median_ms(lambda fn=fn: fn(x))
            else:
                with torch.no_grad():
                    y = fn(x[: 2**16]).double()
                err = ((y - truth).abs().max() / truth.abs().max()).item()
                first = time.time() - t0

                def fwd(fn=fn):
                    with torch.no_grad():
                        fn(x)

                fwd_ms = _median_ms(fwd)

            def step(fn=fn, params=params):
                for p in params:
                    p.grad = None
                ((fn(x).float() - target) ** 2).mean().backward()

            step_ms = _median_ms(step)
            row += [round(fwd_ms, 3), round(step_ms, 3), f"{err:.2e}"]
            print(
                json.dumps(
                    {"row": row, "first_call_s": round(time.time() - t0 if method.startswith("double") else first, 1)}
                ),
                flush=True,
            )
        except Exception as exc:  # a failure is a result too
            row += ["", "", f"error: {type(exc).__name__}: {str(exc)[:200]}"]
            print(json.dumps({"row": row}), flush=True)
        w.writerow(row)
        f.flush()
    xm.PRECISION, xm.FUSE_NETWORK = "fp32", True
    # the GEMM floor: the hidden layers' GEMMs alone, once per chain (primal + tangents)
    width, chains = e["width"], 2 ** e["vars"]
    for dt, label in ((torch.float32, "fp32"), (torch.float32, "tf32"), (torch.bfloat16, "bf16")):
        torch.backends.cuda.matmul.allow_tf32 = label == "tf32"
        a = torch.rand(rows, width, device=dev, dtype=dt)
        wt = torch.rand(width, width, device=dev, dtype=dt)

        def gemms(a=a, wt=wt, n=2 * chains):  # layer1, layer2: the width x width GEMMs of 3 hidden layers
            for _ in range(n):
                torch.mm(a, wt)

        ms = _median_ms(gemms)
        row = [name, f"gemm_floor_fwd_{label}", round(ms, 3), round(3 * ms, 3), ""]
        print(json.dumps({"row": row}), flush=True)
        w.writerow(row)
        f.flush()
    torch.backends.cuda.matmul.allow_tf32 = False
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", type=Path)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--out", type=Path, default=Path("gpu_out"))
    ap.add_argument("--one", nargs=8)
    ap.add_argument("--names", default="", help="networks to check (default: every prepared one)")
    ap.add_argument("--table", default="gpu_w128_v1,gpu_w64_v2,gpu_w128_v2", help="networks to time")
    ap.add_argument(
        "--bisect", action="store_true", help="every precision x chunk x block x warps, not just the safe ones"
    )
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--budget", type=float, default=400.0)
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
    if args.one:
        folder, name, prec, chunk, block, warps, rows, time_rows = args.one
        row = one(Path(folder), name, prec, int(chunk), int(block), int(warps), int(rows), int(time_rows))
        print(json.dumps(row), flush=True)
    if args.run:
        manifest = json.loads((args.run / "manifest.json").read_text())
        names = args.names.split(",") if args.names else [e["name"] for e in manifest]
        if args.bisect:
            tasks = [(n, (p, c, b, w)) for n in names for p, c, (b, w) in itertools.product(PRECISIONS, CHUNKS, BLOCKS)]
        else:
            tasks = [task for task in safe_configs(manifest) if task[0] in names]
        if not args.table_only:
            check(args.run, args.out, tasks, None, jobs=args.jobs)
        table(args.run, args.out, [n for n in args.table.split(",") if n], budget_s=args.budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
