"""``python -m benchmarks.run`` (``make bench``): the issue-5 benchmarks of autoint_compiler.

Sections (``--sections``): forward (grad-network forward), train (training step + peak memory),
quad (definite integrals: closed form vs quadrature), compile (compile time, generated code size).
Writes ``<out>/{forward,train,quadrature,compile,summary}.csv``, ``<out>/README.md`` and PNG plots, and
prints the targets summary.  ``--quick`` is a tiny smoke configuration (written to
``benchmarks/results/quick`` unless ``--out`` is given).  See benchmarks/README.md for the choices.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from . import machine as machine_mod
from . import memory, nets, report, timing
from . import methods as M

FWD_KEYS = {"generated": M.FWD_GENERATED, "autograd": M.FWD_AUTOGRAD, "jvp": M.FWD_JVP, "jacfwd": M.FWD_JACFWD,
            "hand": M.FWD_HAND, "hand_fused": M.FWD_HAND_FUSED, "plain": M.FWD_PLAIN}
TRAIN_KEYS = {"generated": M.TR_GENERATED, "generated_compile": M.TR_GENERATED_COMPILE,
              "generated_pointwise": M.TR_GENERATED_PW, "double": M.TR_DOUBLE,
              "double_compile": M.TR_DOUBLE_COMPILE, "func": M.TR_FUNC, "hand": M.TR_HAND,
              "hand_compile": M.TR_HAND_COMPILE, "hand_fused": M.TR_HAND_FUSED}
SECTIONS = ("forward", "train", "quad", "compile")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# The default plan (about 10-15 min on 2 cores, see README.md): every size x activation for the
# forward at batches 2^10, 2^12, 2^14, 2^16; training at 2^14 for every size x activation with the eager
# methods, the torch.compile methods at 4x128 (swish and sine) only -- inductor needs 20-60 s per graph
# on 2 cores; quadrature on 4x128 (swish, sine); compile time for every size x activation.
DEFAULTS = dict(sizes="4x64,4x128,8x256", activations="swish,sine", fwd_batches="2^10,2^12,2^14,2^16",
                train_batches="2^14", compile_configs="4x128:swish:2^14,4x128:sine:2^14", quad_sizes="4x128",
                quad_ns="16,32,64,128,256,512", quad_problems=1024, repeats=7, warmup=2, max_config_s=40.0,
                memory="all")
QUICK = dict(sizes="2x16", activations="swish,sine", fwd_batches="2^8", train_batches="2^8", compile_configs="none",
             quad_sizes="2x16", quad_ns="16,32", quad_problems=64, repeats=1, warmup=1, max_config_s=5.0,
             memory="none")


def _int(s: str) -> int:
    s = s.strip()
    if "^" in s:
        b, e = s.split("^")
        return int(b) ** int(e)
    if "**" in s:
        b, e = s.split("**")
        return int(b) ** int(e)
    return int(s)


def _list(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny smoke configuration (one repeat, seconds)")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    p.add_argument("--sizes", help="MLP sizes DEPTHxWIDTH, comma list (default 4x64,4x128,8x256)")
    p.add_argument("--activations", help="swish,sine")
    p.add_argument("--fwd-batches", help="batches for the forward section, e.g. 2^10,2^14")
    p.add_argument("--fwd-methods", default="all", help=f"'all' or comma list of {list(FWD_KEYS)}")
    p.add_argument("--jacfwd-max-batch", type=_int, default=2**14,
                   help="skip vmap(jacfwd) above this batch (it computes all D tangents; default 2^14)")
    p.add_argument("--train-batches", help="batches for the training section")
    p.add_argument("--train-methods", default="all", help=f"'all' or comma list of {list(TRAIN_KEYS)}")
    p.add_argument("--compile-configs", help="where the torch.compile methods run: 'all', 'none' or "
                   "SIZE:ACT:BATCH,... (default 4x128:swish:2^14,4x128:sine:2^14)")
    p.add_argument("--memory", choices=("all", "target", "none"),
                   help="peak memory subprocesses: every training row, only 4x128 swish 2^14, or none")
    p.add_argument("--quad-sizes", help="sizes for the quadrature section (both activations)")
    p.add_argument("--quad-ns", help="quadrature sample counts")
    p.add_argument("--quad-problems", type=int, help="integrals per batch in the quadrature section")
    p.add_argument("--repeats", type=int, help="timed samples per method (after warm-up)")
    p.add_argument("--warmup", type=int, help="untimed warm-up calls per method")
    p.add_argument("--max-config-s", type=float, help="stop adding rounds after this many seconds per "
                   "configuration (at least 3 rounds are kept)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads (default: cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="CORES",
                   help="before each timed configuration wait until other processes use < CORES cores "
                   "(0: do not wait; the machine may be shared)")
    p.add_argument("--wait-max", type=float, default=300.0, help="longest wait per configuration, s")
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args(argv)
    base = QUICK if a.quick else DEFAULTS
    for k, v in base.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    if a.out is None:
        a.out = DEFAULT_OUT / "quick" if a.quick else DEFAULT_OUT
    a.sections = _list(a.sections)
    for s in a.sections:
        if s not in SECTIONS:
            p.error(f"unknown section {s!r}")
    a.sizes, a.activations = _list(a.sizes), _list(a.activations)
    a.fwd_batches = [_int(v) for v in _list(a.fwd_batches)]
    a.train_batches = [_int(v) for v in _list(a.train_batches)]
    a.quad_sizes, a.quad_ns = _list(a.quad_sizes), [int(v) for v in _list(a.quad_ns)]
    a.fwd_methods = list(FWD_KEYS.values()) if a.fwd_methods == "all" else [FWD_KEYS[k] for k in _list(a.fwd_methods)]
    a.train_methods = (list(TRAIN_KEYS.values()) if a.train_methods == "all"
                       else [TRAIN_KEYS[k] for k in _list(a.train_methods)])
    if a.compile_configs in ("all", "none"):
        a.compile_set = a.compile_configs
    else:
        a.compile_set = set()
        for c in _list(a.compile_configs):
            s, act, n = c.split(":")
            a.compile_set.add((s, act, _int(n)))
    return a, argv


class Runner:
    def __init__(self, a):
        self.a = a
        self.cache: dict = {}
        self.machine = machine_mod.machine_info(a.device)

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def bench(self, size, act):
        """The built configuration, or an error string if compiling/building it failed."""
        key = (size, act)
        if key not in self.cache:
            try:
                self.cache[key] = nets.build(size, act, seed=self.a.seed, device=self.a.device)
            except Exception as exc:
                msg = str(exc).strip().splitlines()
                self.cache[key] = f"build failed: {type(exc).__name__}: {msg[-1][:200] if msg else ''}"
                self.log(f"{size} {act}: {self.cache[key]}")
        return self.cache[key]

    def _failed(self, size, act, **kw) -> list[dict]:
        return [{"size": size, "activation": act, **kw, "method": "(all)", "status": self.cache[(size, act)],
                 **self.machine}]

    def _common(self, b, **kw) -> dict:
        row = {"size": b.size, "activation": b.activation, **kw, "backend": b.backend,
               "loadavg_1m": os.getloadavg()[0]}
        return row

    def _timing_kw(self):
        a = self.a
        return dict(warmup=a.warmup, repeats=a.repeats, device=a.device, max_total_s=a.max_config_s)

    def timed(self, fns, **kw):
        """time_interleaved + how many cores other processes used meanwhile."""
        if self.a.wait_quiet > 0:
            machine_mod.wait_for_quiet(self.a.wait_quiet, self.a.wait_max, log=self.log)
        s0 = machine_mod.cpu_snapshot()
        stats = timing.time_interleaved(fns, **self._timing_kw(), **kw)
        return stats, machine_mod.other_load(s0, machine_mod.cpu_snapshot())

    # -- 1 ------------------------------------------------------------------------------------------
    def forward(self) -> list[dict]:
        rows = []
        for size in self.a.sizes:
            for act in self.a.activations:
                b = self.bench(size, act)
                for batch in self.a.fwd_batches:
                    self.log(f"forward {size} {act} batch {batch}")
                    rows += self._failed(size, act, batch=batch) if isinstance(b, str) else self._forward_one(b, batch)
        return rows

    def _forward_one(self, b, batch) -> list[dict]:
        x = nets.make_inputs(batch, b.in_features, device=self.a.device, seed=1)
        try:
            ref = M.forward_fn(b, M.FWD_AUTOGRAD)(x)
        except Exception:
            ref = None
        fns, rows = {}, {}
        for m in self.a.fwd_methods:
            if m == M.FWD_JACFWD and batch > self.a.jacfwd_max_batch:
                continue
            row = self._common(b, batch=batch, method=m)
            try:
                f = M.forward_fn(b, m)
                y = f(x)
                if m != M.FWD_PLAIN and ref is not None:
                    row["max_abs_diff_vs_autograd"] = (y - ref).abs().max().item()
                    tol = 1e-5 * (ref.abs().max().item() + 1)
                    row["allclose_autograd"] = bool(torch.allclose(y, ref, rtol=1e-4, atol=tol))
                fns[m] = (lambda f=f: f(x))
            except M.NotApplicable:
                continue
            except Exception as exc:
                row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            if m == M.FWD_HAND and b.hand_status:
                row["status"] = b.hand_status
            rows[m] = row
        stats, other = self.timed(fns)
        for m, st in stats.items():
            rows[m]["other_cpu_cores"] = other
            rows[m].update(st.row())
            rows[m].setdefault("status", "ok" if st.ok else f"failed: {st.error}")
        plain = stats.get(M.FWD_PLAIN)
        for m, row in rows.items():
            if plain is not None and plain.ok and m in stats and stats[m].ok:
                row["x_plain"] = stats[m].median / plain.median
            row.update(self.machine)
        return list(rows.values())

    # -- 2 ------------------------------------------------------------------------------------------
    def _compiled_here(self, size, act, batch) -> bool:
        cs = self.a.compile_set
        return cs == "all" or (cs != "none" and (size, act, batch) in cs)

    def train(self) -> list[dict]:
        rows = []
        for size in self.a.sizes:
            for act in self.a.activations:
                for batch in self.a.train_batches:
                    self.log(f"train {size} {act} batch {batch}")
                    b = self.bench(size, act)
                    rows += self._failed(size, act, batch=batch) if isinstance(b, str) else self._train_one(b, batch)
        return rows

    def _train_one(self, b, batch) -> list[dict]:
        a = self.a
        here = self._compiled_here(b.size, b.activation, batch)
        ms = [m for m in a.train_methods if here or m not in M.COMPILE_METHODS]
        x = nets.make_inputs(batch, b.in_features, device=a.device, seed=1)
        target = M.make_target(x)
        # gradient cross-check of the eager methods at a small batch, same weights
        xs = x[: min(batch, 1024)]
        ts = target[: xs.shape[0]]
        try:
            g_ref = M.param_grads(b, M.TR_DOUBLE, xs, ts)
        except Exception:
            g_ref = None
        steps, rows, loss_ref = {}, {}, None
        for m in ms:
            row = self._common(b, batch=batch, method=m)
            try:
                if g_ref is not None and m not in M.COMPILE_METHODS:
                    g = M.param_grads(b, m, xs, ts)
                    row["grad_rel_diff_vs_double"] = max(
                        ((u - v).abs().max() / (v.abs().max() + 1e-12)).item() for u, v in zip(g, g_ref))
                step = M.train_step_fn(b, m, x, target)
                b.restore()
                t0 = time.perf_counter()
                loss0 = step().item()  # first call: includes torch.compile for the compile methods
                row["first_step_s"] = time.perf_counter() - t0
                if m == M.TR_DOUBLE:
                    loss_ref = loss0
                row["loss0"] = loss0
                steps[m] = step
            except M.NotApplicable:
                continue
            except Exception as exc:
                row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            rows[m] = row
        if loss_ref is not None:
            for row in rows.values():
                if "loss0" in row:
                    row["loss_rel_diff_vs_double"] = abs(row["loss0"] - loss_ref) / (abs(loss_ref) + 1e-30)
        stats, other = self.timed(steps, between=b.restore)
        b.restore()
        for m, st in stats.items():
            rows[m]["other_cpu_cores"] = other
            rows[m].update(st.row())
            rows[m].setdefault("status", "ok" if st.ok else f"failed: {st.error}")
        gen = stats.get(M.TR_GENERATED)
        target_cfg = (b.size, b.activation, batch) == (report.TARGET_SIZE, report.TARGET_ACT, report.TARGET_BATCH)
        for m, row in rows.items():
            if gen is not None and gen.ok and m in stats and stats[m].ok:
                row["x_gen"] = stats[m].median / gen.median
            if row.get("status") == "ok" and (a.memory == "all" or (a.memory == "target" and target_cfg)):
                self.log(f"  peak memory: {m}")
                res = memory.measure(b.size, b.activation, batch, m, device=a.device, threads=a.threads)
                row["peak_mb"] = res.get("peak_mb", "")
                row["mem_method"] = res.get("mem_method", res.get("mem_error", ""))
            row.update(self.machine)
        return list(rows.values())

    # -- 3 ------------------------------------------------------------------------------------------
    def quad(self) -> list[dict]:
        from . import quadrature

        rows = []
        for size in self.a.quad_sizes:
            for act in self.a.activations:
                self.log(f"quadrature {size} {act}")
                b = self.bench(size, act)
                if isinstance(b, str):
                    rows += self._failed(size, act)
                    continue
                for r in quadrature.run(b, n_problems=self.a.quad_problems, ns=self.a.quad_ns,
                                        warmup=self.a.warmup, repeats=self.a.repeats, device=self.a.device,
                                        timed=self.timed):
                    row = self._common(b, **r)
                    row.update(self.machine)
                    rows.append(row)
        return rows

    # -- 4 ------------------------------------------------------------------------------------------
    def compile(self) -> list[dict]:
        from . import compile_time

        rows = []
        for size in self.a.sizes:
            for act in self.a.activations:
                self.log(f"compile time {size} {act}")
                q = self.a.quick
                row = compile_time.run(size, act, cold_repeats=1 if q else 3, warm_repeats=2 if q else 7)
                row.update(self.machine)
                rows.append(row)
        return rows


NOTES = [
    "Every method in one table row group ran in the same process, on the same weights (the compiled "
    "net's parameter tensors; the hand-written modules reference the very same tensors) and the same batch.",
    "Timing: `warmup` untimed calls, then `repeats` samples, taken round-robin across the methods of one "
    "configuration so machine drift affects all alike; fast calls are looped `inner` times per sample. "
    "Reported: median, quartiles (q25/q75) and min per call. A configuration stops adding rounds after "
    "`--max-config-s` seconds (at least 3 rounds kept), so big configurations may have fewer samples (`n`).",
    "Forward methods run under torch.no_grad() except autograd.grad, which needs a graph.",
    "torch.func.vmap(jacfwd) computes the whole Jacobian (D tangents) and then selects column t.",
    "Training step = zero_grad + forward + MSE loss + backward + Adam step (lr 1e-4); weights are restored "
    "(untimed) before every sample. torch.compile wraps the module (or the double-backward function); its "
    "compile time is excluded (warm-up) but reported as `first_step_s` in train.csv.",
    "Peak memory (CPU): a fresh subprocess per method with MALLOC_MMAP_THRESHOLD_=65536 (so freed tensor "
    "memory leaves the process at once and RSS follows live tensor bytes), warm-up steps, then the kernel's "
    "RSS high-water mark is reset (clear_refs) and peak = VmHWM - VmRSS before one step: the step's "
    "transient memory (activations kept for backward, temporaries, gradients). Params, Adam state, batch "
    "are allocated before and not counted. On CUDA: max_memory_allocated delta.",
    "Correctness: every forward method is compared with autograd (`max|diff|`); every eager training "
    "method's parameter gradients with double backward's (`grad rel diff`), and every method's first loss "
    "(`loss_rel_diff_vs_double` in train.csv).",
    "The hand-written fused variant (swish only) uses aten.silu_backward for swish'(z)*zdot in one kernel, "
    "with a hand-written backward in a custom autograd.Function: it is what a person tuning the code by "
    "hand can reach in eager PyTorch.",
    "The machine may be shared: `other_cpu_cores` in the CSVs is how many cores' worth of CPU *other* "
    "processes used while a configuration was being timed (from /proc/stat minus this process), "
    "`loadavg_1m` the load average when it started; `--wait-quiet` waits for a quiet machine first.",
]


def main(argv=None) -> int:
    a, _ = parse_args(argv)
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    r = Runner(a)
    t0 = time.perf_counter()
    r.log(f"machine: {r.machine['cpu_model']}, torch {r.machine['torch_version']}, {r.machine['threads']} threads, "
          f"load {os.getloadavg()[0]:.2f}; out {a.out}")
    fwd = r.forward() if "forward" in a.sections else []
    train = r.train() if "train" in a.sections else []
    quad = r.quad() if "quad" in a.sections else []
    comp = r.compile() if "compile" in a.sections else []
    wall = time.perf_counter() - t0
    summ = report.summary(fwd, train, comp)
    for name, rows in (("forward", fwd), ("train", train), ("quadrature", quad), ("compile", comp),
                       ("summary", summ)):
        report.write_csv(a.out / f"{name}.csv", rows)
    made = [] if a.no_plots else report.plots(a.out, fwd, train, quad)
    args_text = " ".join(sys.argv[1:] if argv is None else argv)
    machine = dict(r.machine, loadavg_end=" ".join(f"{v:.2f}" for v in os.getloadavg()))
    report.write_markdown(a.out / "README.md", machine=machine, args_text=args_text, wall_s=wall, fwd=fwd,
                          train=train, quad=quad, comp=comp, summ=summ, plots=made, notes=NOTES)
    print(report.format_summary(summ, r.machine))
    r.log(f"done in {wall:.0f} s ({wall / 60:.1f} min); results in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
