"""``python -m benchmarks.antiderivatives [--quick]``: the peer workload of issue 11.

The setup of "Learning Neural Antiderivatives" (Rubab et al. 2025, arXiv 2509.17755), written from its
description: a coordinate MLP Φ with positional encoding (4 octaves on the raw coordinates, input
included), 5 swish layers of width 256, one output, float32, Adam (lr 1e-3), smooth-L1 loss; a derivative
of Φ of order k in *each* coordinate is fitted to a signal — ∂ᵏΦ/∂xᵏ in 1-D, ∂²ᵏΦ/∂xᵏ∂yᵏ in 2-D,
∂³ᵏΦ/∂xᵏ∂yᵏ∂zᵏ in 3-D (the issue's examples: ∂⁴Φ/∂x²∂y², ∂⁶Φ/∂x²∂y²∂z²) — for k = 1, 2, 3, with
batches of 1,024 (1-D), 512 (2-D) and 256 (3-D).

One training step (zero_grad + prediction + smooth-L1 + backward + Adam) is timed for three ways of
computing the prediction, on the same weights and batch:

* ``compiled``: our grad network, ``ac.compile(spec).grad(x)`` (an ordinary forward network; first-order
  backprop only). Spec: ``integrate: [x, y, z]`` for k = 1 (the list form, which compiles today) and
  ``integrate: {x: k, y: k, z: k}`` for k ≥ 2 (the mapping form of issue 11);
* ``torch.func``: ``vmap`` over nested ``jacfwd`` (the survey's method). Φ is written as a function of
  the d scalar coordinates and each nesting is ``jacfwd(·, argnums=i)``, so every level pushes one
  tangent (the cheapest nested-jacfwd formulation; a jacfwd over the whole input vector would compute
  all d partials at each level and keep one);
* ``autograd``: nested ``torch.autograd.grad(create_graph=True)`` of Φ wrt x, one column per level
  (valid because the rows of a batch are independent);
* ``compiled (u=t1+..+tk)`` (1-D, k ≥ 2 only): what compiles before issue 11's mapping form — a graph
  spec with k distinct inputs t1..tk, a node u = t1 + .. + tk feeding the same MLP, and
  ``integrate: [t1, .., tk]``, so ∂ᵏΦ/∂t1..∂tk = dᵏΦ/duᵏ (evaluated at t1 = x, the others 0).

Both baselines run an eager reference MLP (``SurveyMLP``, written here) into which the compiled Φ's
parameters are copied; Φ, the prediction and the parameter gradients of the loss of the three methods
are compared before anything is timed (``max_rel_diff_*`` columns; a mismatch is the row's status).
Methods are timed interleaved (``benchmarks.timing``), weights restored before every sample. Peak memory
of one step: the resident-set high-water mark during the step minus the resident set before it, in the
process (``/proc/self/clear_refs`` + ``VmHWM``), with glibc's mmap threshold fixed at 64 KiB so freed
tensors go back to the OS and the RSS follows live tensor bytes (the method of ``benchmarks/memory.py``);
every configuration runs in a fresh child process (``--in-process`` to debug), so one configuration's
heap cannot distort the next one's peak (checked: a known 4 × 8 MiB step reads 32.0 MiB). tracemalloc
does not see torch's CPU allocations, hence RSS.

A configuration the compiler cannot express (yet) gives a ``skipped: <reason>`` row for ``compiled``;
its baselines are timed anyway in the full run (unless they exceed ``--max-nesting`` derivative levels)
and skipped in ``--quick``. Each compiled row also records the compile time (spec → loaded modules, in the
timing process) and the grad graph's node count (Taylor mode for every order k ≥ 2); 3-D order 3
(∂⁹Φ/∂x³∂y³∂z³, total order 9, issue 20) compiles since the order limit is 9 — its nested baselines
exceed the default ``--max-nesting`` of 6 and are skipped, so that row is checked only against itself
(``tests/test_estimate_high_order.py`` checks order 9 against nested ``torch.func.jvp``). Writes
``antiderivatives.csv`` and ``README.md`` under
``benchmarks/results/antiderivatives/`` (``--quick``: ``.../antiderivatives/quick/``; or ``--out``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from . import machine as machine_mod
from . import report, timing
from .memory import _reset_hwm, _status_kb

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "antiderivatives"
NAMES = ("x", "y", "z")
BATCHES = {1: 1024, 2: 512, 3: 256}
M_COMPILED, M_WORKAROUND = "compiled", "compiled (u=t1+..+tk)"
M_FUNC, M_AUTOGRAD = "torch.func", "autograd"
METHODS = (M_COMPILED, M_WORKAROUND, M_FUNC, M_AUTOGRAD)
KEY = {M_COMPILED: "compiled", M_WORKAROUND: "workaround", M_FUNC: "torch_func", M_AUTOGRAD: "autograd"}
METHOD_DESC = {
    M_COMPILED: "compiled grad network (net.grad, first-order backprop)",
    M_WORKAROUND: "1-D order k through distinct variables: graph node u = t1 + .. + tk, integrate [t1..tk]",
    M_FUNC: "vmap over nested jacfwd (the survey's method)",
    M_AUTOGRAD: "nested autograd.grad(create_graph=True)",
}


# ---------------------------------------------------------------------------------------------------
# the survey's network, as a spec and as an eager module
# ---------------------------------------------------------------------------------------------------
def make_spec(dims: int, order: int, *, width: int = 256, depth: int = 5, octaves: int = 4, seed: int = 0) -> dict:
    """The survey's MLP as a spec; order k in each of the ``dims`` coordinates."""
    names = list(NAMES[:dims])
    integrate = names if order == 1 else {n: order for n in names}
    return {
        "name": f"survey_{dims}d_k{order}",
        "inputs": {n: 1 for n in names},
        "integrate": integrate,
        "output": 1,
        "mlp": {
            "hidden": [width] * depth,
            "activation": "swish",
            "encoding": {"inputs": names, "frequencies": octaves, "include_input": True},
        },
        "dtype": "float32",
        "seed": seed,
    }


def make_workaround_spec(order: int, *, width: int = 256, depth: int = 5, octaves: int = 4, seed: int = 0) -> dict:
    """1-D order k before issue 11: Φ(u) with u = t1 + .. + tk a graph node; ∂ᵏΦ/∂t1..∂tk = dᵏΦ/duᵏ."""
    names = [f"t{i + 1}" for i in range(order)]
    graph, prev = [], names[0]
    for i, n in enumerate(names[1:]):
        node = "u" if i == order - 2 else f"u{i}"
        graph.append({"name": node, "op": "add", "in": [prev, n]})
        prev = node
    graph.append({"name": "enc", "op": "posenc", "in": [prev], "frequencies": octaves, "include_input": True})
    h = "enc"
    for i in range(depth):
        graph += [
            {"name": f"layer{i}", "op": "linear", "in": [h], "out": width},
            {"name": f"h{i}", "op": "swish", "in": [f"layer{i}"]},
        ]
        h = f"h{i}"
    graph.append({"name": "out", "op": "linear", "in": [h], "out": 1})
    return {
        "name": f"survey_1d_k{order}_sum",
        "inputs": {n: 1 for n in names},
        "integrate": names,
        "graph": graph,
        "dtype": "float32",
        "seed": seed,
    }


def workaround_pred(net, order: int):
    def pred(x):  # u = x + 0 + .. + 0
        return net.grad(torch.cat([x, x.new_zeros(x.shape[0], order - 1)], 1))

    return pred


class SurveyMLP(nn.Module):
    """Positional encoding per coordinate [c, sin(2^j π c)_j, cos(2^j π c)_j], coordinates concatenated
    in order (the compiler's layout), then ``depth`` swish layers and a linear output."""

    def __init__(self, dims: int, width: int = 256, depth: int = 5, octaves: int = 4):
        super().__init__()
        self.register_buffer("freqs", torch.tensor([2.0**j * math.pi for j in range(octaves)]))
        enc = dims * (1 + 2 * octaves)
        self.layers = nn.ModuleList(nn.Linear(enc if i == 0 else width, width) for i in range(depth))
        self.out = nn.Linear(width, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for c in range(x.shape[1]):
            a = x[:, c : c + 1] * self.freqs
            parts += [x[:, c : c + 1], torch.sin(a), torch.cos(a)]
        return torch.cat(parts, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        for layer in self.layers:
            h = F.silu(layer(h))
        return self.out(h)

    def load_from_compiled(self, integral: nn.Module) -> None:
        """Copy the compiled Φ's parameters (``layer{i}_weight/bias``, ``out_weight/bias``)."""
        params = dict(integral.named_parameters())
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                layer.weight.copy_(params[f"layer{i}_weight"])
                layer.bias.copy_(params[f"layer{i}_bias"])
            self.out.weight.copy_(params["out_weight"])
            self.out.bias.copy_(params["out_bias"])


def func_pred(mlp: nn.Module, dims: int, order: int):
    """x [N, d] -> ∂^{k..k}Φ [N, 1] by vmap over nested jacfwd, one scalar argument per coordinate."""

    def phi(*coords):
        return mlp(torch.stack(coords).unsqueeze(0)).squeeze()

    g = phi
    for i in range(dims):
        for _ in range(order):
            g = torch.func.jacfwd(g, argnums=i)
    batched = torch.func.vmap(g)
    return lambda x: batched(*x.unbind(1)).unsqueeze(1)


def autograd_pred(mlp: nn.Module, dims: int, order: int):
    def pred(x):
        xr = x.detach().requires_grad_(True)
        g = mlp(xr)
        for i in range(dims):
            for _ in range(order):
                (gx,) = torch.autograd.grad(g.sum(), xr, create_graph=True)
                g = gx[:, i : i + 1]
        return g

    return pred


def make_target(x: torch.Tensor) -> torch.Tensor:
    """A smooth signal to fit (its values do not matter for timing)."""
    return torch.prod(torch.sin(2.0 * x + 0.3), dim=1, keepdim=True) + 0.1 * x.sum(1, keepdim=True)


# ---------------------------------------------------------------------------------------------------
# peak memory (in-process RSS high-water mark)
# ---------------------------------------------------------------------------------------------------
def fix_malloc_threshold() -> bool:
    """glibc: every block above 64 KiB its own mmap, returned on free (no dynamic threshold)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 65536)) and bool(libc.mallopt(-1, 0))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def peak_step_mb(step) -> tuple[float, str]:
    if not _reset_hwm():
        return math.nan, "unavailable (/proc/self/clear_refs not writable)"
    r0 = _status_kb("VmRSS")
    step()
    return (
        _status_kb("VmHWM") - r0
    ) / 1024, "peak RSS delta (clear_refs+VmHWM, mmap threshold 64 KiB, fresh process per configuration)"


# ---------------------------------------------------------------------------------------------------
# one configuration
# ---------------------------------------------------------------------------------------------------
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:240] if msg else ''}"


def run_config(dims: int, order: int, args, log=print, dry: bool = False) -> list[dict] | None:
    """The rows of one configuration. ``dry``: only decide, without torch work, whether anything is to be
    timed (``compile_source`` checks the specs); returns the rows if nothing is, else None."""
    batch = args.batch.get(dims, BATCHES[dims])
    base = {
        "dims": dims,
        "order": order,
        "derivative": "d^" + str(order * dims) + " Phi / " + " ".join(f"d{n}^{order}" for n in NAMES[:dims]),
        "batch": batch,
        "width": args.width,
        "depth": args.depth,
    }
    methods = [M_COMPILED] + ([M_WORKAROUND] if dims == 1 and order >= 2 else []) + [M_FUNC, M_AUTOGRAD]
    rows = {m: dict(base, method=m, method_desc=METHOD_DESC[m], status="ok") for m in methods}

    import autoint_compiler as ac

    # --- our networks: the spec of the survey's setup, and (1-D, k >= 2) the u = t1 + .. + tk workaround
    nets = {}
    specs = {M_COMPILED: make_spec(dims, order, width=args.width, depth=args.depth, seed=args.seed)}
    if M_WORKAROUND in rows:
        specs[M_WORKAROUND] = make_workaround_spec(order, width=args.width, depth=args.depth, seed=args.seed)
    for m, spec in specs.items():
        t0 = time.perf_counter()
        try:
            nets[m] = ac.compile_source(spec) if dry else ac.compile(spec)
            rows[m]["compile_s"] = time.perf_counter() - t0
            rows[m]["grad_nodes"] = nets[m].grad_ir.number_of_nodes()  # Taylor mode for every order k >= 2
        except Exception as exc:  # a spec the compiler cannot express yet
            rows[m]["status"] = f"skipped: the compiler refuses the spec ({_first_line(exc)})"
    nesting = dims * order
    if not nets and args.quick:
        for m in (M_FUNC, M_AUTOGRAD):
            rows[m]["status"] = "skipped: --quick times only configurations the compiler supports"
    elif nesting > args.max_nesting:
        for m in (M_FUNC, M_AUTOGRAD):
            rows[m]["status"] = f"skipped: {nesting} nested derivative levels > --max-nesting {args.max_nesting}"
    live = [m for m in methods if rows[m]["status"] == "ok"]
    if not live:
        return [rows[m] for m in methods]
    if dry:
        return None

    # --- same weights everywhere: the first compiled network's, copied into the others and the eager MLP
    mlp = SurveyMLP(dims, args.width, args.depth).float()
    if nets:
        src = next(iter(nets.values())).integral
        mlp.load_from_compiled(src)
        named = dict(src.named_parameters())
        with torch.no_grad():
            for net in nets.values():
                for name, p in net.integral.named_parameters():
                    p.copy_(named[name])
    params = {m: list(net.parameters()) for m, net in nets.items()}
    params[M_FUNC] = params[M_AUTOGRAD] = list(mlp.parameters())
    snapshot = {m: [p.detach().clone() for p in ps] for m, ps in params.items()}
    preds = {M_FUNC: func_pred(mlp, dims, order), M_AUTOGRAD: autograd_pred(mlp, dims, order)}
    if M_COMPILED in nets:
        preds[M_COMPILED] = nets[M_COMPILED].grad
    if M_WORKAROUND in nets:
        preds[M_WORKAROUND] = workaround_pred(nets[M_WORKAROUND], order)

    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(batch, dims, generator=g, dtype=torch.float32) * 2 - 1
    target = make_target(x)

    # --- agreement at the same weights: Φ, the prediction, the parameter gradients of the loss
    values, grads = {}, {}
    for m in live:
        for p in params[m]:
            p.grad = None
        try:
            pred = preds[m](x)
            F.smooth_l1_loss(pred, target).backward()
        except Exception as exc:
            rows[m]["status"] = f"error: {_first_line(exc)}"
            continue
        values[m] = pred.detach()
        grads[m] = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params[m]]
        for p in params[m]:
            p.grad = None
    ref = next((m for m in (M_COMPILED, M_WORKAROUND, M_AUTOGRAD) if m in values), None)
    with torch.no_grad():
        phi_diff = max((_rel(mlp(x), nets[m].integral(x)) for m in nets if m == M_COMPILED), default=math.nan)
    for m in values:
        vd = _rel(values[m], values[ref])
        gd = max(_rel(a, b) for a, b in zip(grads[m], grads[ref]))
        rows[m].update(agree_ref=ref, max_rel_diff_phi=phi_diff, max_rel_diff_pred=vd, max_rel_diff_param_grad=gd)
        if not (vd < args.tol and gd < args.tol):
            rows[m]["status"] = f"MISMATCH vs {ref}: pred {vd:.2e}, param grads {gd:.2e} (tol {args.tol:g})"
            log(f"[antiderivatives] {dims}-D k={order} {m}: {rows[m]['status']}")
    live = [m for m in live if m in values]

    # --- interleaved timing of one training step per method
    opts = {m: torch.optim.Adam(params[m], lr=args.lr) for m in live}

    def make_step(m):
        opt, pred = opts[m], preds[m]

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.smooth_l1_loss(pred(x), target)
            loss.backward()
            opt.step()
            return loss

        return step

    steps = {m: make_step(m) for m in live}

    def restore():
        with torch.no_grad():
            for m in params:
                for p, s in zip(params[m], snapshot[m]):
                    p.copy_(s)

    s0 = machine_mod.cpu_snapshot()
    stats = timing.time_interleaved(
        steps,
        warmup=args.warmup,
        repeats=args.repeats,
        min_sample_s=0.0,
        between=restore,
        max_total_s=args.max_config_s,
    )
    other = machine_mod.other_load(s0, machine_mod.cpu_snapshot())
    for m, st in stats.items():
        if st.error:
            rows[m]["status"] = f"error: {st.error}"
            continue
        rows[m].update(st.row(), other_cpu_cores=other)
        if args.memory:
            restore()
            peak, how = peak_step_mb(steps[m])
            rows[m].update(peak_mb=peak, mem_method=how)
    restore()
    meds = {m: rows[m]["median_ms"] for m in methods if rows[m].get("median_ms") is not None}
    ours = next((m for m in (M_COMPILED, M_WORKAROUND) if m in meds), None)
    for m in meds:
        for other_m in meds:
            if other_m != m:
                rows[m][f"ratio_vs_{KEY[other_m]}"] = meds[m] / meds[other_m]
        if ours is not None:
            rows[m]["ours"] = ours
            rows[m]["ratio_vs_ours"] = meds[m] / meds[ours]
    return [rows[m] for m in methods]


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------
def _f(v, fmt):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return ""
    return format(v, fmt) if math.isfinite(v) else ""


def markdown(rows: list[dict], info: dict, args, wall_s: float) -> str:
    lines = [
        "# Peer workload: Learning Neural Antiderivatives (issue 11)",
        "",
        f"`python -m benchmarks.antiderivatives{' --quick' if args.quick else ''}` — {wall_s:.0f} s. Machine: "
        f"{info['cpu_model']} ({info['cpu_cores']} cores), torch {info['torch_version']}, "
        f"{info['threads']} thread(s), commit {info['git_commit']}.",
        "",
        f"MLP: posenc 4 octaves (+input) → {args.depth} × {args.width} swish → 1, float32; Adam lr {args.lr:g}; "
        "smooth-L1. One training step (zero_grad + prediction + loss + backward + Adam); median over "
        f"interleaved samples (warm-up {args.warmup}, up to {args.repeats} rounds), weights restored "
        "before every sample. `×ours` = t(method) / t(compiled): how many times slower than our "
        "compiled grad network († = vs the `u=t1+..+tk` workaround, where the mapping spec does not compile). "
        "The methods are checked to agree at the same weights before timing. Peak = RSS high-water mark "
        "of one step minus RSS before it (clear_refs + VmHWM, glibc mmap threshold fixed at 64 KiB, a fresh "
        "process per configuration).",
        "",
        "| dims | k | derivative | batch | method | compile s | grad nodes | median ms | IQR ms | ×ours | peak MiB "
        "| max rel diff (pred / param grads) | status |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        diff = ""
        if r.get("max_rel_diff_pred") not in (None, "") and r["method"] != r.get("agree_ref"):
            diff = (
                f"{_f(r['max_rel_diff_pred'], '.1e')} / {_f(r['max_rel_diff_param_grad'], '.1e')} vs {r['agree_ref']}"
            )
        ratio = _f(r.get("ratio_vs_ours"), ".2f")
        if ratio and r.get("ours") != M_COMPILED:
            ratio += "†"
        lines.append(
            f"| {r['dims']} | {r['order']} | {r['derivative']} | {r['batch']} | {r['method']} | "
            f"{_f(r.get('compile_s'), '.1f')} | {_f(r.get('grad_nodes'), '.0f')} | "
            f"{_f(r.get('median_ms'), '.1f')} | {_f(r.get('iqr_ms'), '.1f')} | {ratio} | "
            f"{_f(r.get('peak_mb'), '.0f')} | {diff} | {r['status']} |"
        )
    others = [float(r["other_cpu_cores"]) for r in rows if r.get("other_cpu_cores") not in (None, "")]
    if others:
        lines += ["", f"Other processes used up to {max(others):.2f} cores while configurations were timed."]
    lines += ["", "Methods: " + "; ".join(f"`{m}` = {d}" for m, d in METHOD_DESC.items()) + "."]
    return "\n".join(lines) + "\n"


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.antiderivatives",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="few repeats; baselines only where the compiler compiles")
    p.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT} (--quick: its quick/ folder)")
    p.add_argument("--dims", default="1,2,3")
    p.add_argument("--orders", default="1,2,3")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--batches", default="1024,512,256", help="batch for 1-D, 2-D, 3-D")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--max-config-s", type=float, default=None, help="stop adding timing rounds after this")
    p.add_argument("--max-nesting", type=int, default=6, help="skip baselines with more derivative levels")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--tol", type=float, default=2e-3, help="agreement tolerance (max relative difference)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--in-process", action="store_true", help="run every configuration in this process")
    p.add_argument("--config-timeout", type=float, default=1800.0, help="seconds per configuration (child)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch = dict(zip((1, 2, 3), _ints(args.batches)))
    if args.out is None:
        args.out = DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT
    q = args.quick
    args.repeats = args.repeats or (3 if q else 11)
    args.warmup = args.warmup or (1 if q else 2)
    args.max_config_s = args.max_config_s or (8.0 if q else 60.0)
    return args


def run_config_in_child(dims: int, order: int, argv: list[str], timeout: float) -> list[dict]:
    """``run_config`` in a fresh process: each configuration starts from a clean heap (the in-process RSS
    peak is only trustworthy there: a heap fragmented by an earlier, larger configuration serves a later
    step's small blocks from pages already resident) and an earlier configuration cannot slow a later one."""
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"], env["MALLOC_TRIM_THRESHOLD_"] = "65536", "0"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "benchmarks.antiderivatives", *argv, "--child", f"{dims},{order}"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [_error_row(dims, order, f"error: configuration timed out after {timeout:.0f} s")]
    if proc.stderr.strip():
        print(proc.stderr.rstrip(), file=sys.stderr)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_ROWS):
            return json.loads(line[len(_ROWS) :])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return [_error_row(dims, order, f"error: child exit {proc.returncode}: {tail[:240]}")]


_ROWS = "ROWS "


def _error_row(dims, order, status):
    return {"dims": dims, "order": order, "derivative": "", "batch": "", "method": "(all)", "status": status}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory and not fix_malloc_threshold():
        print("[antiderivatives] mallopt unavailable: peak memory may under-report", file=sys.stderr)
    if args.child:
        dims, order = _ints(args.child)
        print(_ROWS + json.dumps(run_config(dims, order, args, log=lambda m: print(m, file=sys.stderr))), flush=True)
        return 0
    info = machine_mod.machine_info("cpu")
    t0 = time.perf_counter()
    rows = []
    for dims in _ints(args.dims):
        for order in _ints(args.orders):
            t1 = time.perf_counter()
            if args.in_process:
                config_rows = run_config(dims, order, args)
            else:  # a child only where something is to be timed
                config_rows = run_config(dims, order, args, dry=True)
                if config_rows is None:
                    config_rows = run_config_in_child(dims, order, argv, args.config_timeout)
            for r in config_rows:
                r.update(info)
                rows.append(r)
                med = _f(r.get("median_ms"), ".1f")
                print(
                    f"{dims}-D k={order} {r['method']:<11} {med + ' ms' if med else '':>10}  {r['status']}", flush=True
                )
            print(f"  ({time.perf_counter() - t1:.1f} s)", flush=True)
    wall = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_csv(args.out / "antiderivatives.csv", rows)
    (args.out / "README.md").write_text(markdown(rows, info, args, wall))
    print(f"wrote {args.out / 'antiderivatives.csv'} and README.md ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
