"""Sparse-view CT with AutoInt (Lindell et al., CVPR 2021, Sec. 5.1): sinogram interpolation.

The network takes ``(rho, theta, t)``: ``rho`` the normalised detector offset, ``theta`` the
projection angle and ``t`` the position along the line; ``integrate: [t]``. The grad network
``g(rho, theta, t)`` is the attenuation along the line. Training (first-order backprop only):

    for a batch of measured lines, estimate  \u222b g dt  over the line's chord of the
    reconstruction circle with stratified Monte-Carlo samples of t, and match it (MSE) to the
    measured sinogram value (pixel units / (size / 2), see :mod:`.ct_data`).

Then the integral network gives *every* line integral in closed form,
``net.integrate(-c, c, (rho, theta))`` = Phi(c) - Phi(-c), two evaluations per line, at all
angles, including those never measured. The sinogram is sampled in angle by 4x, 8x, 16x; PSNR of
the interpolated sinogram against the full one is compared across activations and with two
baselines: filtered back-projection (``iradon`` of the sparse sinogram, re-projected with
``radon`` at all angles) and nearest-angle repetition.

Physics used as data augmentation (``mirror``, on by default): a measured line ``(s, theta)`` is
also the line ``(-s, theta + 180 deg)``; ``theta`` enters the positional encoding with period
360 deg, so the measured angles wrap around consistently.

Integrals you can trust (issue 20): for each trained network, on 16 random lines (any angle), the
AutoInt error next to the control-variate estimate ``net.integrate(-c, c, x, f=mu, samples=32)``, f = the
phantom's attenuation along the line (bilinear, the interpolation ``radon`` uses): its error and 95%
interval coverage over 1,000 seeds and the variance reduction against plain Monte Carlo with as many
samples of f (:mod:`.mc_study`); exact line integrals by 4,096-point midpoint quadrature of the same f.

CLI: ``autoint-compile ct [--factors 4,8,16] [--activations sine,swish,relu,softplus] ...``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..runtime import distributed
from ..runtime.train import History, LineData, TrainConfig, fit_line_integrals
from . import ct_data
from ._argtypes import SEED, float_range, int_list, int_range, positive_float
from ._cli import check_device, standalone_main
from .ct_data import CTProblem, make_problem

__all__ = [
    "CTSettings",
    "make_spec",
    "theta_input",
    "problem_lines",
    "predict_sinogram",
    "fit_ct",
    "run_sweep",
    "format_table",
    "write_csv",
    "plot_sweep",
    "add_parser",
    "run_cli",
    "main",
]

DEFAULT_ACTIVATIONS = ("sine", "swish", "relu", "softplus")
MC_LINES = 16
MC_SEEDS = 1000
MC_SAMPLES = 32
MC_SAMPLERS = ("uniform", "sobol")
DEFAULT_FACTORS = (4, 8, 16)
INPUTS = ("rho", "theta", "t")


@dataclass
class CTSettings:
    """Sizes and model options of the CT experiment (defaults: a few minutes on a 2-core CPU)."""

    size: int = 64  # phantom size; the sinogram is size x n_angles
    n_angles: int = 64  # full set of angles over 180 deg
    hidden: tuple[int, ...] = (128, 128, 128)
    rho_frequencies: int = 6  # positional-encoding octaves of rho (2^k pi, k < 6: down to 2 pixels)
    theta_frequencies: int = 2  # octaves of theta: low, so that unmeasured angles interpolate smoothly
    t_frequencies: int = 0  # octaves of t (0: raw t)
    sine_w0: float = 10.0  # w0 of the sine activation (SIREN init)
    n_samples: int = 16  # stratified samples of t per line (grad mode)
    mode: str = "grad"  # "grad": Monte-Carlo of the grad net; "integral": closed form in training
    mirror: bool = True  # also use each measured line as (-rho, theta + 180 deg)
    dtype: str = "float32"
    steps: int = 2000
    lr: float = 5e-3
    sine_lr: float | None = 1e-3  # SIREN diverges at lr 5e-3; None: use lr
    batch_lines: int = 128
    seed: int = 0
    device: str = "cpu"
    compile: bool = False
    threads: int | None = 1  # one CPU thread: faster for these sizes, and robust to shared cores
    progress: bool | None = None
    mc_seeds: int = MC_SEEDS  # seeds of the Monte Carlo study (0: skip it)
    mc_samples: int = MC_SAMPLES
    consistency: float = 0.0  # weight of the line-consistency regulariser (0: off), see consistency_penalty
    consistency_points: int = 256  # random points per step of the regulariser (two angles each)
    extra: dict = field(default_factory=dict)

    def train_config(self, activation: Any = None) -> TrainConfig:
        lr = self.lr
        if self.sine_lr is not None and _act_label(activation) == "sine":
            lr = self.sine_lr
        return TrainConfig(
            steps=self.steps,
            lr=lr,
            batch_size=self.batch_lines,
            seed=self.seed,
            device=self.device,
            compile=self.compile,
            threads=self.threads,
            progress=self.progress,
        )


def _act_node(activation: Any, w0: float) -> dict[str, Any]:
    """The graph-node fields of an activation (``op`` and its parameters)."""
    if isinstance(activation, dict):
        if "formula" in activation:
            return {"op": "formula", "formula": activation["formula"]}
        node = {"op": activation["name"]}
        node.update({k: v for k, v in activation.items() if k != "name"})
        return node
    if activation == "sine":
        return {"op": "sine", "w0": float(w0)}
    return {"op": str(activation)}


def _act_label(activation: Any) -> str:
    if isinstance(activation, dict):
        if "formula" in activation:
            return "formula"
        return str(activation.get("name"))
    return str(activation)


def make_spec(activation: Any = "swish", settings: CTSettings | None = None, name: str | None = None) -> dict:
    """Spec of the CT network, in the explicit ``graph`` form so that rho and theta get their own
    positional encodings (``examples/ct_shepp.yaml`` is this spec for swish):

    ``posenc(rho, F_rho)``, ``posenc(theta, F_theta)`` and raw ``t`` -> MLP -> 1 output.
    ``theta_frequencies = 0`` feeds theta raw (no encoding); likewise for rho.
    """
    s = settings or CTSettings()
    act = _act_node(activation, s.sine_w0)
    label = "".join(ch if ch.isalnum() else "_" for ch in _act_label(activation))
    graph: list[dict[str, Any]] = []
    features = []
    for var, freqs in (("rho", s.rho_frequencies), ("theta", s.theta_frequencies), ("t", s.t_frequencies)):
        if freqs > 0:
            graph.append(
                {"name": f"enc_{var}", "op": "posenc", "in": [var], "frequencies": int(freqs), "include_input": True}
            )
            features.append(f"enc_{var}")
        else:
            features.append(var)
    h = features
    for i, width in enumerate(s.hidden):
        graph.append({"name": f"fc{i}", "op": "linear", "in": h, "out": int(width)})
        graph.append({"name": f"act{i}", **act, "in": [f"fc{i}"]})
        h = [f"act{i}"]
    graph.append({"name": "out", "op": "linear", "in": h, "out": 1})
    spec = {
        "name": name or f"ct_{label}",
        "inputs": {"rho": 1, "theta": 1, "t": 1},
        "integrate": ["t"],
        "graph": graph,
        "seed": int(s.seed),
        "dtype": s.dtype,
    }
    if act["op"] == "sine":
        spec["init"] = "siren"
    return spec


def theta_input(theta_deg: np.ndarray) -> np.ndarray:
    """Network input for an angle: ``theta / 180 - 1``, so [0, 360) deg maps to [-1, 1) and the
    lowest positional-encoding octave, ``sin(pi * x)``, has period 360 deg (the sinogram's period)."""
    return np.asarray(theta_deg, dtype=np.float64) / 180.0 - 1.0


def _columns(net: Any) -> tuple[int, int, int]:
    if net.in_features != 3 or len(net.integration_columns) != 1 or net.out_features != 1:
        raise ValueError(
            "the CT experiment needs inputs (rho, theta, t), each of dimension 1, integrate: [t], "
            f"output: 1; got in_features={net.in_features}, integration_columns="
            f"{net.integration_columns}, out_features={net.out_features}"
        )
    t_col = net.integration_columns[0]
    names = list(getattr(getattr(net, "spec", None), "inputs", None) or [])
    if sorted(names) == sorted(INPUTS):
        if names.index("t") != t_col:
            raise ValueError("the CT network must integrate over its input 't'")
        return names.index("rho"), names.index("theta"), t_col
    others = [c for c in range(3) if c != t_col]
    return others[0], others[1], t_col  # unnamed: rho before theta


def _line_inputs(net: Any, rho: np.ndarray, theta_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rho_c, th_c, _ = _columns(net)
    x = np.zeros((rho.shape[0], 3))
    x[:, rho_c] = rho
    x[:, th_c] = theta_input(theta_deg)
    half = ct_data.chord_half_length(rho)
    return x, half


def problem_lines(net: Any, problem: CTProblem, mirror: bool = True) -> LineData:
    """The measured lines of ``problem`` (sparse angles) as :class:`LineData` in normalised units."""
    n_det = problem.size
    rho = ct_data.detector_rho(n_det)
    sub_theta = problem.sub_theta
    R, T = np.meshgrid(rho, sub_theta, indexing="ij")  # [n_det, n_sub]
    vals = problem.sub_sino / problem.scale
    rho_l, th_l, val_l = R.ravel(), T.ravel(), vals.ravel()
    if mirror:
        rho_l = np.concatenate([rho_l, -rho_l])
        th_l = np.concatenate([th_l, th_l + 180.0])
        val_l = np.concatenate([val_l, val_l])
    x, half = _line_inputs(net, rho_l, th_l)
    return LineData(
        x=torch.from_numpy(x),
        lower=torch.from_numpy(-half),
        upper=torch.from_numpy(half),
        value=torch.from_numpy(val_l)[:, None],
    )


@torch.no_grad()
def predict_sinogram(net: Any, problem: CTProblem, chunk: int = 65536) -> np.ndarray:
    """The full sinogram ``[size, n_angles]`` (pixel units) from the integral network in closed
    form: two evaluations of Phi per line."""
    param = next(net.integral.parameters())
    rho = ct_data.detector_rho(problem.size)
    R, T = np.meshgrid(rho, problem.theta, indexing="ij")
    x, half = _line_inputs(net, R.ravel(), T.ravel())
    xt = torch.from_numpy(x).to(param.device, param.dtype)
    ht = torch.from_numpy(half).to(param.device, param.dtype)[:, None]
    out = []
    for i in range(0, xt.shape[0], chunk):
        out.append(net.integrate(-ht[i : i + chunk], ht[i : i + chunk], xt[i : i + chunk]).double().cpu())
    pred = torch.cat(out)[:, 0].numpy().reshape(R.shape)
    return pred * problem.scale


def attenuation(net: Any, problem: CTProblem):
    """f for the network's inputs [M, 3] (rho, theta input, t; normalised units) -> [M, 1]: the phantom
    at the point of line (rho, theta) at position t, bilinear between pixel centres and zero outside the
    image (skimage's ``radon`` rotates the image with the same interpolation), float64."""
    rho_c, th_c, t_c = _columns(net)
    img = torch.from_numpy(problem.image)
    n = problem.size
    c = n // 2

    def f(p: torch.Tensor) -> torch.Tensor:
        p = p.double().cpu()
        s, t = p[:, rho_c] * (n / 2), p[:, t_c] * (n / 2)
        th = torch.deg2rad((p[:, th_c] + 1.0) * 180.0)
        col = c + s * torch.cos(th) + t * torch.sin(th)
        row = c - s * torch.sin(th) + t * torch.cos(th)
        r0, c0 = row.floor(), col.floor()
        fr, fc = row - r0, col - c0
        out = torch.zeros_like(row)
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            r, cc = (r0 + dr).long(), (c0 + dc).long()
            ok = (r >= 0) & (r < n) & (cc >= 0) & (cc < n)
            out = out + torch.where(ok, w * img[r.clamp(0, n - 1), cc.clamp(0, n - 1)], torch.zeros_like(w))
        return out[:, None]

    return f


def mc_report(
    net: Any, problem: CTProblem, *, seeds: int = MC_SEEDS, samples: int = MC_SAMPLES, seed: int = 2020, log=None
) -> dict[str, Any]:
    """The control-variate study of :mod:`.mc_study` on ``MC_LINES`` random lines (|rho| <= 0.9, any of
    the full set of angles, measured or not)."""
    from .mc_study import study

    rng = np.random.default_rng(seed)
    rho_all = ct_data.detector_rho(problem.size)
    rho = rng.choice(rho_all[np.abs(rho_all) <= 0.9], MC_LINES)
    theta = rng.choice(problem.theta, MC_LINES)
    x, half = _line_inputs(net, rho, theta)
    param = next(net.integral.parameters())
    xt = torch.from_numpy(x).to(param.device, param.dtype)
    hi = torch.from_numpy(half)[:, None].to(param.device, param.dtype)
    f = attenuation(net, problem)
    # exact: 4,096-point midpoint rule of the same f between the network's (rounded) chord ends
    m = 4096
    h = hi.double().cpu()
    t = -h + (torch.arange(m, dtype=torch.float64) + 0.5) / m * 2 * h  # [lines, m]
    pts = xt.double().cpu()[:, None, :].repeat(1, m, 1)
    pts[:, :, _columns(net)[2]] = t
    fvals = f(pts.reshape(-1, 3)).reshape(MC_LINES, m)
    exact = (fvals * (2 * h / m)).sum(1, keepdim=True)
    ceiling = control_variate_ceiling(net, problem, pts, fvals, h)
    out = study(
        net,
        f,
        -hi,
        hi,
        xt,
        exact.to(param.device),
        samples=samples,
        seeds=seeds,
        samplers=MC_SAMPLERS,
        curve_samples=(4, 16, 64, 256),
        curve_seeds=50,
        seed=seed,
        log=log,
    )
    out["uniform_vrf_of"] = ceiling
    if log is not None:
        log("  uniform-sampling variance reduction with g = " + ", ".join(f"{k}: {v:.2f}x" for k, v in ceiling.items()))
    return out


def control_variate_ceiling(
    net: Any, problem: CTProblem, pts: torch.Tensor, fvals: torch.Tensor, half: torch.Tensor
) -> dict[str, float]:
    """How much a control variate *could* help on these lines: the variance reduction of the uniform
    sampler, sum_lines L^2 Var_line(f) / sum_lines L^2 Var_line(f - g) (exact for equal N per line,
    computed on the dense midpoint points ``pts`` [lines, m, 3] where f is ``fvals`` [lines, m]), for
    g = the trained grad network, and for g = a reconstruction of the image (bilinear, like f) by
    filtered back-projection from the measured angles and from all angles -- the quality a network
    fitted to the sinogram would need to match."""
    from skimage.transform import iradon

    length2 = (2 * half[:, 0]) ** 2
    var_f = (fvals.var(dim=1, unbiased=False) * length2).sum()
    flat = pts.reshape(-1, 3)
    gs = {"network": _grad_values(net, flat).reshape(fvals.shape)}
    for name, sino, theta in (
        ("fbp_measured_angles", problem.sub_sino, problem.sub_theta),
        ("fbp_all_angles", problem.sino, problem.theta),
    ):
        recon = iradon(sino, theta=theta, output_size=problem.size, filter_name="ramp", circle=True)
        g = attenuation(net, replace(problem, image=ct_data.circle_mask(recon)))
        gs[name] = g(flat).reshape(fvals.shape)
    out = {}
    for name, g in gs.items():
        var_r = ((fvals - g).var(dim=1, unbiased=False) * length2).sum()
        out[name] = float(var_f / var_r) if var_r > 0 else float("inf")
    return out


def fit_ct(
    problem: CTProblem, activation: Any = "swish", settings: CTSettings | None = None, spec: Any = None
) -> tuple[Any, History, np.ndarray, dict[str, Any]]:
    """Compile, train on the sparse sinogram, predict the full one. Returns
    ``(net, history, predicted sinogram, metrics)``."""
    import autoint_compiler as ac

    s = settings or CTSettings()
    net = ac.compile(spec if spec is not None else make_spec(activation, s))
    lines = problem_lines(net, problem, mirror=s.mirror)
    hist = fit_line_integrals(
        net,
        lines,
        s.train_config(activation),
        n_samples=s.n_samples,
        mode=s.mode,
        desc=f"ct {_act_label(activation)} x{problem.factor}",
        penalty=consistency_penalty(net, s.consistency, s.consistency_points) if s.consistency > 0 else None,
    )
    t0 = time.perf_counter()
    pred = predict_sinogram(net, problem)
    eval_s = time.perf_counter() - t0
    metrics = _metrics(pred, problem)
    metrics.update(
        {
            "train_s": hist.wall_time,
            "eval_s": eval_s,
            "final_loss": hist.smoothed_final_loss(),
            "line_spread": line_spread(net),
        }
    )
    return net, hist, pred, metrics


def point_inputs(net: Any, points: torch.Tensor, theta_deg: torch.Tensor) -> torch.Tensor:
    """Network inputs ``[P, 3]`` that put image point ``points[i] = (X, Y)`` (normalised units: the
    image's column and row offsets from the centre over ``size / 2``) on the line of angle
    ``theta_deg[i]`` through it: ``rho = X cos - Y sin``, ``t = X sin + Y cos`` (the inverse of the
    map :func:`attenuation` uses)."""
    rho_c, th_c, t_c = _columns(net)
    th = torch.deg2rad(theta_deg)
    c, s = torch.cos(th), torch.sin(th)
    X, Y = points[:, 0], points[:, 1]
    out = torch.empty(points.shape[0], 3, dtype=points.dtype, device=points.device)
    out[:, rho_c] = X * c - Y * s
    out[:, th_c] = theta_deg / 180.0 - 1.0
    out[:, t_c] = X * s + Y * c
    return out


def _disk_points_and_angles(n: int, k: int, gen: torch.Generator | None, dtype=torch.float64):
    """``n`` uniform points of the unit disk, each repeated ``k`` times, and ``n * k`` uniform angles in
    [0, 360) degrees."""
    device = gen.device if gen is not None else torch.device("cpu")
    kw = dict(generator=gen, device=device, dtype=dtype)
    r = torch.rand(n, 1, **kw).sqrt()
    phi = torch.rand(n, 1, **kw) * (2 * np.pi)
    pts = torch.cat([r * torch.cos(phi), r * torch.sin(phi)], 1).repeat_interleave(k, 0)
    return pts, torch.rand(n * k, **kw) * 360.0


def consistency_penalty(net: Any, weight: float, n_points: int = 256):
    """The line-consistency regulariser (issue 20): the grad network ``g(rho, theta, t)`` is the
    attenuation *along one line*; nothing in the line-integral loss makes two lines through one point
    agree on it. Each step draws ``n_points`` random points of the reconstruction disk and two random
    angles (any of [0, 360), measured or not) for each, and adds ``weight`` x the mean squared
    difference of the two values, relative to the mean squared value. A consistent ``g`` is a
    reconstruction of the image, which is what makes it a good control variate (and a geometric prior
    for the unmeasured angles)."""
    from ..runtime.train import PointPenalty

    def points(gen: torch.Generator) -> torch.Tensor:
        pts, th = _disk_points_and_angles(n_points, 2, gen, dtype=torch.float32)
        return point_inputs(net, pts, th)

    def loss(values: torch.Tensor) -> torch.Tensor:
        v = values.reshape(n_points, 2)
        return weight * ((v[:, 0] - v[:, 1]) ** 2).mean() / (v.detach().pow(2).mean() + 1e-6)

    return PointPenalty(points=points, loss=loss)


@torch.no_grad()
def line_spread(net: Any, n_points: int = 2048, n_angles: int = 8, seed: int = 0) -> float:
    """Line consistency of a trained network: for random points of the disk, the standard deviation of
    the attenuation ``n_angles`` random lines through each assign to it, averaged, relative to the mean
    absolute attenuation (0: every line agrees)."""
    gen = torch.Generator().manual_seed(seed)
    pts, th = _disk_points_and_angles(n_points, n_angles, gen)
    g = _grad_values(net, point_inputs(net, pts, th)).reshape(n_points, n_angles)
    return float(g.std(dim=1).mean() / (g.abs().mean() + 1e-12))


@torch.no_grad()
def _grad_values(net: Any, x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """The grad network at the inputs ``x`` [M, 3] (any dtype, on the CPU), in chunks on the network's
    device and dtype: [M, 1] float64 on the CPU."""
    param = next(net.grad.parameters())
    return torch.cat([net.grad(c.to(param.device, param.dtype)).double().cpu() for c in x.split(chunk)])


def _metrics(pred: np.ndarray, problem: CTProblem) -> dict[str, Any]:
    rng = float(problem.sino.max() - problem.sino.min())
    held = problem.heldout_mask
    return {
        "psnr": ct_data.psnr(pred, problem.sino, rng),
        "psnr_heldout": ct_data.psnr(pred[:, held], problem.sino[:, held], rng) if held.any() else float("nan"),
        "psnr_measured": ct_data.psnr(pred[:, ~held], problem.sino[:, ~held], rng),
    }


# ----------------------------------------------------------------------------- the sweep


def run_sweep(
    activations: Sequence[Any] = DEFAULT_ACTIVATIONS,
    factors: Sequence[int] = DEFAULT_FACTORS,
    settings: CTSettings | None = None,
    *,
    out: str | Path | None = None,
    verbose: bool = True,
    spec: Any = None,
) -> dict[str, Any]:
    """Every activation x subsampling factor, plus the FBP and nearest-angle baselines.

    With ``spec`` (a path, YAML text or dict with inputs rho, theta, t) that network is trained
    instead of the built-in one for each activation (``activations`` is then ignored).

    Returns ``{"rows": [...], "sinograms": {(method, factor): array}, "problems": {factor: ...}}``;
    with ``out`` writes ``ct_results.csv``, ``ct_results.md``, ``ct_results.json`` and
    ``ct_sinograms.png`` there.
    """
    s = settings or CTSettings()
    rows: list[dict[str, Any]] = []
    mc: list[dict[str, Any]] = []
    sinos: dict[tuple[str, int], np.ndarray] = {}
    problems: dict[int, CTProblem] = {}
    t_start = time.perf_counter()
    for factor in factors:
        prob = make_problem(s.size, s.n_angles, factor)
        problems[factor] = prob
        for method, fn in (
            ("fbp", lambda p: ct_data.fbp_baseline(p.sub_sino, p.sub_theta, p.theta)),
            ("nearest", lambda p: ct_data.nearest_baseline(p.sub_sino, p.sub_theta, p.theta)),
        ):
            t0 = time.perf_counter()
            pred = fn(prob)
            m = _metrics(pred, prob)
            m.update({"train_s": 0.0, "eval_s": time.perf_counter() - t0, "final_loss": float("nan")})
            rows.append(_row(method, "", factor, prob, m, s))
            sinos[(method, factor)] = pred
            if verbose and distributed.is_main():
                print(f"[x{factor:>2}] {method:<9} PSNR {m['psnr']:6.2f} dB", flush=True)
        for act in ["spec"] if spec is not None else activations:
            net, hist, pred, m = fit_ct(prob, act, s, spec=spec)
            label = _act_label(act)
            rows.append(_row("autoint", label, factor, prob, m, s))
            sinos[(f"autoint-{label}", factor)] = pred
            if verbose and distributed.is_main():
                print(
                    f"[x{factor:>2}] autoint {label:<9} PSNR {m['psnr']:6.2f} dB "
                    f"(held-out angles {m['psnr_heldout']:6.2f}, measured {m['psnr_measured']:6.2f}); "
                    f"loss {m['final_loss']:.2e}; {m['train_s']:.1f} s",
                    flush=True,
                )
            if s.mc_seeds > 0 and distributed.is_main():
                log = print if verbose else None
                study = mc_report(net, prob, seeds=s.mc_seeds, samples=s.mc_samples, log=log)
                mc.append({"activation": label, "factor": factor, "line_spread": m["line_spread"], **study})
    total = time.perf_counter() - t_start
    result = {"rows": rows, "sinograms": sinos, "problems": problems, "total_s": total, "mc": mc}
    main = distributed.is_main()  # under torchrun only rank 0 prints and writes
    if verbose and main:
        print()
        print(format_table(rows))
        print(f"total {total:.1f} s")
    if out is not None and main:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out_dir / "ct_results.csv")
        (out_dir / "ct_results.md").write_text(format_report(rows, s, total) + _mc_section(mc))
        (out_dir / "ct_results.json").write_text(
            json.dumps({"settings": _settings_dict(s), "total_s": total, "rows": rows, "mc": mc}, indent=2) + "\n"
        )
        plot_sweep(result, out_dir / "ct_sinograms.png")
        if mc:
            from .mc_study import plot_curves

            act = "swish" if any(r["activation"] == "swish" for r in mc) else mc[0]["activation"]
            shown = [r for r in mc if r["activation"] == act]
            panels = [(f"CT line integrals, {r['activation']} x{r['factor']}", r) for r in shown]
            plot_curves(panels, out_dir / "ct_mc_error.png")
    return result


def _mc_section(mc: Sequence[dict[str, Any]]) -> str:
    if not mc:
        return ""
    from .mc_study import format_table as mc_table
    from .mc_study import machine

    return (
        "\n## Integrals you can trust: AutoInt + Monte Carlo of the residual f - grad (issue 20)\n\n"
        + mc_table([(f"AutoInt ({r['activation']}) {r['factor']}x", r) for r in mc])
        + f"\n{MC_LINES} random lines (|rho| <= 0.9, any angle), each estimated with {mc[0]['seeds']} independent "
        "seeds; f = the phantom's attenuation along the line (bilinear), exact = 4,096-point midpoint quadrature "
        "of f; errors in normalised units (sinogram / (size / 2)). mean err / SE: the mean error in units of its "
        "standard error (|.| < 4 expected: unbiased); variance reduction = MSE(plain MC) / MSE(corrected), same "
        f"sampler and samples of f. Machine: {machine()}.\n" + _ceiling_section(mc)
    )


def _ceiling_section(mc: Sequence[dict[str, Any]]) -> str:
    rows = [r for r in mc if "uniform_vrf_of" in r]
    if not rows:
        return ""
    lines = [
        "\n### What a control variate could do on these lines (uniform sampler, exact variance ratios)\n",
        "| network | line spread | g = network | g = FBP, measured angles | g = FBP, all angles |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r["uniform_vrf_of"]
        spread = r.get("line_spread")
        lines.append(
            f"| AutoInt ({r['activation']}) {r['factor']}x | {'' if spread is None else f'{spread:.3f}'} "
            f"| {c['network']:.2f}x | {c['fbp_measured_angles']:.2f}x | {c['fbp_all_angles']:.2f}x |"
        )
    lines.append(
        "\nsum over lines of L^2 Var_line(f) / L^2 Var_line(f - g) on 4,096 points per line. The residual "
        "estimator helps only as far as g matches f *pointwise along the line*; the sinogram loss fits g's "
        "integrals, not its values (line spread: the std of g over 8 lines through one point / mean |g|). "
        "A reconstruction by filtered back-projection shows the pointwise quality the target needs.\n"
    )
    return "\n".join(lines)


def _settings_dict(s: CTSettings) -> dict[str, Any]:
    d = {k: getattr(s, k) for k in s.__dataclass_fields__ if k != "extra"}
    d["hidden"] = list(s.hidden)
    return d


def _settings_note(s: CTSettings, total: float) -> str:
    return (
        f"\nSettings: phantom {s.size}x{s.size}, {s.n_angles} angles over 180 deg, MLP {list(s.hidden)}, "
        f"posenc {s.rho_frequencies} octaves on rho, {s.theta_frequencies} on theta, {s.t_frequencies} on t, "
        f"sine w0={s.sine_w0:g}, "
        + (
            f"line-consistency regulariser {s.consistency:g} ({s.consistency_points} points x 2 angles per step), "
            if s.consistency > 0
            else ""
        )
        + "training mode "
        f"'{s.mode}' ({s.n_samples} stratified t samples per line), mirror={s.mirror}, "
        f"{s.steps} Adam steps x {s.batch_lines} lines, lr {s.lr:g} (sine: {s.sine_lr or s.lr:g}; cosine decay), "
        f"seed {s.seed}, "
        f"device {s.device}; whole sweep {total:.0f} s.\n"
        "PSNR (dB) of the full sinogram (all angles) against the reference; data range = reference's.\n"
    )


def _row(method: str, activation: str, factor: int, prob: CTProblem, m: dict, s: CTSettings) -> dict[str, Any]:
    return {
        "method": method,
        "activation": activation,
        "factor": factor,
        "n_measured_angles": len(prob.sub_idx),
        "psnr": round(m["psnr"], 4),
        "psnr_heldout": round(m["psnr_heldout"], 4),
        "psnr_measured": round(m["psnr_measured"], 4),
        "final_loss": m["final_loss"],
        "train_s": round(m["train_s"], 3),
        "eval_s": round(m["eval_s"], 4),
        "size": s.size,
        "n_angles": s.n_angles,
        "steps": s.steps if method == "autoint" else 0,
        "device": s.device,
    }


def _method_label(row: dict[str, Any]) -> str:
    if row["method"] == "autoint":
        return f"AutoInt ({row['activation']})"
    return {"fbp": "FBP (iradon + radon)", "nearest": "nearest angle"}.get(row["method"], row["method"])


def format_table(rows: Sequence[dict[str, Any]], key: str = "psnr", fmt: str = "{:.2f}", bold_max: bool = True) -> str:
    """Markdown table: method (rows) x subsampling factor (columns) of ``key`` (PSNR in dB)."""
    factors = sorted({r["factor"] for r in rows})
    labels: list[str] = []
    for r in rows:
        lab = _method_label(r)
        if lab not in labels:
            labels.append(lab)
    labels.sort(key=lambda lab: not lab.startswith("AutoInt"))  # stable: AutoInt rows first, in run order
    table = {(_method_label(r), r["factor"]): r[key] for r in rows}
    best = {f: max(v for (lab, ff), v in table.items() if ff == f) for f in factors}
    head = "| method | " + " | ".join(f"{f}x" for f in factors) + " |\n"
    head += "|---|" + "---:|" * len(factors) + "\n"
    lines = []
    for lab in labels:
        cells = []
        for f in factors:
            v = table.get((lab, f))
            if v is None:
                cells.append("")
            else:
                cell = fmt.format(v)
                cells.append(f"**{cell}**" if bold_max and v == best[f] else cell)
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def format_report(rows: Sequence[dict[str, Any]], settings: CTSettings, total_s: float) -> str:
    """The markdown report: PSNR over all angles, over held-out angles only, and training times."""
    auto = [r for r in rows if r["method"] == "autoint"]
    parts = [
        "## Sinogram PSNR (dB), all angles\n",
        format_table(rows),
        "\n## PSNR (dB), held-out (unmeasured) angles only\n",
        format_table(rows, key="psnr_heldout"),
    ]
    if auto:
        parts += ["\n## Training time (s)\n", format_table(auto, key="train_s", fmt="{:.1f}", bold_max=False)]
    parts.append(_settings_note(settings, total_s))
    return "".join(parts)


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    return path


def plot_sweep(result: dict[str, Any], path: str | Path, activations: Sequence[str] | None = None) -> Path:
    """Figure like the paper's: per factor, the reference, nearest, FBP and AutoInt sinograms, and
    the centre scan line (the sinogram row at the central detector, across all angles).

    ``activations``: the AutoInt results to show (default: swish, the paper's choice, and the
    activation with the best mean PSNR if that is another one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, sinos, problems = result["rows"], result["sinograms"], result["problems"]
    auto = [r for r in rows if r["method"] == "autoint"]
    if activations is None:
        by_act: dict[str, list[float]] = {}
        for r in auto:
            by_act.setdefault(r["activation"], []).append(r["psnr"])
        activations = [a for a in ("swish",) if a in by_act]
        if by_act:
            best = max(by_act, key=lambda a: float(np.mean(by_act[a])))
            activations += [best] if best not in activations else []
    factors = sorted(problems)
    panels = [("reference", None), ("nearest", "nearest"), ("FBP", "fbp")]
    panels += [(f"AutoInt ({a})", f"autoint-{a}") for a in activations]
    ncol = len(panels) + 1
    fig, axes = plt.subplots(
        len(factors),
        ncol,
        figsize=(2.6 * ncol + 1.5, 2.6 * len(factors)),
        dpi=100,
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * len(panels) + [1.8]},
    )
    psnr_of = {
        (r["method"] if r["method"] != "autoint" else f"autoint-{r['activation']}", r["factor"]): r["psnr"]
        for r in rows
    }
    for i, f in enumerate(factors):
        prob = problems[f]
        ref = prob.sino
        vmax = float(ref.max())
        for j, (title, key) in enumerate(panels):
            ax = axes[i, j]
            img = ref if key is None else sinos[(key, f)]
            ax.imshow(img, cmap="gray", vmin=0, vmax=vmax, aspect="auto", extent=(0, 180, img.shape[0], 0))
            sub = title if key is None else f"{title}\n{psnr_of[(key, f)]:.2f} dB"
            ax.set_title(sub if i == 0 or key is not None else "", fontsize=8)
            ax.set_xticks([0, 90, 180])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{f}x ({len(prob.sub_idx)} angles)", fontsize=9)
                for th in prob.sub_theta:
                    ax.axvline(th, color="C1", lw=0.4, alpha=0.6)
        ax = axes[i, -1]
        c = prob.size // 2
        ax.plot(prob.theta, ref[c], "k-", lw=2.2, alpha=0.35, label="reference")
        ax.plot(prob.theta, sinos[("nearest", f)][c], "C2-", lw=0.9, label="nearest")
        ax.plot(prob.theta, sinos[("fbp", f)][c], "C0-", lw=0.9, label="FBP")
        for k, a in enumerate(activations):
            style = ("C3--", "C1:", "C4-.", "C5--")[k % 4]
            ax.plot(prob.theta, sinos[(f"autoint-{a}", f)][c], style, lw=1.2, label=f"AutoInt ({a})")
        ax.plot(prob.sub_theta, prob.sub_sino[c], "ko", ms=3, label="measured")
        ax.set_xlim(0, 180)
        ax.set_title("centre detector row vs angle" if i == 0 else "", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6, loc="best")
    axes[-1, -1].set_xlabel("angle (deg)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- CLI


def _act_list(text: str) -> list[Any]:
    from .oned import parse_activation

    if text.strip().startswith("{") or text.strip().startswith("["):
        import yaml

        try:
            v = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise argparse.ArgumentTypeError(f"--activations: invalid YAML ({first})") from None
        items = v if isinstance(v, list) else [v]
        from ..frontends.spec import _check_activation

        for item in items:  # checked as a spec checks them: names, w0/alpha ranges, formulas
            try:
                _check_activation(item)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"--activations: {str(exc)[:200]}") from None
        return items
    return [parse_activation(a) for a in text.split(",") if a.strip()]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``ct`` subcommand (handler in ``func``)."""
    d = CTSettings()
    p = subparsers.add_parser(
        "ct",
        help="sparse-view CT: interpolate a Shepp-Logan sinogram with AutoInt, compare with FBP",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "--factors", type=int_list(1, 16384), default=list(DEFAULT_FACTORS), help="angle subsampling, e.g. 4,8,16"
    )
    p.add_argument(
        "--activations",
        type=_act_list,
        default=list(DEFAULT_ACTIVATIONS),
        help="comma-separated, e.g. sine,swish,relu,softplus",
    )
    p.add_argument("--size", type=int_range(8, 4096), default=d.size, help="phantom size (sinogram rows)")
    p.add_argument("--angles", type=int_range(2, 16384), default=d.n_angles, help="full number of angles over 180 deg")
    p.add_argument("--steps", type=int_range(0, 10**9), default=d.steps)
    p.add_argument("--lr", type=positive_float, default=d.lr)
    p.add_argument("--sine-lr", type=positive_float, default=d.sine_lr, help="learning rate for the sine activation")
    p.add_argument("--batch", type=int_range(1, 2**24), default=d.batch_lines, help="lines per step")
    p.add_argument("--samples", type=int_range(1, 4096), default=d.n_samples, help="t samples per line (grad mode)")
    p.add_argument("--hidden", type=int_list(1, 65536, what="widths"), default=list(d.hidden))
    for var, raw in (("rho", "none"), ("theta", "none"), ("t", "raw t")):
        p.add_argument(
            f"--{var}-frequencies",
            type=int_range(0, 32),
            default=getattr(d, f"{var}_frequencies"),
            help=f"posenc octaves of {var} (0: {raw})",
        )
    p.add_argument(
        "--consistency",
        type=float_range(0, 1e3),
        default=d.consistency,
        help="weight of the line-consistency regulariser (grad mode; 0: off)",
    )
    p.add_argument(
        "--consistency-points",
        type=int_range(1, 2**20),
        default=d.consistency_points,
        help="random points per step of the regulariser (two angles each)",
    )
    p.add_argument("--w0", type=float_range(0, 1e4, open_lo=True), default=d.sine_w0, help="w0 of the sine activation")
    p.add_argument(
        "--mode",
        choices=["grad", "integral"],
        default=d.mode,
        help="grad: Monte-Carlo line integrals of the grad net (default); integral: closed form",
    )
    p.add_argument("--no-mirror", action="store_true", help="do not use the (-rho, theta+180) symmetry")
    p.add_argument("--seed", type=SEED, default=d.seed)
    p.add_argument("--device", default=d.device, help="cpu | cuda | cuda:N | auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the grad network")
    p.add_argument(
        "--threads",
        type=int_range(0, 4096),
        default=d.threads,
        help="CPU threads while training (default 1; 0: leave torch's setting)",
    )
    p.add_argument("--dtype", choices=["float32", "float64"], default=d.dtype)
    p.add_argument("--out", default=None, help="directory for CSV/markdown/JSON/PNG")
    p.add_argument(
        "--spec", default=None, help="train this spec (inputs rho, theta, t; integrate [t]) instead of --activations"
    )
    p.add_argument(
        "--mc-seeds", type=int_range(0, 10**6), default=d.mc_seeds, help="seeds of the Monte Carlo study (0: skip it)"
    )
    p.add_argument("--mc-samples", type=int_range(2, 10**6), default=d.mc_samples, help="samples of f per line")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    if (status := check_device(args.device)) is not None:  # fail early, in one line
        return status
    too_big = [f for f in args.factors if f > args.angles]
    if too_big:
        print(f"autoint-compile: error: --factors {too_big[0]} is larger than --angles {args.angles}", file=sys.stderr)
        return 2
    if args.consistency > 0 and args.mode != "grad":
        print(
            "autoint-compile: error: --consistency needs --mode grad (it regularises the grad network)", file=sys.stderr
        )
        return 2
    s = CTSettings(
        size=args.size,
        n_angles=args.angles,
        hidden=tuple(args.hidden),
        rho_frequencies=args.rho_frequencies,
        theta_frequencies=args.theta_frequencies,
        t_frequencies=args.t_frequencies,
        consistency=args.consistency,
        consistency_points=args.consistency_points,
        sine_w0=args.w0,
        n_samples=args.samples,
        mode=args.mode,
        mirror=not args.no_mirror,
        dtype=args.dtype,
        steps=args.steps,
        lr=args.lr,
        sine_lr=args.sine_lr,
        batch_lines=args.batch,
        seed=args.seed,
        device=args.device,
        compile=args.compile,
        threads=args.threads or None,
        progress=False if args.no_progress else None,
        mc_seeds=args.mc_seeds,
        mc_samples=args.mc_samples,
    )
    run_sweep(args.activations, args.factors, s, out=args.out, spec=args.spec)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return standalone_main("ct", add_parser, argv, "autoint_compiler.apps.ct")


if __name__ == "__main__":
    sys.exit(main())
