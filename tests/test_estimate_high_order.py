"""Repeated integration up to total order 9 (issue 20): ∂⁹Φ/∂x³∂y³∂z³ compiles and equals nested
``torch.func.jvp`` of Φ in float64; the order limits are one shared check with clear errors in both
frontends; the control-variate estimate of a 3-D order-3 repeated integral is unbiased."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import autoint_compiler as ac
from autoint_compiler.core.differentiate import MAX_INTEGRATION_VARIABLES, MAX_TOTAL_ORDER, orders_problem
from autoint_compiler.runtime import antiderivative as AD


def _spec(orders, hidden=(5, 5), encoding=True):
    mlp = {"hidden": list(hidden), "activation": "tanh"}  # torch has no nested forward AD of silu
    if encoding:
        mlp["encoding"] = {"inputs": ["x", "y"], "frequencies": 1, "include_input": True}
    return {
        "name": "o9",
        "inputs": {"x": 1, "y": 1, "z": 1, "c": 1},
        "integrate": orders,
        "output": 1,
        "dtype": "float64",
        "seed": 0,
        "mlp": mlp,
    }


@pytest.fixture(scope="module")
def net9():
    return ac.compile(_spec({"x": 3, "y": 3, "z": 3}))


def _nested_jvp(fn, x, columns):
    """∂^{len(columns)} fn / ∂x[:, c₁]…∂x[:, c_m] per row, by nesting torch.func.jvp (rows independent)."""
    if not columns:
        return fn(x)
    e = torch.zeros_like(x)
    e[:, columns[0]] = 1.0
    inner = lambda p: _nested_jvp(fn, p, columns[1:])  # noqa: E731
    return torch.func.jvp(inner, (x,), (e,))[1]


def test_order_9_grad_network_equals_nested_jvp(net9):
    assert net9.orders == {"x": 3, "y": 3, "z": 3}
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        got = net9.grad(x)
        ref = _nested_jvp(net9.integral, x, [0, 0, 0, 1, 1, 1, 2, 2, 2])
        lower = _nested_jvp(net9.integral, x, [0, 1, 1, 2, 2, 2])  # an antiderivative network: ∂⁶Φ/∂x∂y²∂z³
        lower_net = net9.derivative({"x": 1, "y": 2, "z": 3})(x)
    assert ref.abs().max() > 1e-3  # not a trivially zero derivative
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-12), (got - ref).abs().max()
    assert torch.allclose(lower_net, lower, rtol=1e-9, atol=1e-12)


def test_order_9_repeated_integral_estimate_is_unbiased(net9):
    """The 3-fold repeated integral in x, y and z of f = (1 + c)·exp(x − y/2 + z/3) (exact: per variable
    (e^{rb} − e^{ra}(1 + rh + (rh)²/2)) / r³), corrected from a bad network: mean error within 4 standard
    errors over 1,000 rows, 95% coverage within 4 binomial standard deviations."""
    rates, n = (1.0, -0.5, 1 / 3), 1000
    g = torch.Generator().manual_seed(5)
    a = (torch.rand(1, 3, generator=g, dtype=torch.float64) - 1).expand(n, 3)
    b = a + 1.0
    x = torch.rand(1, 4, generator=g, dtype=torch.float64).expand(n, 4).clone()

    def f(p):
        return ((1 + p[:, 3]) * torch.exp(sum(r * p[:, i] for i, r in enumerate(rates))))[:, None]

    exact = 1 + x[:, 3]
    for i, r in enumerate(rates):
        h = b[:, i] - a[:, i]
        exact = exact * (torch.exp(r * b[:, i]) - torch.exp(r * a[:, i]) * (1 + r * h + (r * h) ** 2 / 2)) / r**3
    est = AD.repeated_integral(net9, a, b, x, f=f, samples=16, sampler="sobol", generator=g)
    err = (est.value - exact[:, None]).detach()
    se = err.std() / math.sqrt(n)
    assert err.mean().abs() < 4 * se
    assert (est.closed_form - exact[:, None]).abs().mean() > 8 * se  # the closed form alone is far off
    low, high = est.ci()
    cover = ((low <= exact[:, None]) & (exact[:, None] <= high)).double().mean()
    assert abs(cover - 0.95) < 4 * math.sqrt(0.95 * 0.05 / n), cover


def test_one_shared_order_check():
    assert MAX_TOTAL_ORDER >= 9 and MAX_INTEGRATION_VARIABLES == 6
    assert orders_problem({"x": 3, "y": 3, "z": 3}) is None
    assert orders_problem({"x": 4, "y": 3, "z": 3}) == "total order 10 is more than 9"
    assert orders_problem({v: 1 for v in "abcdefg"}) == "7 integration variables is more than 6"
    with pytest.raises(ac.SpecError, match="integrate: total order 10 is more than 9"):
        ac.load_spec(_spec({"x": 4, "y": 3, "z": 3}))
    with pytest.raises(ac.SpecError, match="integrate: total order 10 is more than 9"):
        ac.load_spec(_spec(["x"] * 4 + ["y"] * 3 + ["z"] * 3))
    spec = {
        "name": "v7",
        "inputs": {v: 1 for v in "abcdefg"},
        "integrate": list("abcdefg"),
        "output": 1,
        "mlp": {"hidden": [4], "activation": "tanh"},
    }
    with pytest.raises(ac.SpecError, match="7 integration variables is more than 6"):
        ac.load_spec(spec)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    with pytest.raises(ac.CompileError, match="compile_module: integrate: total order 10 is more than 9"):
        ac.compile_module(module, 3, {0: 4, 1: 3, 2: 3})
