"""How far off is an AutoInt integral, and how much does the fitted network help Monte Carlo (issue 20)?

Shared by the 1-D and CT experiments. For a trained network, a function ``f`` it was fitted to and a
set of boxes with exact integrals of ``f``:

* the closed form's error (AutoInt, ``net.integrate(a, b, x)``);
* the corrected estimate (``net.integrate(a, b, x, f=f, samples=N)``, :mod:`..runtime.estimate`) over
  ``seeds`` independent repetitions — the seeds are a batch dimension (each box repeated ``seeds``
  times, one call): its RMS error, its mean error in standard errors (bias check) and the coverage of
  its 95% interval;
* plain Monte Carlo with the same N samples of f (:func:`..runtime.estimate.monte_carlo`) and the
  variance-reduction factor MSE(plain) / MSE(corrected) (both unbiased: the ratio of variances);
* an error-vs-samples curve (plain, corrected, closed form) for :func:`plot_curves`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..runtime.estimate import monte_carlo

__all__ = ["study", "plot_curves", "format_table", "machine", "CURVE_SAMPLES"]

CURVE_SAMPLES = (4, 16, 64, 256, 1024)


def _repeat(t: torch.Tensor, seeds: int) -> torch.Tensor:
    return t.repeat_interleave(seeds, 0)


@torch.no_grad()
def _errors(net, f, lower, upper, x, exact, samples, sampler, seeds, gen, plain=True):
    """Corrected (and plain MC) errors [boxes * seeds, out] and the corrected estimate."""
    lo, hi, xx, ex = (_repeat(v, seeds) for v in (lower, upper, x, exact))
    est = net.integrate(lo, hi, xx, f=f, samples=samples, sampler=sampler, generator=gen)
    err = est.value.double() - ex
    low, high = est.ci(0.95)
    covered = (low.double() <= ex) & (ex <= high.double())
    z = err / est.stderr.double().clamp(min=1e-300)
    perr = None
    if plain:
        pl = monte_carlo(f, lo, hi, xx, net.integration_columns, samples, sampler, generator=gen)
        perr = pl.value.double() - ex
    return err, perr, covered, z, est


def study(
    net: Any,
    f: Callable[[torch.Tensor], torch.Tensor],
    lower: torch.Tensor,
    upper: torch.Tensor,
    x: torch.Tensor,
    exact: torch.Tensor,
    *,
    samples: int = 64,
    seeds: int = 1000,
    samplers: Sequence[str] = ("uniform", "stratified", "sobol"),
    curve_samples: Sequence[int] = CURVE_SAMPLES,
    curve_seeds: int = 100,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The numbers above for the boxes ``lower``..``upper`` ([B, n], other inputs ``x`` [B, D]) whose
    exact integrals of ``f`` are ``exact`` ([B, out], float64); the curve uses min(``curve_seeds``,
    ``seeds``) seeds per point. Returns a JSON-ready dict."""
    t0 = time.perf_counter()
    gen = torch.Generator(device=lower.device).manual_seed(seed)
    exact = exact.double()
    with torch.no_grad():
        closed = net.integrate(lower, upper, x).double()
    closed_err = closed - exact
    out: dict[str, Any] = {
        "boxes": int(lower.shape[0]),
        "seeds": int(seeds),
        "samples": int(samples),
        "closed_form_rmse": float(closed_err.pow(2).mean().sqrt()),
        "closed_form_max_abs_err": float(closed_err.abs().max()),
        "samplers": {},
    }
    for s in samplers:
        err, perr, covered, z, est = _errors(net, f, lower, upper, x, exact, samples, s, seeds, gen)
        mse, pmse = float(err.pow(2).mean()), float(perr.pow(2).mean())
        n = err.numel()
        out["samplers"][s] = {
            "samples_used": int(est.samples),
            "corrected_rmse": math.sqrt(mse),
            "corrected_max_abs_err": float(err.abs().max()),
            "mean_error": float(err.mean()),
            "mean_error_in_se": float(err.mean() / (err.std() / math.sqrt(n))),  # |.| < 4 if unbiased
            "mean_z": float(z.mean()),
            "coverage_95": float(covered.double().mean()),
            "coverage_binomial_sd": math.sqrt(0.95 * 0.05 / n),
            "median_stderr": float(est.stderr.double().median()),
            "plain_mc_rmse": math.sqrt(pmse),
            "variance_reduction": pmse / mse if mse > 0 else float("inf"),
        }
        if log:
            r = out["samplers"][s]
            log(
                f"  MC {s:<10} N={samples}: corrected RMSE {r['corrected_rmse']:.2e} (closed form "
                f"{out['closed_form_rmse']:.2e}), 95% coverage {r['coverage_95']:.3f}, plain MC RMSE "
                f"{r['plain_mc_rmse']:.2e}: variance reduction {_factor(r['variance_reduction'])}"
            )
    curve_seeds = min(curve_seeds, seeds)
    keys = ("samples", "plain_uniform", "corrected_uniform", "corrected_sobol", "coverage_uniform", "coverage_sobol")
    curve: dict[str, Any] = {k: [] for k in keys}
    for N in curve_samples:
        err_u, perr_u, cov_u, *_ = _errors(net, f, lower, upper, x, exact, N, "uniform", curve_seeds, gen)
        err_s, _, cov_s, *_ = _errors(net, f, lower, upper, x, exact, N, "sobol", curve_seeds, gen, plain=False)
        curve["samples"].append(int(N))
        curve["plain_uniform"].append(float(perr_u.pow(2).mean().sqrt()))
        curve["corrected_uniform"].append(float(err_u.pow(2).mean().sqrt()))
        curve["corrected_sobol"].append(float(err_s.pow(2).mean().sqrt()))
        curve["coverage_uniform"].append(float(cov_u.double().mean()))
        curve["coverage_sobol"].append(float(cov_s.double().mean()))
    curve["closed_form"] = out["closed_form_rmse"]
    curve["seeds"] = int(curve_seeds)
    out["curve"] = curve
    out["study_s"] = time.perf_counter() - t0
    return out


def plot_curves(panels: Sequence[tuple[str, dict]], path: str | Path) -> Path:
    """Log-log RMS error vs samples of f per box: plain MC, corrected (uniform, Sobol), the closed
    form (flat), and 1/√N guide lines through the first plain and corrected points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), dpi=110, squeeze=False)
    for ax, (title, res) in zip(axes[0], panels):
        c = res["curve"]
        n = torch.tensor(c["samples"], dtype=torch.float64)
        ax.loglog(n, c["plain_uniform"], "C0o-", label="plain MC")
        ax.loglog(n, c["corrected_uniform"], "C3s-", label="AutoInt + MC residual")
        ax.loglog(n, c["corrected_sobol"], "C2^-", label="AutoInt + Sobol residual")
        ax.axhline(c["closed_form"], color="k", ls="--", lw=1, label="AutoInt closed form")
        for key, col in (("plain_uniform", "C0"), ("corrected_uniform", "C3")):
            ax.loglog(n, c[key][0] * (n / n[0]) ** -0.5, color=col, ls=":", lw=0.9)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("samples of f per integral")
        ax.set_ylabel("RMS error")
        ax.grid(True, which="both", alpha=0.25)
    axes[0][0].legend(fontsize=7, title="dotted: 1/\u221aN", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_table(rows: Sequence[tuple[str, dict]]) -> str:
    """Markdown: per experiment and sampler, closed-form vs corrected error, coverage, plain MC, VRF."""
    head = (
        "| integral | sampler | N | AutoInt RMSE | corrected RMSE | mean err / SE | 95% CI coverage "
        "| plain MC RMSE | variance reduction |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for label, res in rows:
        for s, r in res["samplers"].items():
            lines.append(
                f"| {label} | {s} | {r['samples_used']} | {res['closed_form_rmse']:.2e} | {r['corrected_rmse']:.2e} "
                f"| {r['mean_error_in_se']:+.2f} | {r['coverage_95']:.3f} | {r['plain_mc_rmse']:.2e} "
                f"| {_factor(r['variance_reduction'])} |"
            )
    return head + "\n".join(lines) + "\n"


def _factor(v: float) -> str:
    return f"{v:,.0f}x" if v >= 10 else f"{v:.2f}x"


def machine() -> str:
    """The CPU model, core count and torch version (numbers in results name the machine)."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"
