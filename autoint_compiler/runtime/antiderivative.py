"""Closed-form integrals and convolutions of a fitted grad network (issue 11), at runtime in torch.

A compiled network ``net`` holds an integral network Φ and a grad network f = ∂^|k|Φ/∂t₁^k₁…∂tₙ^kₙ
(orders ``net.orders``, e.g. ``{"x": 2, "y": 2}``) trained to fit a signal. Every lower-order
derivative network ∂^jΦ (0 ≤ j ≤ k componentwise) is an antiderivative of f of order k − j in each
variable, and the helpers below turn a few evaluations of those networks into

* :func:`integrate` — ∫ f over a box (the order-(k−1) network at the 2ⁿ corners, inclusion–exclusion);
* :func:`repeated_integral` — the kᵢ-fold repeated integral ∫ₐᵇ∫ₐ^{s₁}…∫ₐ^{s_{k−1}} f in every variable
  (Cauchy's formula = Taylor's remainder: Φ(b) − Σ_{j<k} (b−a)ʲ/j! ∂ʲΦ(a));
* :func:`convolve_box` — f convolved with a normalised box kernel;
* :func:`convolve_bspline` — f convolved with a normalised B-spline kernel of degree d ≤ k−1: the
  (d+1)-th central difference of the (d+1)-th antiderivative, binomial weights at d+2 points.

Several variables are tensor products of the one-variable formulas. The derivations are in
``docs/ANTIDERIVATIVES.md``. The interface the helpers need from ``net``:

* ``net.orders``: dict variable → order, in spec order; ``net.integration_columns``: the column of each
  variable in x, same order; ``net.in_features``: D;
* ``net.derivative(orders)``: a module x [N, D] → [N, out] computing ∂^{orders}Φ (orders a dict,
  componentwise ≤ ``net.orders``; all zero → Φ).

A compiled network without ``orders``/``derivative`` (first-order mixed partials, before issue 11) is
accepted too: Φ is ``net.integral`` and f is ``net.grad``; helpers needing any other network say so.
All evaluations of one network are batched into one call.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "convolve_box",
    "convolve_bspline",
    "integrate",
    "repeated_integral",
]


# ---------------------------------------------------------------------------------------------------
# the network interface
# ---------------------------------------------------------------------------------------------------
class _Net:
    """``net`` seen through the interface above; networks fetched once per helper call."""

    def __init__(self, net: Any):
        self.net = net
        if hasattr(net, "orders") and hasattr(net, "derivative"):
            orders = dict(net.orders)
            self._derivative = net.derivative
        elif hasattr(net, "integral") and hasattr(net, "integration_columns"):
            program = getattr(net, "program", None)
            orders = dict(program.orders) if program is not None else None
            if orders is None:
                raise ValueError("net has integration_columns but neither .orders nor .program.orders")
            self._derivative = self._first_order
        else:
            raise ValueError(
                "net must provide .orders, .integration_columns, .in_features and .derivative(orders) "
                f"(a compiled network); got {type(net).__name__}"
            )
        if not orders:
            raise ValueError("net has no integration variables")
        for v, k in orders.items():
            if not isinstance(k, int) or k < 1:
                raise ValueError(f"net.orders[{v!r}] must be a positive integer, got {k!r}")
        self.names = list(orders)
        self.orders = [orders[v] for v in self.names]
        self.columns = [int(c) for c in net.integration_columns]
        self.in_features = int(net.in_features)
        if len(self.columns) != len(self.names):
            raise ValueError(
                f"net.integration_columns has {len(self.columns)} entries for {len(self.names)} variables {self.names}"
            )
        if any(not 0 <= c < self.in_features for c in self.columns) or len(set(self.columns)) != len(self.columns):
            raise ValueError(
                f"net.integration_columns {self.columns} must be distinct columns of 0..{self.in_features - 1}"
            )
        self._cache: dict[tuple[int, ...], Any] = {}

    @property
    def n(self) -> int:
        return len(self.names)

    def _first_order(self, orders: dict[str, int]):
        ks = [orders[v] for v in self.names]
        if all(k == 0 for k in ks):
            return self.net.integral
        if ks == self.orders:
            return self.net.grad
        raise ValueError(
            f"this network provides only Φ and its grad network; ∂^{orders}Φ needs net.derivative (issue 11)"
        )

    def network(self, ks: Sequence[int]):
        ks = tuple(int(k) for k in ks)
        if any(not 0 <= k <= K for k, K in zip(ks, self.orders)):
            raise ValueError(f"derivative orders {dict(zip(self.names, ks))} exceed net.orders {self.describe()}")
        if ks not in self._cache:
            self._cache[ks] = self._derivative(dict(zip(self.names, ks)))
        return self._cache[ks]

    def describe(self) -> dict[str, int]:
        return dict(zip(self.names, self.orders))


# ---------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------
def _bounds(name: str, t: Any, n: int, ref: torch.Tensor | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a tensor [N, {n}], got {type(t).__name__}")
    if t.dim() != 2 or t.shape[1] != n:
        raise ValueError(f"{name} must be [N, {n}] (one column per integration variable), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if ref is not None and t.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of the other bound {tuple(ref.shape)}, got {tuple(t.shape)}")
    return t


def _base_x(net: _Net, x: Any, n_rows: int, like: torch.Tensor) -> torch.Tensor:
    if x is None:
        return like.new_zeros(n_rows, net.in_features)
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape != (n_rows, net.in_features):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be [{n_rows}, {net.in_features}] (the network's inputs), got {shape}")
    return x


def _per_var(name: str, value: Any, net: _Net, n_rows: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar, [n_vars] or [N, n_vars] positive quantity, as [N, n_vars]."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(n_rows, net.n)
    elif t.dim() == 1 and t.shape[0] == net.n:
        t = t.unsqueeze(0).expand(n_rows, net.n)
    elif not (t.dim() == 2 and t.shape == (n_rows, net.n)):
        raise ValueError(f"{name} must be a scalar, [{net.n}] or [{n_rows}, {net.n}], got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{name} must be finite and > 0")
    return t


# ---------------------------------------------------------------------------------------------------
# the engine: a signed sum of derivative networks at points
# ---------------------------------------------------------------------------------------------------
# One factor per variable: a list of (order of the network in this variable, coefficient [N], coordinate [N]).
_Factor = list[tuple[int, torch.Tensor, torch.Tensor]]


def _tensor_sum(net: _Net, x: torch.Tensor, factors: list[_Factor]) -> torch.Tensor:
    """Σ over the product of the per-variable term lists of Π coefficients · ∂^{orders}Φ(point),
    one batched call per distinct network."""
    groups: dict[tuple[int, ...], list[tuple[torch.Tensor, list[torch.Tensor]]]] = {}
    for combo in itertools.product(*factors):
        ks = tuple(term[0] for term in combo)
        coef = combo[0][1]
        for term in combo[1:]:
            coef = coef * term[1]
        groups.setdefault(ks, []).append((coef, [term[2] for term in combo]))
    total = None
    for ks, terms in groups.items():
        points = []
        for _, coords in terms:
            p = x.clone()
            for col, c in zip(net.columns, coords):
                p[:, col] = c
            points.append(p)
        values = net.network(ks)(torch.cat(points, 0))
        if values.dim() != 2 or values.shape[0] != len(terms) * x.shape[0]:
            raise ValueError(f"the network of orders {ks} returned {tuple(values.shape)}, expected [M, out]")
        values = values.view(len(terms), x.shape[0], -1)
        coefs = torch.stack([c for c, _ in terms]).to(values.dtype).unsqueeze(-1)  # [T, N, 1]
        part = (values * coefs).sum(0)
        total = part if total is None else total + part
    return total


# ---------------------------------------------------------------------------------------------------
# the helpers
# ---------------------------------------------------------------------------------------------------
def integrate(net: Any, lower: torch.Tensor, upper: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """∫ over the box [lower, upper] of f = ∂^kΦ (``net.derivative(net.orders)``), any orders.

    ``lower``, ``upper``: [N, n_vars] in the order of ``net.orders``; ``x`` ([N, D], default zeros)
    supplies the other inputs. The order-(k−1) network at the 2ⁿ corners with inclusion–exclusion
    signs: ∫ f = Σ_{c ∈ {a,b}ⁿ} (−1)^{#a in c} ∂^{k−1}Φ(c). Returns [N, out].
    """
    N = _Net(net)
    lower = _bounds("lower", lower, N.n)
    upper = _bounds("upper", upper, N.n, lower)
    x = _base_x(N, x, lower.shape[0], lower)
    one = torch.ones(lower.shape[0], dtype=lower.dtype, device=lower.device)
    factors = [[(k - 1, one, upper[:, i]), (k - 1, -one, lower[:, i])] for i, k in enumerate(N.orders)]
    return _tensor_sum(N, x, factors)


def repeated_integral(
    net: Any,
    a: torch.Tensor,
    b: torch.Tensor,
    x: torch.Tensor | None = None,
    *,
    f: Any = None,
    samples: int | None = None,
    sampler: str | None = None,
    generator: torch.Generator | None = None,
) -> Any:
    """The kᵢ-fold repeated integral of f = ∂^kΦ in every variable i (kᵢ = ``net.orders``):

        ∫_{aᵢ}^{bᵢ} ds₁ ∫_{aᵢ}^{s₁} ds₂ … ∫_{aᵢ}^{s_{kᵢ−1}} ds_{kᵢ} f   =   ∫_{aᵢ}^{bᵢ} (bᵢ−s)^{kᵢ−1}/(kᵢ−1)! f(s) ds

    (Cauchy), which in closed form is, per variable, R[Φ] = Φ(b) − Σ_{j=0}^{k−1} (b−a)ʲ/j! ∂ʲΦ(a)
    (Taylor's theorem with integral remainder), applied as a tensor product over the variables:
    Π(kᵢ+1) evaluations of the networks of order 0..kᵢ−1. Order 1 everywhere is :func:`integrate`.
    ``a``, ``b``: [N, n_vars]; ``x`` ([N, D], default zeros) the other inputs. Returns [N, out].

    With ``f`` and ``samples`` (as ``net.integrate``): an ``IntegralEstimate`` of the repeated integral
    of f, the closed form plus Monte Carlo of the Cauchy-weighted residual (b − s)^{k−1}/(k−1)!·(f − grad)
    over the box (``runtime/estimate.py``).
    """
    if f is not None or samples is not None or sampler is not None or generator is not None:
        from .estimate import corrected

        return corrected(net, lambda: repeated_integral(net, a, b, x), a, b, x, f=f, samples=samples,
                         sampler=sampler, generator=generator, weights="repeated")
    N = _Net(net)
    a = _bounds("a", a, N.n)
    b = _bounds("b", b, N.n, a)
    x = _base_x(N, x, a.shape[0], a)
    factors = []
    for i, k in enumerate(N.orders):
        h = b[:, i] - a[:, i]
        terms = [(0, torch.ones_like(h), b[:, i])]
        terms += [(j, -(h**j) / math.factorial(j), a[:, i]) for j in range(k)]
        factors.append(terms)
    return _tensor_sum(N, x, factors)


def convolve_box(net: Any, x: torch.Tensor, width: Any) -> torch.Tensor:
    """(f ∗ box)(x): f convolved with the normalised box kernel Πᵢ 1[|uᵢ| ≤ wᵢ/2] / wᵢ, i.e. the mean of f
    over the box of side ``width`` centred at x: ∫_{x−w/2}^{x+w/2} f / Πw (:func:`integrate`).

    ``x``: [N, D], the evaluation points (integration coordinates taken from x); ``width``: a scalar, one
    per variable [n_vars] or per row [N, n_vars], > 0. Returns [N, out].
    """
    N = _Net(net)
    x = _x_points(N, x)
    w = _per_var("width", width, N, x.shape[0], x)
    centre = x[:, N.columns]
    return integrate(net, centre - w / 2, centre + w / 2, x) / w.prod(1, keepdim=True).to(x.dtype)


def convolve_bspline(net: Any, x: torch.Tensor, degree: Any = None, width: Any = 1.0) -> torch.Tensor:
    """(f ∗ β)(x): f convolved with the normalised, centred B-spline kernel β = ⊗ᵢ β_{dᵢ}(·; hᵢ) of degree dᵢ
    with knot spacing hᵢ = ``width`` (support (dᵢ+1)hᵢ, unit integral; β₀ is :func:`convolve_box`'s box).

    β_d(·; h) is the (d+1)-fold convolution of the box of width h, so with m = d+1 and F_m the m-th
    antiderivative of f (the network of order kᵢ − m; Φ itself when m = kᵢ):

        (f ∗ β_d)(x) = h^{−m} Σ_{j=0}^{m} (−1)ʲ C(m, j) F_m(x + (m/2 − j) h)

    (m+1 points, the m-th central difference; any polynomial of degree < m in F_m cancels). Tensor
    product over the variables: Π(dᵢ+2) evaluations. ``degree``: None (dᵢ = kᵢ − 1, the highest the
    network allows), an int for all variables, or one per variable; 0 ≤ dᵢ ≤ kᵢ − 1. ``x``: [N, D];
    ``width``: scalar, [n_vars] or [N, n_vars], > 0. Returns [N, out].
    """
    N = _Net(net)
    x = _x_points(N, x)
    h = _per_var("width", width, N, x.shape[0], x)
    if degree is None:
        degrees = [k - 1 for k in N.orders]
    elif isinstance(degree, numbers.Integral) and not isinstance(degree, bool):
        degrees = [degree] * N.n
    elif isinstance(degree, Mapping):
        unknown = set(degree) - set(N.names)
        if unknown:
            raise ValueError(f"degree names unknown variables {sorted(unknown)}; the variables are {N.names}")
        degrees = [degree.get(v, k - 1) for v, k in zip(N.names, N.orders)]
    elif isinstance(degree, Sequence) and len(degree) == N.n:
        degrees = list(degree)
    else:
        raise ValueError(f"degree must be None, an int or one per variable ({N.n}), got {degree!r}")
    degrees = [int(d) if isinstance(d, numbers.Integral) and not isinstance(d, bool) else d for d in degrees]
    for v, d, k in zip(N.names, degrees, N.orders):
        if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= k - 1:
            raise ValueError(
                f"B-spline degree for {v!r} must be an integer in 0..{k - 1} (the network's order {k} in {v!r} "
                f"minus 1), got {d!r}"
            )
    factors = []
    for i, (d, k) in enumerate(zip(degrees, N.orders)):
        m = d + 1
        hi, ci = h[:, i], x[:, N.columns[i]]
        scale = hi ** (-m)
        factors.append([(k - m, (-1) ** j * math.comb(m, j) * scale, ci + (m / 2 - j) * hi) for j in range(m + 1)])
    return _tensor_sum(N, x, factors)


def _x_points(net: _Net, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != net.in_features:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be [N, {net.in_features}] (the network's inputs), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    return x
