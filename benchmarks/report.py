"""Writing results: CSV per section, a markdown report, PNG plots and the targets summary."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from . import methods as M

TARGET_SIZE, TARGET_ACT, TARGET_BATCH = "4x128", "swish", 2**14


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k, "")) for k in keys})


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def _ok(r) -> bool:
    return r is not None and r.get("status") == "ok" and math.isfinite(float(r.get("median_ms", math.nan)))


# ---------------------------------------------------------------------------------------------------
def summary(fwd: list[dict], train: list[dict], comp: list[dict]) -> list[dict]:
    """The targets of issue 5, measured at 4x128 swish, batch 2^14 (ratios within one process)."""
    out = []
    where = dict(size=TARGET_SIZE, activation=TARGET_ACT, batch=TARGET_BATCH)
    if not any(_find(rows, **where) for rows in (fwd, train)):
        # a subset run (e.g. --quick): report the same ratios at the first measured configuration instead
        first = (train or fwd or [None])[0]
        if first is not None:
            where = dict(size=first["size"], activation=first["activation"], batch=first["batch"])
            out.append({"target": f"NOTE: target configuration not measured; ratios below are at {first['size']} "
                        f"{first['activation']} batch {first['batch']}", "measured": "", "threshold": "",
                        "result": "INFO", "note": ""})

    def tr(method):
        return _find(train, method=method, **where)

    def add(target, num_row, den_row, threshold, higher_is_better=True, note=""):
        """ratio = median(num_row) / median(den_row); the min-based ratio goes into the note."""
        num, den = med(num_row), med(den_row)
        if num is None or den is None or den == 0:
            why = next((f"; {r['method']}: {r['status']}" for r in (num_row, den_row)
                        if r is not None and not _ok(r)), "")
            out.append({"target": target, "measured": "n/a", "threshold": threshold, "result": "NOT MEASURED",
                        "note": note + why})
            return
        val = num / den
        vmin = float(num_row["min_ms"]) / float(den_row["min_ms"])
        ok = val >= threshold if higher_is_better else val <= threshold
        other = num_row.get("other_cpu_cores", "")
        other = f"; other processes used {float(other):.2f} cores meanwhile" if other not in ("", None) else ""
        out.append({"target": target, "measured": f"{val:.2f}x", "threshold": threshold,
                    "result": "PASS" if ok else "MISS", "ratio_median": val, "ratio_min": vmin,
                    "note": f"{note}; medians; ratio of mins {vmin:.2f}x{other}"})

    def med(r):
        return float(r["median_ms"]) if _ok(r) else None

    gen, gen_c, dbl, dbl_c, fn = (tr(M.TR_GENERATED), tr(M.TR_GENERATED_COMPILE), tr(M.TR_DOUBLE),
                                  tr(M.TR_DOUBLE_COMPILE), tr(M.TR_FUNC))
    add("train step: generated eager >= 1.6x faster than double backward (eager)", dbl, gen, 1.6,
        note="t(double backward) / t(generated eager)")
    add("train step: generated + torch.compile >= 2.5x faster than double backward", dbl, gen_c, 2.5,
        note="t(double backward eager) / t(generated + torch.compile)")
    if _ok(dbl_c):
        add("  (extra) generated + torch.compile vs double backward + torch.compile", dbl_c, gen_c, 2.5,
            note="t(double backward + torch.compile) / t(generated + torch.compile)")
    elif dbl_c is not None:
        out.append({"target": "  (extra) double backward under torch.compile", "measured": "fails", "threshold": "",
                    "result": "INFO", "note": dbl_c.get("status", "")})
    add("train step: generated eager >= 1.3x faster than torch.func", fn, gen, 1.3,
        note="t(torch.func jvp) / t(generated eager)")
    gen_pw = tr(M.TR_GENERATED_PW)
    if gen_pw is not None:
        add("  (extra) generated, compiled pointwise regions (GEMMs eager) vs double backward", dbl, gen_pw, 1.6,
            note="t(double backward eager) / t(generated, net.compile_pointwise())")

    def peak(r):
        v = r.get("peak_mb") if r is not None else None
        return float(v) if v not in (None, "") else None

    pg, pd, pf = peak(gen), peak(dbl), peak(fn)
    if pg is not None and pd is not None and pf is not None:
        ok = pg < pd and pg < pf
        out.append({"target": "train step: lower peak memory than double backward and torch.func",
                    "measured": f"{pg:.1f} MiB vs {pd:.1f} (double) / {pf:.1f} (func)",
                    "threshold": "lower", "result": "PASS" if ok else "MISS",
                    "note": f"ratio {pd / pg:.2f}x / {pf / pg:.2f}x; {gen.get('mem_method', '')}"})
    else:
        out.append({"target": "train step: lower peak memory", "measured": "n/a", "threshold": "lower",
                    "result": "NOT MEASURED", "note": ""})
    fg, fp = _find(fwd, method=M.FWD_GENERATED, **where), _find(fwd, method=M.FWD_PLAIN, **where)
    add("grad forward within 2.3x of a plain MLP forward", fg, fp, 2.3, higher_is_better=False,
        note="t(net.grad) / t(net.integral), both under no_grad")
    c = _find(comp, size=where["size"], activation=where["activation"])
    if c is not None and c.get("warm_s") not in (None, ""):
        w = float(c["warm_s"])
        out.append({"target": "compile < 0.5 s warm", "measured": f"{w * 1e3:.1f} ms", "threshold": "0.5 s",
                    "result": "PASS" if w < 0.5 else "MISS",
                    "note": f"cold (fresh process, incl. imports): {float(c.get('cold_total_s', math.nan)):.2f} s"})
    else:
        out.append({"target": "compile < 0.5 s warm", "measured": "n/a", "threshold": "0.5 s",
                    "result": "NOT MEASURED", "note": ""})
    # informational: generated vs hand-written
    fh = _find(fwd, method=M.FWD_HAND, **where)
    fhf = _find(fwd, method=M.FWD_HAND_FUSED, **where)
    for label, a, bb in (("grad forward: generated / hand-written", fg, fh),
                         ("grad forward: generated / hand-written fused", fg, fhf),
                         ("train step: generated eager / hand-written eager", gen, tr(M.TR_HAND)),
                         ("train step: generated eager / hand-written fused", gen, tr(M.TR_HAND_FUSED))):
        if _ok(a) and _ok(bb):
            out.append({"target": f"  (info) {label}", "measured": f"{med(a) / med(bb):.2f}x", "threshold": "",
                        "result": "INFO", "note": "time ratio; > 1 means the generated code is slower"})
    return out


def format_summary(rows: list[dict], machine: dict) -> str:
    lines = ["=" * 100,
             f"TARGETS  (CPU, MLP {TARGET_SIZE} {TARGET_ACT}, batch 2^14; {machine.get('cpu_model')}, "
             f"torch {machine.get('torch_version')}, {machine.get('threads')} threads)",
             "-" * 100]
    for r in rows:
        lines.append(f"{r['result']:>12}  {r['measured']:>28}  {r['target']}")
        if r.get("note"):
            lines.append(f"{'':>12}  {'':>28}    ({r['note']})")
    lines.append("=" * 100)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
def _md_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = []
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k, "")
            if isinstance(v, float):
                v = f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e4) and v != 0 else f"{v:.2f}"
            cells.append(str(v).replace("|", "/"))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def write_markdown(path: Path, *, machine: dict, args_text: str, wall_s: float, fwd, train, quad, comp,
                   summ, plots: list[str], notes: list[str]) -> None:
    L = ["# autoint_compiler benchmarks", ""]
    L += [f"Generated by `python -m benchmarks.run {args_text}`; total wall time {wall_s / 60:.1f} min.", ""]
    L += ["## Machine", ""]
    L += [f"- {k}: {v}" for k, v in machine.items()]
    L += ["", "## Targets (4x128 swish, batch 2^14, CPU)", "", "```", format_summary(summ, machine), "```", ""]
    L += ["`other load` in the tables: cores' worth of CPU used by other processes while that configuration "
          "was timed (this machine may be shared; 2 cores in all here means anything above ~0.2 distorts "
          "2-thread timings).", ""]
    L += ["## How it is measured", ""] + [f"- {n}" for n in notes] + [""]
    if fwd:
        L += ["## 1. Grad-network forward (dPhi/dt), torch.no_grad where the method allows", "",
              "`x_plain` = median / median of the plain MLP forward (net.integral) at the same size and batch.", ""]
        L.append(_md_table(fwd, [("size", "MLP"), ("activation", "act"), ("batch", "batch"), ("method", "method"),
                                 ("median_ms", "median ms"), ("q25_ms", "q25"), ("q75_ms", "q75"), ("min_ms", "min"),
                                 ("repeats", "n"), ("x_plain", "x plain"),
                                 ("max_abs_diff_vs_autograd", "max|diff| vs autograd"),
                                 ("other_cpu_cores", "other load"), ("status", "status")]))
        L.append("")
    if train:
        L += ["## 2. Training step (forward + MSE + backward + Adam)", "",
              "`x_gen` = median / median of *generated eager* in the same configuration (> 1: slower than the "
              "generated code). Peak memory: see notes.", ""]
        L.append(_md_table(train, [("size", "MLP"), ("activation", "act"), ("batch", "batch"), ("method", "method"),
                                   ("median_ms", "median ms"), ("q25_ms", "q25"), ("q75_ms", "q75"),
                                   ("min_ms", "min"), ("repeats", "n"), ("x_gen", "x gen"),
                                   ("peak_mb", "peak MiB"), ("grad_rel_diff_vs_double", "grad rel diff"),
                                   ("other_cpu_cores", "other load"), ("status", "status")]))
        L.append("")
    if quad:
        L += ["## 3. Definite integrals: closed form vs quadrature of the grad network", "",
              "Error is relative to the network's own closed-form integral Phi(b) - Phi(a) (the exact integral "
              "of the grad network), both in float64 (`rel err`); `rel err f32` is the float32 result against "
              "the same float64 reference (for the closed form: its own rounding error).", ""]
        L.append(_md_table(quad, [("size", "MLP"), ("activation", "act"), ("method", "method"),
                                  ("n_problems", "integrals"), ("median_ms", "median ms"), ("min_ms", "min"),
                                  ("rel_err_mean", "rel err (mean)"), ("rel_err_max", "rel err (max)"),
                                  ("rel_err_f32_mean", "rel err f32 (mean)"), ("status", "status")]))
        L.append("")
    if comp:
        L += ["## 4. Compile time and generated code size", ""]
        L.append(_md_table(comp, [("size", "MLP"), ("activation", "act"), ("warm_s", "warm s (median)"),
                                  ("warm_compile_source_s", "warm compile_source s"),
                                  ("cold_total_s", "cold s (incl. imports)"), ("cold_import_s", "import s"),
                                  ("cold_subprocess_wall_s", "subprocess wall s"), ("source_bytes", "bytes"),
                                  ("source_lines", "lines"), ("grad_forward_lines", "GradNet.forward lines"),
                                  ("grad_nodes", "grad IR nodes"), ("status", "status")]))
        L.append("")
    if plots:
        L += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path.write_text("\n".join(L))


# ---------------------------------------------------------------------------------------------------
def plots(out: Path, fwd, train, quad) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return []
    made = []
    if fwd:
        sizes = sorted({r["size"] for r in fwd}, key=lambda s: tuple(int(v) for v in s.split("x")))
        acts = sorted({r["activation"] for r in fwd}, reverse=True)
        fig, axes = plt.subplots(len(acts), len(sizes), figsize=(5 * len(sizes), 4 * len(acts)), squeeze=False)
        for i, a in enumerate(acts):
            for j, s in enumerate(sizes):
                ax = axes[i][j]
                for m in M.FWD_METHODS:
                    pts = sorted((r["batch"], r["median_ms"]) for r in fwd
                                 if r["size"] == s and r["activation"] == a and r["method"] == m and _ok(r))
                    if pts:
                        ax.plot(*zip(*pts), marker="o", label=m, lw=2.5 if m == M.FWD_GENERATED else 1.2)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"{s} {a}")
                ax.set_xlabel("batch")
                ax.set_ylabel("median ms")
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle("grad-network forward (dPhi/dt)")
        fig.tight_layout()
        fig.savefig(out / "forward_time.png", dpi=110)
        plt.close(fig)
        made.append("forward_time.png")
        fig, axes = plt.subplots(1, len(acts), figsize=(6 * len(acts), 4.5), squeeze=False)
        styles = ((M.FWD_GENERATED, "-", "o"), (M.FWD_HAND, "--", "s"), (M.FWD_HAND_FUSED, "-.", "^"),
                  (M.FWD_AUTOGRAD, ":", "x"))
        for i, a in enumerate(acts):
            ax = axes[0][i]
            for si, s in enumerate(sizes):
                for m, ls, mk in styles:
                    pts = sorted((r["batch"], r["x_plain"]) for r in fwd if r["size"] == s and r["activation"] == a
                                 and r["method"] == m and _ok(r) and r.get("x_plain") not in ("", None))
                    if pts:
                        ax.plot(*zip(*pts), ls, marker=mk, color=f"C{si}", label=f"{s} {m}",
                                lw=2.2 if m == M.FWD_GENERATED else 1.0)
            ax.axhline(2.3, color="k", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{a}: time / plain MLP forward (target line 2.3x)")
            ax.set_xlabel("batch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "forward_ratio_vs_plain.png", dpi=110)
        plt.close(fig)
        made.append("forward_ratio_vs_plain.png")
    if train:
        cfgs = []
        for r in train:
            c = (r["size"], r["activation"], r["batch"])
            if c not in cfgs:
                cfgs.append(c)
        fig, axes = plt.subplots(2, len(cfgs), figsize=(4.2 * len(cfgs), 7), squeeze=False)
        for j, (s, a, n) in enumerate(cfgs):
            rs = [r for r in train if (r["size"], r["activation"], r["batch"]) == (s, a, n) and _ok(r)]
            labels = [_short(r["method"]) for r in rs]
            med = [r["median_ms"] for r in rs]
            err = [[r["median_ms"] - r["q25_ms"] for r in rs], [r["q75_ms"] - r["median_ms"] for r in rs]]
            axes[0][j].bar(range(len(rs)), med, yerr=err, color="tab:blue")
            axes[0][j].set_xticks(range(len(rs)), labels, rotation=60, ha="right", fontsize=7)
            axes[0][j].set_title(f"{s} {a} batch {n}: step ms", fontsize=9)
            mem = [(lbl, r.get("peak_mb")) for lbl, r in zip(labels, rs) if r.get("peak_mb") not in ("", None)]
            if mem:
                axes[1][j].bar(range(len(mem)), [float(v) for _, v in mem], color="tab:orange")
                axes[1][j].set_xticks(range(len(mem)), [lbl for lbl, _ in mem], rotation=60, ha="right", fontsize=7)
            axes[1][j].set_title("peak memory of one step, MiB", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "train_step.png", dpi=110)
        plt.close(fig)
        made.append("train_step.png")
    if quad:
        nets = []
        for r in quad:
            if (r["size"], r["activation"]) not in nets:
                nets.append((r["size"], r["activation"]))
        fig, axes = plt.subplots(1, len(nets), figsize=(6 * len(nets), 4.5), squeeze=False)
        for j, (s, a) in enumerate(nets):
            ax = axes[0][j]
            rs = [r for r in quad if (r["size"], r["activation"]) == (s, a) and _ok(r)]
            for rule in ("midpoint", "trapezoid", "gauss-legendre"):
                pts = sorted((r["median_ms"], max(r["rel_err_mean"], 1e-17), r["n_samples"]) for r in rs
                             if r["rule"] == rule)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{rule} (float64 error)")
                    for t, e, n in pts:
                        ax.annotate(str(n), (t, e), fontsize=6)
                pts32 = sorted((r["median_ms"], max(r["rel_err_f32_mean"], 1e-17)) for r in rs if r["rule"] == rule)
                if pts32:
                    ax.plot(*zip(*pts32), ls=":", lw=0.8, color=ax.lines[-1].get_color(), label=f"{rule} (float32)")
            for r in rs:
                if r["rule"] == "closed":
                    ax.scatter([r["median_ms"]], [max(r["rel_err_f32_mean"], 1e-17)], marker="*", s=200,
                               color="k", zorder=5, label="closed form Phi(b)-Phi(a), 2 evals (float32 rounding)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"time for {rs[0]['n_problems'] if rs else '?'} integrals, ms")
            ax.set_ylabel("mean relative error vs Phi(b)-Phi(a)")
            ax.set_title(f"{s} {a}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "quadrature_pareto.png", dpi=110)
        plt.close(fig)
        made.append("quadrature_pareto.png")
    return made


def _short(m: str) -> str:
    return (m.replace("(autograd.grad create_graph=True)", "").replace(" (backward through jvp)", "")
            .replace(" (custom autograd.Function)", "").replace("torch.compile", "compile").strip())


def _num(v):
    if v in ("", None):
        return v
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def replot(out: Path) -> list[str]:
    """Re-draw the plots from the CSVs in ``out`` (``python -m benchmarks.report DIR``)."""
    def load(name):
        path = out / f"{name}.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]

    return plots(out, load("forward"), load("train"), load("quadrature"))


if __name__ == "__main__":
    import sys

    print(replot(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results")))
