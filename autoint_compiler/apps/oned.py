"""1-D AutoInt experiment: fit the grad network to a signal, integrate with the integral network.

For each signal (AutoInt's polynomial and a sum of Gaussians, both with exact antiderivatives):

1. compile a 1-input network (``integrate: [t]``),
2. train its grad network on uniform samples ``(t, f(t))`` of the domain (first-order backprop),
3. evaluate ``\u222b_a^b f`` on 1,000 random intervals with ``net.integrate`` (two evaluations of the
   integral network each) against the exact antiderivative: max and mean absolute error,
4. plot f, the grad network, the exact and the learned antiderivative (learned one aligned by its
   value at the left end of the domain),
5. integrals you can trust (issue 20): on 20 random intervals, the AutoInt error next to the
   control-variate estimate ``net.integrate(a, b, x, f=f, samples=64)`` over 1,000 seeds — its error,
   95% interval coverage and variance reduction against plain Monte Carlo with as many samples of f
   (:mod:`.mc_study`), and an error-vs-samples plot ``oned_mc_error.png``.

CLI: ``autoint-compile train-1d [--signal poly|gaussians|all] [--steps N] [--out DIR] ...``;
``python -m autoint_compiler.apps.oned`` does the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..runtime import distributed
from ..runtime.train import History, TrainConfig, fit_samples
from ._argtypes import SEED, int_list, int_range, positive_float
from ._cli import check_device, standalone_main
from .signals1d import SIGNALS, Signal1D, get_signal

__all__ = [
    "DEFAULT_HIDDEN",
    "DEFAULT_ACTIVATION",
    "make_spec",
    "evaluate_integrals",
    "fit_signal",
    "plot_result",
    "format_table",
    "run",
    "demo",
    "add_parser",
    "run_cli",
    "main",
]

DEFAULT_HIDDEN = (64, 64, 64)
DEFAULT_ACTIVATION: Any = "swish"
DEFAULT_STEPS = 5000
DEFAULT_LR = 5e-3
DEFAULT_BATCH = 1024
N_INTERVALS = 1000
MC_BOXES = 20  # intervals of the Monte Carlo study (each repeated for every seed)
MC_SEEDS = 1000
MC_SAMPLES = 64


def make_spec(
    signal: str = "poly",
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    activation: Any = DEFAULT_ACTIVATION,
    seed: int = 0,
    dtype: str = "float32",
) -> dict:
    """The spec of the 1-D network (the same as ``examples/oned_poly.yaml`` for the defaults)."""
    spec = {
        "name": f"oned_{signal}",
        "inputs": {"t": 1},
        "integrate": ["t"],
        "output": 1,
        "mlp": {"hidden": [int(h) for h in hidden], "activation": activation},
        "seed": int(seed),
        "dtype": dtype,
    }
    if _is_sine(activation):
        spec["init"] = "siren"
    return spec


def _is_sine(activation: Any) -> bool:
    name = activation.get("name") if isinstance(activation, dict) else activation
    return name == "sine"


def _dtype_of(net: Any) -> torch.dtype:
    return next(net.integral.parameters()).dtype


def _device_of(net: Any) -> torch.device:
    return next(net.integral.parameters()).device


def make_sampler(signal: Signal1D, dtype: torch.dtype):
    lo, hi = signal.domain

    def sample(n: int, gen: torch.Generator):
        t = lo + (hi - lo) * torch.rand(n, 1, generator=gen, device=gen.device, dtype=torch.float64)
        return t.to(dtype), signal.f(t).to(dtype)

    return sample


@torch.no_grad()
def evaluate_integrals(
    net: Any, signal: Signal1D, n_intervals: int = N_INTERVALS, seed: int = 12345
) -> dict[str, float]:
    """Errors of ``net.integrate`` on ``n_intervals`` random intervals ``[a, b]`` of the domain.

    Endpoints are drawn uniformly in the domain (fixed ``seed``) and sorted. Errors are absolute
    errors of the definite integral against the exact antiderivative, in float64.
    """
    lo, hi = signal.domain
    gen = torch.Generator().manual_seed(seed)
    ab = lo + (hi - lo) * torch.rand(n_intervals, 2, generator=gen, dtype=torch.float64)
    a, b = ab.min(dim=1).values, ab.max(dim=1).values
    exact = signal.definite(a, b)
    dev, dt = _device_of(net), _dtype_of(net)
    x = a[:, None].to(dev, dt)
    learned = net.integrate(a[:, None].to(dev, dt), b[:, None].to(dev, dt), x)[:, 0].double().cpu()
    err = (learned - exact).abs()
    full_exact = float(signal.definite(torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)))
    one = torch.ones(1, 1, device=dev, dtype=dt)
    full_learned = float(net.integrate(one * lo, one * hi, one * lo)[0, 0])
    return {
        "max_abs_err": float(err.max()),
        "mean_abs_err": float(err.mean()),
        "median_abs_err": float(err.median()),
        "n_intervals": n_intervals,
        "domain": [lo, hi],
        "integral_domain_exact": full_exact,
        "integral_domain_learned": full_learned,
        "integral_domain_abs_err": abs(full_learned - full_exact),
    }


def mc_report(
    net: Any, signal: Signal1D, *, seeds: int = MC_SEEDS, samples: int = MC_SAMPLES, seed: int = 54321, log=None
) -> dict[str, Any]:
    """The control-variate study of :mod:`.mc_study` on ``MC_BOXES`` random intervals of the domain
    (exact integrals from the signal's antiderivative, at the network's rounded endpoints)."""
    from .mc_study import study

    lo, hi = signal.domain
    gen = torch.Generator().manual_seed(seed)
    ab = lo + (hi - lo) * torch.rand(MC_BOXES, 2, generator=gen, dtype=torch.float64)
    dev, dt = _device_of(net), _dtype_of(net)
    a = ab.min(dim=1, keepdim=True).values.to(dev, dt)
    b = ab.max(dim=1, keepdim=True).values.to(dev, dt)
    exact = signal.definite(a.double().cpu(), b.double().cpu()).to(dev)

    def f(p: torch.Tensor) -> torch.Tensor:
        return signal.f(p[:, 0].double())[:, None]

    return study(net, f, a, b, a.clone(), exact, samples=samples, seeds=seeds, seed=seed, log=log)


@torch.no_grad()
def grad_fit_error(net: Any, signal: Signal1D, n: int = 2001) -> float:
    """Max |grad(t) - f(t)| on a dense grid (how well the grad network fits the signal)."""
    lo, hi = signal.domain
    t = torch.linspace(lo, hi, n, dtype=torch.float64)[:, None]
    g = net.grad(t.to(_device_of(net), _dtype_of(net)))[:, 0].double().cpu()
    return float((g - signal.f(t[:, 0])).abs().max())


def _default_config() -> TrainConfig:
    return TrainConfig(steps=DEFAULT_STEPS, lr=DEFAULT_LR, batch_size=DEFAULT_BATCH, threads=1)


def fit_signal(
    signal: Signal1D | str,
    config: TrainConfig | None = None,
    *,
    spec: Any = None,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    activation: Any = DEFAULT_ACTIVATION,
    n_intervals: int = N_INTERVALS,
) -> tuple[Any, History, dict[str, Any]]:
    """Compile, train and evaluate one signal. Returns ``(net, history, result dict)``.

    ``spec`` (path, YAML string or dict) overrides ``hidden``/``activation``; it must have a
    single 1-D input that is integrated.
    """
    import autoint_compiler as ac

    sig = get_signal(signal) if isinstance(signal, str) else signal
    cfg = config or _default_config()
    if spec is None:
        spec = make_spec(sig.name, hidden, activation, seed=cfg.seed)
    t0 = time.perf_counter()
    net = ac.compile(spec)
    compile_s = time.perf_counter() - t0
    if net.in_features != 1 or len(net.integration_columns) != 1 or net.out_features != 1:
        raise ValueError(
            f"the 1-D experiment needs a spec with one 1-D integrated input and one output; "
            f"got in_features={net.in_features}, integration_columns={net.integration_columns}, "
            f"out_features={net.out_features}"
        )
    hist = fit_samples(net, make_sampler(sig, _dtype_of(net)), cfg, desc=f"train-1d {sig.name}")
    result: dict[str, Any] = {
        "signal": sig.name,
        "description": sig.description,
        "spec_name": net.name,
        "spec_hash": net.spec_hash,
        "steps": hist.steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "device": hist.device,
        "compile_spec_s": compile_s,
        "train_s": hist.wall_time,
        "steps_per_s": hist.steps_per_s,
        "final_loss": hist.smoothed_final_loss(),
        "grad_max_abs_err": grad_fit_error(net, sig),
    }
    result.update(evaluate_integrals(net, sig, n_intervals=n_intervals))
    return net, hist, result


def plot_result(net: Any, signal: Signal1D, path: str | Path, history: History | None = None) -> Path:
    """PNG: f vs grad network, exact vs learned antiderivative (aligned at the left end), loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = signal.domain
    t = torch.linspace(lo, hi, 600, dtype=torch.float64)
    tt = t[:, None].to(_device_of(net), _dtype_of(net))
    with torch.no_grad():
        g = net.grad(tt)[:, 0].double().cpu()
        phi = net.integral(tt)[:, 0].double().cpu()
    f = signal.f(t)
    F = signal.F(t)
    learned = phi - phi[0] + F[0]
    ncols = 3 if history is not None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.4), dpi=110)
    ax = axes[0]
    ax.plot(t, f, "k-", lw=2.5, alpha=0.35, label="f (signal)")
    ax.plot(t, g, "C0--", lw=1.4, label="grad network")
    ax.set_title(f"{signal.name}: signal vs grad network")
    ax.set_xlabel("t")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(t, F, "k-", lw=2.5, alpha=0.35, label="exact antiderivative")
    ax.plot(t, learned, "C3--", lw=1.4, label="integral network (aligned at t=%g)" % lo)
    ax.set_title("antiderivative")
    ax.set_xlabel("t")
    ax.legend(fontsize=8)
    if history is not None:
        ax = axes[2]
        ax.semilogy(history.losses, lw=0.8)
        ax.set_title("training loss (MSE of grad net)")
        ax.set_xlabel("step")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the 1-D results."""
    head = (
        "| signal | steps | train s | final MSE | max |grad-f| | max abs err | mean abs err "
        "| \u222b domain (learned) | \u222b domain (exact) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {r['signal']} | {r['steps']} | {r['train_s']:.1f} | {r['final_loss']:.2e} "
        f"| {r['grad_max_abs_err']:.2e} | {r['max_abs_err']:.2e} | {r['mean_abs_err']:.2e} "
        f"| {r['integral_domain_learned']:.6f} | {r['integral_domain_exact']:.6f} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"


def run(
    signals: Sequence[str] = ("poly", "gaussians"),
    config: TrainConfig | None = None,
    *,
    out: str | Path | None = None,
    spec: Any = None,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    activation: Any = DEFAULT_ACTIVATION,
    n_intervals: int = N_INTERVALS,
    save_checkpoints: bool = True,
    verbose: bool = True,
    run_dir: str | Path | None = None,
    mc_seeds: int = MC_SEEDS,
    mc_samples: int = MC_SAMPLES,
) -> list[dict[str, Any]]:
    """Run the experiment for each signal; write PNG/JSON/markdown (and checkpoints) to ``out``.
    ``mc_seeds`` > 0: also the Monte Carlo study (:func:`mc_report`), ``mc_samples`` samples of f each.

    ``run_dir``: keep a resumable run per signal in ``run_dir/<signal>`` (``config.resume``
    continues it). Under torchrun only rank 0 prints and writes files."""
    from dataclasses import replace

    from ..runtime.checkpoint import save_checkpoint

    results = []
    out_dir = Path(out) if out is not None else None
    main = distributed.is_main()
    verbose = verbose and main
    for name in signals:
        sig = get_signal(name)
        cfg = config
        if run_dir is not None:
            base = config or _default_config()
            cfg = replace(base, run_dir=str(Path(run_dir) / sig.name))
        net, hist, res = fit_signal(sig, cfg, spec=spec, hidden=hidden, activation=activation, n_intervals=n_intervals)
        main = distributed.is_main()  # training may have joined a process group
        verbose = verbose and main
        if mc_seeds > 0 and main:
            if verbose:
                print(f"[{sig.name}] Monte Carlo study: {MC_BOXES} intervals x {mc_seeds} seeds", flush=True)
            res["mc"] = mc_report(net, sig, seeds=mc_seeds, samples=mc_samples, log=print if verbose else None)
        if out_dir is not None and main:
            res["plot"] = str(plot_result(net, sig, out_dir / f"oned_{sig.name}.png", hist))
            if save_checkpoints:
                ckpt = save_checkpoint(out_dir / f"oned_{sig.name}.safetensors", net, extra={"steps": hist.steps})
                res["checkpoint"] = str(ckpt)
        if verbose:
            print(
                f"[{sig.name}] \u222b_{sig.domain[0]:g}^{sig.domain[1]:g} f dt: learned "
                f"{res['integral_domain_learned']:.6f}, exact {res['integral_domain_exact']:.6f} "
                f"(abs err {res['integral_domain_abs_err']:.2e}); {n_intervals} random intervals: "
                f"max abs err {res['max_abs_err']:.2e}, mean {res['mean_abs_err']:.2e}; "
                f"{res['train_s']:.1f} s, {res['steps_per_s']:.0f} steps/s",
                flush=True,
            )
        results.append(res)
    table = format_table(results)
    with_mc = [(r["signal"], r["mc"]) for r in results if "mc" in r]
    if with_mc:
        from .mc_study import format_table as mc_table
        from .mc_study import machine

        table += (
            "\n## Integrals you can trust: AutoInt + Monte Carlo of the residual f - grad (issue 20)\n\n"
            + mc_table(with_mc)
            + f"\n{MC_BOXES} random intervals of the domain, each estimated with {with_mc[0][1]['seeds']} independent "
            "seeds; RMSE over intervals and seeds against the exact integral; mean err / SE: the mean error in "
            "units of its standard error (|.| < 4 expected: unbiased); variance reduction = MSE(plain MC) / "
            f"MSE(corrected), same sampler and samples of f. Machine: {machine()}.\n"
        )
    if verbose:
        print()
        print(table)
    if out_dir is not None and main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "oned_results.md").write_text(table)
        (out_dir / "oned_results.json").write_text(json.dumps(results, indent=2) + "\n")
        if with_mc:
            from .mc_study import plot_curves

            plot_curves([(f"1-D {name}", mc) for name, mc in with_mc], out_dir / "oned_mc_error.png")
    return results


def demo(out: str | Path | None = None, steps: int = DEFAULT_STEPS, mc_seeds: int = 200) -> dict[str, Any]:
    """The ``make demo`` 1-D job: fit the polynomial (``examples/oned_poly.yaml`` settings), print its
    integral over [-1, 2] against the exact value and the Monte Carlo study with ``mc_seeds`` seeds.
    Well under a minute on a CPU."""
    cfg = TrainConfig(steps=steps, lr=DEFAULT_LR, batch_size=DEFAULT_BATCH, progress=False, threads=1)
    return run(["poly"], cfg, out=out, mc_seeds=mc_seeds)[0]


# ----------------------------------------------------------------------------- CLI


def parse_activation(text: str) -> Any:
    """``swish`` | ``sine:30`` (sine with w0=30) | a YAML/JSON mapping ``{name: sine, w0: 30}``;
    checked as the spec checks an activation (names, ``w0`` and ``alpha`` ranges, formulas), so a bad
    one is a usage error naming ``--activation`` before anything runs."""
    from ..frontends.spec import _check_activation

    value = _parse_activation(text)
    try:
        _check_activation(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--activation {text.strip()[:60]!r}: {str(exc)[:200]}") from None
    return value


def _parse_activation(text: str) -> Any:
    text = text.strip()
    if text.startswith("{"):
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise argparse.ArgumentTypeError(f"--activation: invalid YAML mapping ({first})") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"--activation: expected a mapping, got {text!r}")
        return value
    if ":" not in text:
        from ..core.activations import ACTIVATIONS

        if text not in ACTIVATIONS:
            known = ", ".join(sorted(ACTIVATIONS))
            raise argparse.ArgumentTypeError(f"unknown activation {text!r}; expected one of: {known}; or a mapping")
        return text
    if ":" in text:
        name, w0 = text.split(":", 1)
        try:
            return {"name": name.strip(), "w0": positive_float(w0)}
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"--activation {text!r}: w0 must be a finite number > 0") from None
    return text


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train-1d`` subcommand (handler in ``func``)."""
    p = subparsers.add_parser(
        "train-1d",
        help="fit a 1-D signal with the grad network and check integrals against the exact ones",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--signal", choices=[*sorted(SIGNALS), "all"], default="all")
    p.add_argument("--steps", type=int_range(0, 10**9), default=DEFAULT_STEPS)
    p.add_argument("--lr", type=positive_float, default=DEFAULT_LR)
    p.add_argument("--batch", type=int_range(1, 2**24), default=DEFAULT_BATCH)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--out", default=None, help="directory for PNG/JSON/markdown/checkpoints")
    p.add_argument(
        "--hidden", type=int_list(1, 65536, what="widths"), default=list(DEFAULT_HIDDEN), help="e.g. 64,64,64"
    )
    p.add_argument(
        "--activation",
        type=parse_activation,
        default=DEFAULT_ACTIVATION,
        help="swish | sine:30 | '{formula: x*tanh(softplus(x))}' ...",
    )
    p.add_argument("--spec", default=None, help="a spec file to use instead of --hidden/--activation")
    p.add_argument("--compile", action="store_true", help="torch.compile the grad network")
    p.add_argument("--intervals", type=int_range(1, 10**7), default=N_INTERVALS)
    p.add_argument(
        "--mc-seeds", type=int_range(0, 10**6), default=MC_SEEDS, help="seeds of the Monte Carlo study (0: skip it)"
    )
    p.add_argument("--mc-samples", type=int_range(2, 10**6), default=MC_SAMPLES, help="samples of f per integral")
    p.add_argument(
        "--threads", type=int_range(0, 4096), default=1, help="CPU threads while training (0: torch's default)"
    )
    p.add_argument(
        "--run-dir",
        default=None,
        help="keep a resumable run here (spec, config, checkpoints; one sub-folder per signal)",
    )
    p.add_argument("--checkpoint-every", type=int_range(0, 10**9), default=500, help="steps between run checkpoints")
    p.add_argument("--keep-checkpoints", type=int_range(1, 10**6), default=3, help="run checkpoints kept")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--no-checkpoint", action="store_true", help="do not save .safetensors checkpoints in --out")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    if (status := check_device(args.device)) is not None:  # fail early, in one line
        return status
    if args.resume and not args.run_dir:
        print("autoint-compile: error: --resume needs --run-dir", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch,
        seed=args.seed,
        device=args.device,
        compile=args.compile,
        threads=args.threads or None,
        progress=False if args.no_progress else None,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume,
    )
    signals = sorted(SIGNALS, key=lambda s: s != "poly") if args.signal == "all" else [args.signal]
    run(
        signals,
        cfg,
        out=args.out,
        spec=args.spec,
        hidden=args.hidden,
        activation=args.activation,
        n_intervals=args.intervals,
        save_checkpoints=not args.no_checkpoint,
        run_dir=args.run_dir,
        mc_seeds=args.mc_seeds,
        mc_samples=args.mc_samples,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return standalone_main("train-1d", add_parser, argv, "autoint_compiler.apps.oned")


if __name__ == "__main__":
    sys.exit(main())
