"""Definite integrals: AutoInt's closed form (2 evaluations of Φ) vs quadrature of the grad network.

Reference: the grad network g = ∂Φ/∂t is by construction the exact derivative of Φ, so the exact
integral of g over [a, b] is Φ(b) − Φ(a).  Quadrature errors are measured against that closed form,
both evaluated in float64 (a float64 deep copy of the compiled net with the same weights), so the
error is the quadrature's own discretisation error, not float32 rounding.  The float32 error of each
method (float32 result vs the float64 closed form) is reported too, as is the closed form's own float32
rounding error.  Timings are float32, torch.no_grad(), one batch of ``n_problems`` integrals.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import timing
from .nets import Bench, double_copy, make_inputs

RULES = ("midpoint", "trapezoid", "gauss-legendre")
DEFAULT_NS = (16, 32, 64, 128, 256, 512)


def rule_nodes(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes u in [0, 1] and weights w (sum 1): ∫_a^b f ≈ (b − a) Σ w_j f(a + (b − a) u_j)."""
    if rule == "midpoint":
        return (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)
    if rule == "trapezoid":
        u = np.linspace(0.0, 1.0, n)
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return u, w
    if rule == "gauss-legendre":
        xg, wg = np.polynomial.legendre.leggauss(n)
        return (xg + 1) / 2, wg / 2
    raise KeyError(rule)


def quad(grad, x, lower, upper, col, u, w):
    """Σ_j w_j g(x with t = a + (b−a) u_j) (b − a) for every row; x [M, D], lower/upper [M, 1]."""
    m, n = x.shape[0], u.shape[0]
    span = upper - lower  # [M, 1]
    pts = x.unsqueeze(1).expand(m, n, x.shape[1]).clone()  # [M, n, D]
    pts[:, :, col] = lower + span * u  # [M, n]
    vals = grad(pts.reshape(m * n, -1)).reshape(m, n, -1)  # [M, n, out]
    return torch.einsum("mno,n->mo", vals, w) * span


def closed_form(net, phi, x, lower, upper, col):
    if hasattr(net, "integrate"):
        return net.integrate(lower, upper, x)
    xb, xa = x.clone(), x.clone()
    xb[:, col], xa[:, col] = upper[:, 0], lower[:, 0]
    return phi(xb) - phi(xa)


def run(b: Bench, *, n_problems: int = 1024, ns=DEFAULT_NS, rules=RULES, warmup: int = 2, repeats: int = 7,
        device: str = "cpu", seed: int = 7, timed=None) -> list[dict]:
    """``timed(fns) -> (stats, other_cpu_cores)`` (default: plain time_interleaved)."""
    col = b.col
    x = make_inputs(n_problems, b.in_features, device=device, seed=seed)
    ab = make_inputs(n_problems, 2, device=device, seed=seed + 1).sort(dim=1).values  # a < b in [-1, 1]
    lower, upper = ab[:, :1].contiguous(), ab[:, 1:].contiguous()
    net64, why = double_copy(b)
    prec_note = "errors in float64" if net64 is not None else f"float64 copy failed ({why}): errors in float32"
    with torch.no_grad():
        if net64 is not None:
            net64.integral.to(device)
            net64.grad.to(device)
            exact = closed_form(net64, net64.integral, x.double(), lower.double(), upper.double(), col)
        else:
            exact = closed_form(b.net, b.phi, x, lower, upper, col).double()
        scale = exact.abs().mean().item()

    def err(v):
        d = (v.double() - exact).abs()
        return d.mean().item() / scale, d.max().item() / scale

    cases = {"closed form: Phi(b) - Phi(a) (net.integrate)": ("closed", 2, None, None)}
    for rule in rules:
        for n in ns:
            u, w = rule_nodes(rule, n)
            cases[f"{rule} n={n}"] = (rule, n, torch.tensor(u, dtype=torch.float32, device=device),
                                      torch.tensor(w, dtype=torch.float32, device=device))
    fns = {}
    for name, (rule, _n, u, w) in cases.items():
        if rule == "closed":
            fns[name] = lambda: closed_form(b.net, b.phi, x, lower, upper, col)
        else:
            fns[name] = (lambda u=u, w=w: quad(b.grad, x, lower, upper, col, u, w))
    with torch.no_grad():
        if timed is None:
            stats, other = timing.time_interleaved(fns, warmup=warmup, repeats=repeats, device=device), math.nan
        else:
            stats, other = timed(fns)
        rows = []
        for name, (rule, n, _u, _w) in cases.items():
            row = {"method": name, "rule": rule, "n_samples": n, "n_problems": n_problems,
                   "grad_evals": n_problems * (2 if rule == "closed" else n), "precision_note": prec_note,
                   "other_cpu_cores": other}
            row.update(stats[name].row())
            row["status"] = stats[name].error or "ok"
            v32 = fns[name]()
            row["rel_err_f32_mean"], row["rel_err_f32_max"] = err(v32)
            if rule == "closed":
                row["rel_err_mean"], row["rel_err_max"] = 0.0, 0.0  # the reference itself
            elif net64 is not None:
                u64, w64 = rule_nodes(rule, n)
                v64 = quad(net64.grad.to(device), x.double(), lower.double(), upper.double(), col,
                           torch.tensor(u64, dtype=torch.float64, device=device),
                           torch.tensor(w64, dtype=torch.float64, device=device))
                row["rel_err_mean"], row["rel_err_max"] = err(v64)
            else:
                row["rel_err_mean"], row["rel_err_max"] = row["rel_err_f32_mean"], row["rel_err_f32_max"]
            for k in ("rel_err_mean", "rel_err_max", "rel_err_f32_mean", "rel_err_f32_max"):
                if not math.isfinite(row[k]):
                    row["status"] = "non-finite error"
            rows.append(row)
    return rows
