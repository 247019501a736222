"""Integrals you can trust: the fitted network as a Monte Carlo control variate (issue 20).

A closed-form AutoInt integral integrates the grad network g = ∂^kΦ, not the signal f it was fitted to,
and says nothing about how far apart the two are. Adding a Monte Carlo estimate of the integral of the
residual f − g over the same region makes it an unbiased estimate of ∫ f, with a standard error
(neural control variates, Müller et al. 2020; Li et al. 2024):

    ∫_box w·f  =  ∫_box w·g  +  ∫_box w·(f − g)
               ≈  closed form  +  vol · mean_j w(t_j)·(f − g)(t_j),        t_j uniform in the box

Two weights w, per integration variable i with bounds aᵢ, bᵢ and hᵢ = bᵢ − aᵢ (vol = Πᵢ hᵢ):

* ``"box"`` (w = 1, :meth:`CompiledNetwork.integrate`);
* ``"repeated"`` (Cauchy's kernel w = Πᵢ (bᵢ − sᵢ)^{kᵢ−1}/(kᵢ−1)!, the kᵢ-fold repeated integral of
  :func:`~autoint_compiler.runtime.antiderivative.repeated_integral`). Importance sampling from the
  kernel, s = b − h·u^{1/k}, would make the weight constant but put a u^{1/k} kink into the
  integrand, which costs stratification and quasi-random points their accuracy and the small-N
  intervals their coverage.

Points are t = a + h·u for u in the unit cube. Samplers (u per row, independent across rows):

* ``"uniform"``: i.i.d.; stderr = sample std / √N;
* ``"stratified"``: R = 8 independent jittered stratifications (the cube cut into m^d equal cells,
  the same number of uniform points in each, N // R points in all);
* ``"sobol"``: R = 8 independent randomised Sobol point sets (torch's scrambled SobolEngine with a
  random digital shift and sub-grid jitter per row, so each point is exactly uniform: unbiased),
  N // R points each.

With R replicates the stderr is the spread of the R replicate means, and the interval uses Student t
with R − 1 degrees of freedom (replicate means are close to normal, the pooled within-cell variance of
one stratification is not a trustworthy error bar at small N: its intervals under- or over-cover).

The estimate is unbiased for any network; it helps when g ≈ f: its variance is that of plain Monte
Carlo with f − g in place of f (the variance-reduction factor is Var f / Var(f − g)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .antiderivative import _base_x, _bounds, _Net

__all__ = ["SAMPLERS", "IntegralEstimate", "corrected", "monte_carlo", "t_quantile", "unit_points"]

SAMPLERS = ("uniform", "stratified", "sobol")
#: independent stratified / randomised Sobol point sets per row (the stderr's degrees of freedom are
#: one fewer)
REPLICATES = 8
#: points handed to f and the grad network in one call (rows are processed in chunks of this size)
MAX_POINTS_PER_CALL = 1 << 20
#: evaluations of f per row, and per call in all (the unit points of every row are drawn at once:
#: split larger requests into batches of rows)
MAX_SAMPLES = 1 << 24
MAX_TOTAL_POINTS = 1 << 27
_SOBOL_BITS = 30  # torch's SobolEngine MAXBIT: its points are multiples of 2^-30


# ---------------------------------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------------------------------
def t_quantile(p: float, dof: float | torch.Tensor) -> float | torch.Tensor:
    """The p-quantile of Student's t with ``dof`` degrees of freedom (a number or a tensor of them;
    normal for dof = inf).

    Exact for dof = 1 and 2; for dof ≥ 3 the Cornish–Fisher expansion around the normal quantile
    (Abramowitz & Stegun 26.7.5), within 1e-3 of the exact value at the usual levels; between 2 and 3
    interpolated linearly in 1/dof. Degrees of freedom below 1 count as 1."""
    z = math.sqrt(2.0) * torch.special.erfinv(torch.tensor(2.0 * p - 1.0, dtype=torch.float64)).item()
    v = torch.as_tensor(dof, dtype=torch.float64).clamp(min=1.0)

    def cornish_fisher(v):
        return (
            z
            + (z**3 + z) / (4 * v)
            + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
        )

    one = math.tan(math.pi * (p - 0.5))
    two = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    three = float(cornish_fisher(torch.tensor(3.0)))
    low = torch.where(v < 2, one + (two - one) * (1 - 1 / v) / 0.5, two + (three - two) * (1 / 2 - 1 / v) * 6)
    q = torch.where(v >= 3, cornish_fisher(v.clamp(min=3.0)), low)
    q = torch.where(torch.isinf(v), torch.full_like(v, z), q)
    return float(q) if not isinstance(dof, torch.Tensor) else q


@dataclass(frozen=True)
class IntegralEstimate:
    """An unbiased estimate of an integral with its standard error.

    ``value``, ``stderr``, ``closed_form``: [N_rows, out]; ``samples``: evaluations of f per row
    actually used (the stratified and Sobol samplers use a multiple of their cell / replicate count);
    ``dof``: degrees of freedom of ``stderr`` (for :meth:`ci`)."""

    value: torch.Tensor
    stderr: torch.Tensor
    closed_form: torch.Tensor
    samples: int
    sampler: str
    dof: float | torch.Tensor

    def ci(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-sided ``level`` confidence interval ``(low, high)``, value ± t·stderr."""
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
            raise ValueError(f"ci: level must be a number in (0, 1), e.g. 0.95; got {level!r}")
        q = t_quantile(0.5 + level / 2.0, self.dof)
        return self.value - q * self.stderr, self.value + q * self.stderr


# ---------------------------------------------------------------------------------------------------
# points of the unit cube, grouped for the variance estimate
# ---------------------------------------------------------------------------------------------------
def _int_root(n: int, d: int) -> int:
    m = max(1, int(round(n ** (1.0 / d))))
    while m**d > n:
        m -= 1
    while (m + 1) ** d <= n:
        m += 1
    return m


def unit_points(
    sampler: str, rows: int, samples: int, dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Points of [0, 1)^dim for each row, float64 on the generator's device: ``[rows, G, n, dim]``, G
    independent replicates of n points each (uniform: G = ``samples``, n = 1). G·n ≤ ``samples``."""
    dev = generator.device if generator is not None else torch.device("cpu")
    kw = {"generator": generator, "device": dev, "dtype": torch.float64}
    if sampler == "uniform":
        return torch.rand(rows, samples, 1, dim, **kw)
    reps = max(2, min(REPLICATES, samples // 2))
    per = samples // reps
    if sampler == "stratified":  # per replicate: m^d cells, the same number of jittered points in each
        m = _int_root(per, dim)
        cells, k = m**dim, per // m**dim
        idx = torch.arange(cells, device=dev).repeat_interleave(k)
        digits = torch.stack([(idx // m**j) % m for j in range(dim)], -1).to(torch.float64)  # [cells*k, dim]
        return (digits + torch.rand(rows, reps, cells * k, dim, **kw)) / m
    if sampler == "sobol":
        scale = float(1 << _SOBOL_BITS)
        base = []
        for _ in range(reps):
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=dev).item())
            engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
            base.append((engine.draw(per, dtype=torch.float64) * scale).to(torch.int64))
        ints = torch.stack(base).to(dev)  # [reps, per, dim], integers < 2^30
        shift = torch.randint(0, 1 << _SOBOL_BITS, (rows, reps, 1, dim), generator=generator, device=dev)
        jitter = torch.rand(rows, reps, per, dim, **kw)
        return ((ints[None] ^ shift).to(torch.float64) + jitter) / scale
    raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")


# ---------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------
def check_request(f: Any, samples: Any, sampler: Any, generator: Any = None) -> str:
    """Validate the Monte Carlo keywords of ``integrate``; returns the sampler name."""
    if f is None:
        given = [k for k, v in (("samples", samples), ("sampler", sampler), ("generator", generator)) if v is not None]
        raise ValueError(
            f"integrate: {', '.join(given)} given without f (the function to integrate, [M, D] -> [M, out])"
        )
    if not callable(f):
        raise ValueError(f"integrate: f must be a callable [M, D] -> [M, out], got {type(f).__name__}")
    if samples is None:
        raise ValueError("integrate: f needs samples=N, the number of evaluations of f per row (N >= 2)")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"integrate: samples must be an integer >= 2 (two give a standard error), got {samples!r}")
    if samples > MAX_SAMPLES:
        raise ValueError(f"integrate: samples must be at most {MAX_SAMPLES:,} per row, got {samples:,}")
    sampler = "uniform" if sampler is None else sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"integrate: sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"integrate: generator must be a torch.Generator, got {type(generator).__name__}")
    return sampler


def _check_finite(lower: torch.Tensor, upper: torch.Tensor) -> None:
    bad = ~(torch.isfinite(lower).all(1) & torch.isfinite(upper).all(1))
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"integrate: a Monte Carlo estimate needs finite bounds; row {i} has lower "
            f"{lower[i].tolist()}, upper {upper[i].tolist()}"
        )


def _call(fn: Callable, name: str, points: torch.Tensor, out: int | None) -> torch.Tensor:
    v = fn(points)
    M = points.shape[0]
    if not isinstance(v, torch.Tensor):
        raise ValueError(f"integrate: {name} must return a tensor [M, out], got {type(v).__name__}")
    want = f"[{M}, {out}]" if out is not None else f"[{M}, out]"
    if v.dim() != 2 or v.shape[0] != M or (out is not None and v.shape[1] != out):
        raise ValueError(f"integrate: {name} returned shape {tuple(v.shape)} for {M} points, expected {want}")
    if not v.is_floating_point():
        raise ValueError(f"integrate: {name} must return a floating-point tensor, got {v.dtype}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"integrate: {name} returned non-finite values (inf or nan)")
    return v


# ---------------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------------
def _mean_over_box(
    fn: Callable[[torch.Tensor], torch.Tensor],
    lower: torch.Tensor,
    upper: torch.Tensor,
    x: torch.Tensor,
    columns: list[int],
    powers: list[int],
    samples: int,
    sampler: str,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Monte Carlo of ∫ Πᵢ (bᵢ−tᵢ)^{pᵢ−1}/(pᵢ−1)! · fn(t) over the box, per row (float64), t uniform.
    Returns (estimate, stderr, samples used per row, dof)."""
    rows, n = lower.shape
    if rows * samples > MAX_TOTAL_POINTS:
        raise ValueError(
            f"integrate: {rows:,} rows x {samples:,} samples is more than {MAX_TOTAL_POINTS:,} evaluations of f "
            "in one call; split the rows into batches"
        )
    u = unit_points(sampler, rows, samples, n, generator)
    G, per = u.shape[1], u.shape[2]
    u = u.to(lower.device)
    lo, hi = lower.double(), upper.double()
    h = (hi - lo)[:, None, None, :]
    t = lo[:, None, None, :] + h * u  # [rows, G, per, n]
    weight = h.prod(-1)  # the box volume, times the Cauchy kernel where p > 1
    for i, p in enumerate(powers):
        if p > 1:
            weight = weight * (hi[:, None, None, i] - t[..., i]) ** (p - 1) / math.factorial(p - 1)
    step = max(1, MAX_POINTS_PER_CALL // (G * per))
    parts = []
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        pts = x[r0:r1, None, :].expand(r1 - r0, G * per, x.shape[1]).clone()
        pts[:, :, columns] = t[r0:r1].reshape(r1 - r0, G * per, n).to(x.dtype)
        v = fn(pts.reshape(-1, x.shape[1])).double().reshape(r1 - r0, G, per, -1)
        parts.append((v * weight[r0:r1, ..., None]).mean(2))
    means = torch.cat(parts)  # [rows, G, out]
    est = means.mean(1)
    var = means.var(1, unbiased=True) / G  # G independent replicate means
    dof = float(G - 1)
    return est, var.sqrt(), G * per, dof


def monte_carlo(
    f: Callable[[torch.Tensor], torch.Tensor],
    lower: torch.Tensor,
    upper: torch.Tensor,
    x: torch.Tensor,
    columns: list[int],
    samples: int,
    sampler: str | None = None,
    *,
    powers: list[int] | None = None,
    generator: torch.Generator | None = None,
) -> IntegralEstimate:
    """Plain Monte Carlo of ∫ f over the box (no network): the baseline the control variate is
    measured against. ``columns``: the columns of ``x`` ([N, D]) that vary; ``powers``: Cauchy kernel
    exponents per variable (default 1: the box integral)."""
    sampler = check_request(f, samples, sampler, generator)
    n = len(columns)
    lower = _bounds("lower", lower, n)
    upper = _bounds("upper", upper, n, lower)
    _check_finite(lower, upper)
    powers = powers or [1] * n
    est, err, used, dof = _mean_over_box(
        lambda pts: _call(f, "f", pts, None), lower, upper, x, list(columns), powers, samples, sampler, generator
    )
    return IntegralEstimate(est, err, torch.zeros_like(est), used, sampler, dof)


def corrected(
    net: Any,
    closed_form: Callable[[], torch.Tensor],
    lower: torch.Tensor,
    upper: torch.Tensor,
    x: torch.Tensor | None,
    *,
    f: Any,
    samples: Any,
    sampler: Any = None,
    generator: torch.Generator | None = None,
    weights: str = "box",
) -> IntegralEstimate:
    """``closed_form()`` (∫ w·g, g = ``net.grad``) plus the Monte Carlo mean of w·(f − g) over the box.

    ``weights``: ``"box"`` (w = 1, ``net.integrate``) or ``"repeated"`` (Cauchy's kernel for the
    ``net.orders``-fold repeated integral, ``antiderivative.repeated_integral``). Arguments are checked
    before anything is evaluated."""
    sampler = check_request(f, samples, sampler, generator)
    N = _Net(net)
    lower = _bounds("lower", lower, N.n)
    upper = _bounds("upper", upper, N.n, lower)
    _check_finite(lower, upper)
    x = _base_x(N, x, lower.shape[0], lower)
    if weights not in ("box", "repeated"):
        raise ValueError(f"weights must be 'box' or 'repeated', got {weights!r}")
    powers = [1] * N.n if weights == "box" else list(N.orders)
    out = int(net.out_features)
    grad = N.network(N.orders)

    param = next(iter(grad.parameters()), None) if isinstance(grad, torch.nn.Module) else None

    def residual(pts: torch.Tensor) -> torch.Tensor:
        fv = _call(f, "f", pts, out)
        # f sees the points in x's dtype; the network gets them in its own (as the closed form does)
        g = grad(pts if param is None else pts.to(param.dtype))
        return fv.double() - g.double().to(fv.device)

    closed = closed_form()
    est, err, used, dof = _mean_over_box(residual, lower, upper, x, N.columns, powers, samples, sampler, generator)
    dtype = torch.promote_types(closed.dtype, torch.float32)
    value = (closed.double() + est).to(dtype)
    return IntegralEstimate(value, err.to(dtype), closed, used, sampler, dof)
