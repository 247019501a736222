"""The closed forms of antiderivative.py on real compiled networks of higher order (issue 11): the
box integral, the repeated integral and the B-spline convolution equal converged Gauss-Legendre
quadrature of the grad network in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import autoint_compiler as ac
from autoint_compiler.runtime import antiderivative as AD


def _net(orders, seed=0):
    names = list(dict.fromkeys([*orders, "c"]))
    spec = {"name": "hoi", "inputs": {n: 1 for n in names}, "integrate": orders, "output": 1,
            "dtype": "float64", "seed": seed, "mlp": {"hidden": [12, 12], "activation": "tanh"}}
    return ac.compile(spec)


def _gl(n=48):
    t, w = np.polynomial.legendre.leggauss(n)
    return torch.tensor(t), torch.tensor(w)


def _quad_box(net, lower, upper, x, n=48):
    """∫ over the box of net.grad by tensor-product Gauss-Legendre (float64)."""
    t, w = _gl(n)
    cols = net.integration_columns
    grids = torch.meshgrid(*[t] * len(cols), indexing="ij")
    weights = torch.ones(grids[0].shape, dtype=torch.float64)
    for g, _ in zip(grids, cols):
        weights = weights * w[torch.searchsorted(t, g.contiguous())]
    out = []
    for i in range(x.shape[0]):
        pts = x[i].repeat(weights.numel(), 1)
        jac = 1.0
        for k, (g, c) in enumerate(zip(grids, cols)):
            a, b = lower[i, k], upper[i, k]
            pts[:, c] = (a + b) / 2 + (b - a) / 2 * g.reshape(-1)
            jac = jac * (b - a) / 2
        out.append((net.grad(pts).detach()[:, 0] * weights.reshape(-1)).sum() * jac)
    return torch.stack(out)[:, None]


@pytest.mark.parametrize("orders", [{"t": 2}, {"t": 3}, {"t": 2, "y": 1}, {"t": 2, "y": 2}])
def test_box_integral_of_higher_order_net_equals_quadrature(orders):
    net = _net(orders)
    n = len(orders)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, net.in_features, generator=g, dtype=torch.float64)
    lower = torch.rand(3, n, generator=g, dtype=torch.float64) - 1
    upper = lower + 0.5 + torch.rand(3, n, generator=g, dtype=torch.float64)
    got = net.integrate(lower, upper, x).detach()
    ref = _quad_box(net, lower, upper, x)
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-11), (got, ref)


def test_repeated_integral_of_order_two_equals_nested_quadrature():
    net = _net({"t": 2})
    x = torch.tensor([[0.0, 0.3]], dtype=torch.float64)
    a, b = torch.tensor([[-0.4]], dtype=torch.float64), torch.tensor([[0.9]], dtype=torch.float64)
    got = AD.repeated_integral(net, a, b, x).detach()
    # ∫_a^b ∫_a^s f(u) du ds = ∫_a^b (b - u) f(u) du  (Cauchy), by Gauss-Legendre
    t, w = _gl(64)
    u = (a + b) / 2 + (b - a) / 2 * t[:, None]
    pts = x.repeat(u.shape[0], 1)
    pts[:, 0:1] = u
    ref = ((b - u)[:, 0] * net.grad(pts).detach()[:, 0] * w).sum() * (b - a) / 2
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_bspline_convolution_of_a_real_net_matches_the_kernel():
    """Degree-1 B-spline (hat) convolution of f = ∂²Φ/∂t² from Φ at 3 points equals quadrature of
    f against the hat kernel."""
    net = _net({"t": 2})
    x = torch.tensor([[0.2, -0.1]], dtype=torch.float64)
    h = 0.3
    got = AD.convolve_bspline(net, x, degree=1, width=h).detach()
    t, w = _gl(64)
    # hat kernel of knot spacing h, support [-h, h], unit integral: (h - |s|) / h²; split at 0
    total = 0.0
    for lo, hi in ((-h, 0.0), (0.0, h)):
        s = (lo + hi) / 2 + (hi - lo) / 2 * t
        pts = x.repeat(s.shape[0], 1)
        pts[:, 0] = x[0, 0] - s
        total = total + ((h - s.abs()) / h**2 * net.grad(pts).detach()[:, 0] * w).sum() * (hi - lo) / 2
    assert torch.allclose(got, total.reshape(1, 1), rtol=1e-8, atol=1e-10)
