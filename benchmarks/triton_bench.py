"""Triton backend vs the torch backend (eager and torch.compile) vs double backward, on a GPU (issue 12).

Three measurements per network (swish MLP, 3 hidden layers of width W, inputs t[, s], y: 2, 1 output,
float32, IEEE GEMMs everywhere: TF32 off in torch and in the Triton kernels):
- ``integral_fwd``: Φ(x) under ``no_grad``;
- ``grad_fwd``: ∂Φ/∂t (or ∂²Φ/∂t∂s) under ``no_grad``;
- ``train_step``: forward of the grad network, MSE loss, ``backward()`` (parameter gradients).
Methods: ``triton`` (the generated Triton module: under ``no_grad`` each network is ONE whole-network
kernel; training runs the per-layer kernels), ``triton_layers`` (the same module with ``FUSE_NETWORK =
False``: the per-layer kernels for inference too), ``torch`` (the generated torch module, eager),
``torch_compile`` (the same under ``torch.compile``), ``double_backward`` (``autograd.grad(create_graph=True)``
of the torch integral network). Times are CUDA-event medians; ``peak_mib`` is the peak of
``torch.cuda.max_memory_allocated`` during the call over the memory held before it.

Two phases so the GPU machine needs only torch and triton:
  python -m benchmarks.triton_bench --prepare DIR         # CPU: generate the modules into DIR
  python benchmarks/triton_bench.py --run DIR --out OUT   # GPU: correctness check + timings -> OUT/*.csv, *.md
``python -m benchmarks.triton_bench`` does both (a machine with CUDA and the package).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

WIDTHS = (64, 128, 256)
VARS = (1, 2)
BATCHES = tuple(2**k for k in (16, 18, 20))


def spec_for(width: int, n_vars: int) -> dict:
    names = ["t", "s", "r"][:n_vars]
    return {
        "name": f"bench_w{width}_v{n_vars}",
        "inputs": {**{v: 1 for v in names}, "y": 2},
        "integrate": names,
        "output": 1,
        "dtype": "float32",
        "seed": 0,
        "mlp": {"hidden": [width] * 3, "activation": "swish"},
    }


# ---------------------------------------------------------------------------------------------------
# Phase 1 (CPU, needs the package): generate the modules
# ---------------------------------------------------------------------------------------------------


def prepare(folder: Path, widths=WIDTHS, n_vars=VARS) -> None:
    from autoint_compiler import __version__
    from autoint_compiler.backends.triton_backend import generate
    from autoint_compiler.compiler import compile_source

    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for w in widths:
        for v in n_vars:
            cs = compile_source(spec_for(w, v))
            (folder / f"{cs.name}_torch.py").write_text(cs.source)
            (folder / f"{cs.name}_triton.py").write_text(generate(cs.program, version=__version__))
            manifest.append({"name": cs.name, "width": w, "vars": v})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


# ---------------------------------------------------------------------------------------------------
# The stacked-chain pass in the torch backend, on the CPU
# ---------------------------------------------------------------------------------------------------


def _split_args(text: str) -> list[str]:
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "(["
        depth -= ch in ")]"
        if ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    return out + [text[start:].strip()]


def stack_torch_source(source: str, grad_ir) -> tuple[str, int]:
    """The torch backend's module with each stack of ``stacking.find_stacks`` in GradNet.forward run as
    one ``F.linear`` over ``torch.cat`` of the chains (bias added to its blocks). A benchmark-only text
    rewrite of the generated ``vN = F.linear(...)`` lines; returns (source, stacks rewritten)."""
    import re

    from autoint_compiler.core.stacking import find_stacks

    lines = source.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("class GradNet"))
    pat = re.compile(r"^(\s+)v(\d+) = F\.linear\((.*)\)$")
    where = {}
    for i in range(start, len(lines)):
        m = pat.match(lines[i])
        if m:
            where[int(m.group(2))] = (i, m.group(1), _split_args(m.group(3)))
    done = 0
    replace: dict[int, list[str]] = {}
    for st in find_stacks(grad_ir):
        if not all(m in where for m in st.members):
            continue
        idx = [where[m][0] for m in st.members]
        first, last = min(idx), max(idx)
        names = [f"v{m}" for m in st.members]
        between = [ln for i, ln in enumerate(lines[first:last], first) if i not in idx]
        if any(re.search(rf"\b{n}\b", ln) for ln in between for n in names):
            continue
        ind, args0 = where[st.members[0]][1], where[st.members[0]][2]
        ins = ", ".join(where[m][2][0] for m in st.members)
        out = grad_ir.width(st.members[0])
        body = [f"{ind}_s = F.linear(torch.cat([{ins}]), {args0[1]}).view({len(names)}, -1, {out})"]
        body.append(f"{ind}{', '.join(names)} = _s.unbind(0)")
        for m, has_bias in zip(st.members, st.bias):
            if has_bias:
                body.append(f"{ind}v{m} = v{m} + {where[m][2][2]}")
        for i in idx:
            replace[i] = []
        replace[last] = body
        done += 1
    out_lines = []
    for i, ln in enumerate(lines):
        out_lines += replace.get(i, [ln])
    return "\n".join(out_lines) + "\n", done


def cpu_stacking(out_dir: Path, width=128, batch=4096, reps=7) -> None:
    """Torch backend with and without stacked chains, one CPU thread, 1-3 variables -> cpu_stacking.*"""
    import torch

    from autoint_compiler.compiler import compile_source, load_module

    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n_vars in (1, 2, 3):
        cs = compile_source(spec_for(width, n_vars))
        src, n = stack_torch_source(cs.source, cs.grad_ir)
        plain, stacked = load_module(cs.name, cs.source), load_module(cs.name + "_stacked", src)
        torch.manual_seed(0)
        a = plain.IntegralNet()
        b = stacked.IntegralNet()
        b.load_state_dict(a.state_dict())
        ga, gb = plain.GradNet.from_integral(a), stacked.GradNet.from_integral(b)
        x = torch.rand(batch, plain.IN_FEATURES) * 2 - 1
        target = torch.rand(batch, 1)
        with torch.no_grad():
            assert torch.allclose(ga(x), gb(x), rtol=1e-4, atol=1e-6)

        def fwd(g, x=x):
            with torch.no_grad():
                g(x)

        def train(g, x=x, target=target):
            for p in g.parameters():
                p.grad = None
            ((g(x) - target) ** 2).mean().backward()

        for metric, fn in (("grad_fwd", fwd), ("train_step", train)):
            times = {"plain": [], "stacked": []}
            for g in (ga, gb):
                fn(g)
            for _ in range(reps):  # interleaved, so drift hits both
                for name, g in (("plain", ga), ("stacked", gb)):
                    t0 = time.perf_counter()
                    fn(g)
                    times[name].append(1e3 * (time.perf_counter() - t0))
            med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
            rows.append([width, n_vars, batch, metric, n, f"{med['plain']:.2f}", f"{med['stacked']:.2f}"])
            print(rows[-1], flush=True)
    with (out_dir / "cpu_stacking.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["width", "vars", "batch", "metric", "stacks", "plain_ms", "stacked_ms"])
        w.writerows(rows)
    lines = [
        f"Torch backend on the CPU, one thread, batch {batch}, swish MLP 3x{width}: chains of a layer as separate "
        "F.linear calls (plain) or one F.linear over torch.cat of the chains (stacked); medians of "
        f"{reps} interleaved runs.",
        "",
        "| vars | metric | stacks | plain ms | stacked ms | plain / stacked |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r[1]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} | {float(r[5]) / float(r[6]):.2f}x |")
    (out_dir / "cpu_stacking.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------------
# Phase 2 (GPU, torch + triton only)
# ---------------------------------------------------------------------------------------------------


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    return mod


def _double_backward(integral, columns):
    import torch

    def grad(x):
        x = x.detach().requires_grad_(True)
        out = integral(x)
        for c in columns:
            (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
            out = g[:, c : c + 1]
        return out

    return grad


def _time(fn, warmup=2, iters=7):
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return times[len(times) // 2], peak


def _networks(folder: Path, entry: dict):
    """(torch module, triton module, torch Φ, triton Φ with the same weights, their grad networks) on CUDA."""
    import torch

    tm, xm = _load(folder / f"{entry['name']}_torch.py"), _load(folder / f"{entry['name']}_triton.py")
    torch.manual_seed(0)
    ref = tm.IntegralNet(device="cuda")
    net = xm.IntegralNet(device="cuda")
    net.load_state_dict(ref.state_dict())
    return tm, xm, ref, net, tm.GradNet.from_integral(ref), xm.GradNet.from_integral(net)


def check(folder: Path, entry: dict, tol=2e-4) -> dict:
    """Triton vs torch backend on CUDA: both networks (whole-network kernels, then per-layer kernels) and
    the parameter gradients of a grad loss; the first whole-network calls' time (compile + autotune)."""
    import torch

    tm, xm, ref, net, gref, gnet = _networks(folder, entry)
    x = torch.rand(4099, tm.IN_FEATURES, device="cuda") * 2 - 1

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()

    out = {
        "name": entry["name"],
        "fused": "def _grad_fused_kernel(" in (folder / f"{entry['name']}_triton.py").read_text(),
    }
    with torch.no_grad():
        xm.FUSE_NETWORK = True  # opt-in: the whole-network kernels first
        t0 = time.time()
        out["integral"] = rel(net(x), ref(x))
        out["grad"] = rel(gnet(x), gref(x))
        torch.cuda.synchronize()
        out["first_fused_calls_s"] = round(time.time() - t0, 2)
        xm.FUSE_NETWORK = False
        out["integral_layers"] = rel(net(x), ref(x))
        out["grad_layers"] = rel(gnet(x), gref(x))
    for g in (gref, gnet):
        (g(x) ** 2).mean().backward()
    out["param_grads"] = max(
        rel(q.grad, p.grad) for p, q in zip(ref.parameters(), net.parameters()) if p.grad is not None
    )
    out["ok"] = all(out[k] <= tol for k in ("integral", "grad", "integral_layers", "grad_layers", "param_grads"))
    return out


def run(
    folder: Path, out_dir: Path, budget_s: float, compile_widths, batches=BATCHES, widths=WIDTHS, train_widths=WIDTHS
) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    device = torch.cuda.get_device_name()
    meta = {"device": device, "torch": torch.__version__, "triton": __import__("triton").__version__}
    checks = []
    for e in manifest:  # every network (the whole-network kernels differ by width: chunks past 128)
        try:
            checks.append(check(folder, e))
        except Exception as exc:  # a failure is a result too: record it and go on
            checks.append({"name": e["name"], "error": f"{type(exc).__name__}: {exc}"[:2000], "ok": False})
        print(json.dumps(checks[-1]), flush=True)
        # after every network: a run cut short by a time limit keeps what it checked
        (out_dir / "check.json").write_text(json.dumps({"meta": meta, "checks": checks}, indent=1))
    csv_path = out_dir / "triton_bench.csv"
    fields = ["width", "vars", "batch", "metric", "method", "ms", "peak_mib"]
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerow(fields)
    order = sorted(
        manifest, key=lambda e: (e["width"] not in compile_widths, e["width"] != 128, -e["width"], e["vars"])
    )
    for entry in order:
        if entry["width"] not in widths:
            continue
        tm, xm, ref, net, gref, gnet = _networks(folder, entry)
        dbl = _double_backward(ref, tm.INTEGRATION_COLUMNS)
        methods = {
            "triton": (net, gnet),
            "triton_layers": (net, gnet),
            "torch": (ref, gref),
            "double_backward": (ref, dbl),
        }
        if entry["width"] in compile_widths:
            methods["torch_compile"] = (torch.compile(ref, dynamic=True), torch.compile(gref, dynamic=True))
        for batch in batches:
            if time.time() - start > budget_s:
                print("time budget reached: stopping", flush=True)
                _report(csv_path, out_dir, meta)
                return
            x = torch.rand(batch, tm.IN_FEATURES, device="cuda") * 2 - 1
            target = torch.rand(batch, 1, device="cuda")
            for method, (integral, grad) in methods.items():
                rows = []

                def integral_fwd(integral=integral, x=x, method=method, xm=xm):
                    xm.FUSE_NETWORK = method != "triton_layers"
                    with torch.no_grad():
                        integral(x)

                def grad_fwd(grad=grad, method=method, x=x, xm=xm):
                    xm.FUSE_NETWORK = method != "triton_layers"
                    if method == "double_backward":
                        grad(x)
                    else:
                        with torch.no_grad():
                            grad(x)

                def train(grad=grad, x=x, target=target, ref=ref, net=net):
                    for p in ref.parameters():
                        p.grad = None
                    for p in net.parameters():
                        p.grad = None
                    ((grad(x) - target) ** 2).mean().backward()

                for metric, fn in (("integral_fwd", integral_fwd), ("grad_fwd", grad_fwd), ("train_step", train)):
                    if metric == "integral_fwd" and method == "double_backward":
                        continue
                    if metric == "train_step" and (method == "triton_layers" or entry["width"] not in train_widths):
                        continue  # training always runs the per-layer kernels
                    try:
                        ms, peak = _time(fn)
                    except Exception as exc:  # an OOM or a compile failure is a row, not the end of the run
                        print(f"{entry['name']} {batch} {method} {metric}: {type(exc).__name__}: {exc}"[:300])
                        ms, peak = float("nan"), float("nan")
                        torch.cuda.empty_cache()
                    rows.append([entry["width"], entry["vars"], batch, metric, method, f"{ms:.4f}", f"{peak:.1f}"])
                    print(rows[-1], flush=True)
                with csv_path.open("a", newline="") as f:
                    csv.writer(f).writerows(rows)
    _report(csv_path, out_dir, meta)


def _report(csv_path: Path, out_dir: Path, meta: dict) -> None:
    rows = list(csv.DictReader(csv_path.open()))
    table: dict[tuple, dict] = {}
    for r in rows:
        key = (int(r["width"]), int(r["vars"]), int(r["batch"]), r["metric"])
        table.setdefault(key, {})[r["method"]] = (float(r["ms"]), float(r["peak_mib"]))
    methods = [m for m in ("triton", "triton_layers", "torch", "torch_compile", "double_backward")
               if any(m in v for v in table.values())]  # fmt: skip
    lines = [
        f"Device: {meta['device']} (torch {meta['torch']}, triton {meta['triton']}); float32, TF32 off; "
        "ms = CUDA-event median; peak = MiB above the memory held before the call. `triton`: whole-network "
        "kernels for the forwards, per-layer kernels for training; `triton_layers`: per-layer kernels.",
        "",
        "| width | vars | batch | metric | "
        + " | ".join(f"{m} ms (MiB)" for m in methods)
        + " | torch / triton | layers / triton |",
        "|---:|---:|---:|---|" + "---:|" * len(methods) + "---:|---:|",
    ]
    for key in sorted(table):
        cells = []
        for m in methods:
            v = table[key].get(m)
            cells.append("" if v is None else f"{v[0]:.3f} ({v[1]:.0f})")
        t = table[key].get("triton")
        ratios = []
        for other in ("torch", "triton_layers"):
            b = table[key].get(other)
            ratios.append(f"{b[0] / t[0]:.2f}x" if t and b and t[0] > 0 else "")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(cells + ratios) + " |")
    (out_dir / "triton_bench.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", type=Path, help="generate the modules into this folder (CPU)")
    ap.add_argument("--run", type=Path, help="benchmark the modules in this folder (GPU)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/triton"))
    ap.add_argument("--budget", type=float, default=3600.0, help="stop starting new sizes after this many s")
    ap.add_argument("--compile-widths", type=str, default="64,128,256", help="widths measured under torch.compile")
    ap.add_argument("--widths", type=str, default="64,128,256")
    ap.add_argument("--batches", type=str, default="16,18,20", help="log2 of the batch sizes")
    ap.add_argument("--train-widths", type=str, default="64,128,256", help="widths whose training step is timed")
    ap.add_argument("--cpu-stacking", action="store_true", help="measure stacked chains in the torch backend (CPU)")
    args = ap.parse_args(argv)
    if args.cpu_stacking:
        cpu_stacking(args.out)
        return 0
    widths = tuple(int(w) for w in args.widths.split(",") if w)
    compile_widths = tuple(int(w) for w in args.compile_widths.split(",") if w)
    batches = tuple(2 ** int(b) for b in args.batches.split(",") if b)
    train_widths = tuple(int(w) for w in args.train_widths.split(",") if w)
    if args.prepare:
        prepare(args.prepare, widths)
    if args.run:
        run(args.run, args.out, args.budget, compile_widths, batches, widths, train_widths)
    if not args.prepare and not args.run:
        folder = Path(os.environ.get("TMPDIR", "/tmp")) / "autoint_triton_bench"
        prepare(folder, widths)
        run(folder, args.out, args.budget, compile_widths, batches, widths, train_widths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
