"""runtime/estimate.py: the network as a Monte Carlo control variate (issue 20).

Truths are exact (products of exponentials, whose box and repeated integrals have closed forms), the
networks deliberately bad (untrained, seeded), so the closed form alone is far off and only the
Monte Carlo correction can make the estimate unbiased. Statistical checks use a fixed seed and bounds
a bug would break: the mean error over 2,000 independent rows within 4 of its standard errors of 0,
and the 95% interval's coverage within 4 binomial standard deviations of 95%.
"""

from __future__ import annotations

import math

import pytest
import torch

import autoint_compiler as ac
from autoint_compiler.runtime import antiderivative as AD
from autoint_compiler.runtime import estimate as E

ROWS = 2000
COVERAGE_TOL = 4 * math.sqrt(0.95 * 0.05 / ROWS)  # 0.0195


def _net(orders, hidden=(8, 8), seed=0, dtype="float64"):
    names = list(dict.fromkeys([*orders, "c"]))
    spec = {
        "name": "est",
        "inputs": {n: 1 for n in names},
        "integrate": orders,
        "output": 2,
        "dtype": dtype,
        "seed": seed,
        "mlp": {"hidden": list(hidden), "activation": "tanh"},
    }
    return ac.compile(spec)


RATES = (1.3, -0.7, 0.9)  # f = (1 + c) · Π exp(rᵢ tᵢ), and a second output 2 − f


def _f(net):
    cols = net.integration_columns
    c = net.in_features - 1

    def f(p):
        v = (1 + p[:, c]) * torch.exp(sum(r * p[:, k] for r, k in zip(RATES, cols)))
        return torch.stack([v, 2 - v], 1)

    return f


def _exact(net, a, b, x, repeated):
    """Box (or Cauchy repeated) integral of _f, per variable ∫ exp(r s) (b−s)^{p−1}/(p−1)! ds."""
    orders = list(net.orders.values()) if repeated else [1] * a.shape[1]
    v = 1 + x[:, -1]
    vol = torch.ones_like(v)
    for i, (r, p) in enumerate(zip(RATES, orders)):
        h = b[:, i] - a[:, i]
        taylor = sum((r * h) ** j / math.factorial(j) for j in range(p))
        v = v * (torch.exp(r * b[:, i]) - taylor * torch.exp(r * a[:, i])) / r**p
        vol = vol * h**p / math.factorial(p)
    return torch.stack([v, 2 * vol - v], 1)


def _rows(net, n_rows, same=True, seed=3):
    g = torch.Generator().manual_seed(seed)
    n, D = len(net.orders), net.in_features
    k = 1 if same else n_rows
    x = torch.rand(k, D, generator=g, dtype=torch.float64).expand(n_rows, D).clone()
    a = (torch.rand(k, n, generator=g, dtype=torch.float64) - 1).expand(n_rows, n).clone()
    b = a + 0.5 + torch.rand(k, n, generator=g, dtype=torch.float64).expand(n_rows, n)
    return a, b, x


def _check_unbiased(est, truth):
    err = (est.value - truth).detach()
    se = err.std(0) / math.sqrt(err.shape[0])
    assert (err.mean(0).abs() < 4 * se).all(), (err.mean(0), se)
    low, high = est.ci(0.95)
    covered = ((low <= truth) & (truth <= high)).double().mean(0)
    assert ((covered - 0.95).abs() < COVERAGE_TOL).all(), covered
    # the test has power: the closed form alone (a bad network) misses by far more than the bound
    bias = (est.closed_form.detach() - truth).mean(0).abs()
    assert (bias > 50 * se).all(), (bias, se)
    return err, covered


@pytest.mark.parametrize("sampler", E.SAMPLERS)
@pytest.mark.parametrize("orders", [["t"], ["t", "y"], {"t": 2}])
def test_box_estimate_is_unbiased_and_its_interval_covers(orders, sampler):
    net = _net(orders)
    a, b, x = _rows(net, ROWS)
    gen = torch.Generator().manual_seed(7)
    est = net.integrate(a, b, x, f=_f(net), samples=16, sampler=sampler, generator=gen)
    _check_unbiased(est, _exact(net, a, b, x, repeated=False))
    assert est.value.shape == est.stderr.shape == (ROWS, 2)
    assert est.sampler == sampler and est.samples == 16


@pytest.mark.parametrize("sampler", E.SAMPLERS)
@pytest.mark.parametrize("orders", [{"t": 2}, {"t": 3}, {"t": 2, "y": 1}])
def test_repeated_estimate_with_the_cauchy_kernel_is_unbiased(orders, sampler):
    net = _net(orders)
    a, b, x = _rows(net, ROWS)
    gen = torch.Generator().manual_seed(11)
    est = AD.repeated_integral(net, a, b, x, f=_f(net), samples=16, sampler=sampler, generator=gen)
    truth = _exact(net, a, b, x, repeated=True)
    _check_unbiased(est, truth)
    # the closed form is the repeated integral of the grad network, and the box weight would be biased
    assert torch.allclose(est.closed_form, AD.repeated_integral(net, a, b, x))
    wrong = net.integrate(a, b, x, f=_f(net), samples=16, sampler=sampler, generator=gen)
    err = (wrong.value - truth).detach()
    assert (err.mean(0).abs() > 10 * err.std(0) / math.sqrt(ROWS)).all()


def test_independent_rows_and_a_fitted_network_reduce_the_variance():
    """A network equal to f up to a small smooth residual: the corrected estimate's stderr is far
    below plain Monte Carlo's with the same samples, and the realised errors agree with it."""
    net = _net(["t", "y"])
    a, b, x = _rows(net, 400, same=False)
    grad = net.grad

    def f(p):
        return grad(p).detach() + 1e-3 * torch.sin(3 * p[:, :1] + p[:, 1:2])

    gen = torch.Generator().manual_seed(0)
    est = net.integrate(a, b, x, f=f, samples=32, generator=gen)
    plain = E.monte_carlo(f, a, b, x, net.integration_columns, 32, generator=gen)
    truth = est.closed_form.detach() + 1e-3 * _sin_box(a, b)
    assert ((est.value - truth).abs() < 5 * est.stderr).float().mean() > 0.99
    vrf = float((plain.value - truth).pow(2).sum() / (est.value.detach() - truth).pow(2).sum())
    # expected: Σ vol² Var f / Σ vol² Var(f − g), each variance from 4,096 fresh points per box
    u = torch.rand(400, 4096, 2, dtype=torch.float64, generator=gen)
    pts = x[:, None, :].repeat(1, 4096, 1)
    pts[..., :2] = a[:, None] + (b - a)[:, None] * u
    fv = f(pts.reshape(-1, 3)).reshape(400, 4096, 2)
    vol2 = (b - a).prod(1)[:, None] ** 2
    expected = float(
        (vol2 * fv.var(1)).sum() / (vol2 * (fv - grad(pts.reshape(-1, 3)).detach().reshape(fv.shape)).var(1)).sum()
    )
    assert expected > 10 and 0.75 < vrf / expected < 1.33, (vrf, expected)


def _sin_box(a, b):
    """∫∫ sin(3t + y) dt dy over [a, b] (both outputs)."""

    def F(t, y):
        return -torch.sin(3 * t + y) / 3

    v = F(b[:, 0], b[:, 1]) - F(a[:, 0], b[:, 1]) - F(b[:, 0], a[:, 1]) + F(a[:, 0], a[:, 1])
    return v[:, None]


def test_samplers_beat_uniform_on_a_smooth_residual():
    net = _net(["t"])
    a, b, x = _rows(net, 500)
    truth = _exact(net, a, b, x, repeated=False)
    rmse = {}
    for s in E.SAMPLERS:
        est = net.integrate(a, b, x, f=_f(net), samples=64, sampler=s, generator=torch.Generator().manual_seed(1))
        rmse[s] = float((est.value - truth).pow(2).mean().sqrt())
    assert rmse["stratified"] < rmse["uniform"] / 5 and rmse["sobol"] < rmse["uniform"] / 3, rmse


def test_unit_points_are_uniform_and_grouped():
    g = torch.Generator().manual_seed(0)
    u = E.unit_points("stratified", 3, 200, 2, g)
    assert u.shape == (3, 8, 25, 2)  # 8 replicates of 5x5 cells, one point each
    for r in range(8):
        cells = {tuple(c) for c in (u[0, r] * 5).floor().tolist()}
        assert len(cells) == 25
    u = E.unit_points("sobol", 4000, 64, 3, g)
    assert u.shape == (4000, 8, 8, 3)
    assert ((u >= 0) & (u < 1)).all()
    assert (u.mean((0, 1, 2)) - 0.5).abs().max() < 0.01  # every point uniform: the mean is 1/2
    assert (u.var((0, 1, 2)) - 1 / 12).abs().max() < 0.005
    u = E.unit_points("sobol", 1, 64, 1, g)
    for r in range(8):  # within a replicate the 8 points are balanced: one per eighth of [0, 1)
        assert sorted((u[0, r, :, 0] * 8).floor().tolist()) == list(range(8))
    assert E.unit_points("uniform", 2, 5, 3, g).shape == (2, 5, 1, 3)


def test_t_quantile_matches_tables():
    # Student t 0.975 quantiles (dof 1, 2, 3, 7, 30) and the normal
    table = [(1, 12.7062), (2, 4.3027), (3, 3.1824), (7, 2.3646), (30, 2.0423), (math.inf, 1.95996)]
    for dof, q in table:
        assert abs(E.t_quantile(0.975, dof) - q) < 5e-3 * q, dof
    qs = E.t_quantile(0.975, torch.tensor([d for d, _ in table] + [2.5, 0.3]))
    assert torch.allclose(qs[:-2], torch.tensor([q for _, q in table], dtype=torch.float64), rtol=5e-3)
    assert 3.1824 < qs[-2] < 4.3027 and qs[-1] == qs[0]  # 2.5 between 2 and 3; below 1 counts as 1


def test_closed_form_stays_a_tensor_and_float32_works():
    net = _net(["t"], dtype="float32")
    a, b, x = (v.float() for v in _rows(net, 5))
    closed = net.integrate(a, b, x)
    assert isinstance(closed, torch.Tensor)
    est = net.integrate(a, b, x, f=_f(net), samples=8, sampler="sobol")
    assert est.value.dtype == torch.float32 and torch.isfinite(est.stderr).all()
    assert torch.equal(est.closed_form, closed)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samples": 8}, "samples given without f"),
        ({"f": "sin", "samples": 8}, "f must be a callable"),
        ({"f": lambda p: p[:, :2]}, "f needs samples=N"),
        ({"f": lambda p: p[:, :2], "samples": 1}, "samples must be an integer >= 2"),
        ({"f": lambda p: p[:, :2], "samples": 8.0}, "samples must be an integer >= 2"),
        ({"f": lambda p: p[:, :2], "samples": 8, "sampler": "halton"}, "sampler must be one of"),
        ({"f": lambda p: p[:, :1], "samples": 8}, r"f returned shape \(\d+, 1\) for \d+ points, expected \[\d+, 2\]"),
        ({"f": lambda p: p[:, 0], "samples": 8}, "f returned shape"),
        ({"f": lambda p: p[:, :2] / 0, "samples": 8}, "non-finite"),
        ({"f": lambda p: p[:, :2].tolist(), "samples": 8}, "must return a tensor"),
        ({"f": lambda p: p[:, :2], "samples": 8, "generator": 3}, "generator must be a torch.Generator"),
        ({"f": lambda p: p[:, :2], "samples": E.MAX_SAMPLES + 1}, "samples must be at most"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, match):
    net = _net(["t"])
    a, b, x = _rows(net, 3)
    with pytest.raises(ValueError, match=match) as info:
        net.integrate(a, b, x, **kwargs)
    assert "\n" not in str(info.value)


def test_bad_ci_level_and_bounds():
    net = _net(["t"])
    a, b, x = _rows(net, 3)
    est = net.integrate(a, b, x, f=_f(net), samples=4)
    with pytest.raises(ValueError, match="level must be a number in"):
        est.ci(95)
    with pytest.raises(ValueError, match="upper must have the shape"):
        net.integrate(a, b[:2], x, f=_f(net), samples=4)
    for bad in (float("nan"), float("inf")):
        b2 = b.clone()
        b2[1, 0] = bad
        with pytest.raises(ValueError, match="needs finite bounds; row 1"):
            net.integrate(a, b2, x, f=_f(net), samples=4)


def test_too_many_points_in_one_call_is_refused_before_drawing(monkeypatch):
    net = _net(["t"])
    a, b, x = _rows(net, 3)
    monkeypatch.setattr(E, "MAX_TOTAL_POINTS", 3 * 8 - 1)
    with pytest.raises(ValueError, match="3 rows x 8 samples is more than 23 evaluations of f in one call; split"):
        net.integrate(a, b, x, f=_f(net), samples=8)
    assert net.integrate(a[:2], b[:2], x[:2], f=_f(net), samples=8).value.shape == (2, 2)


def test_float64_points_on_a_float32_network():
    """Points in float64 (f keeps them) on a float32 network: cast for the network as the closed form
    is, same estimate as with float32 points up to float32 rounding."""
    net = _net(["t"], dtype="float32")
    a, b, x = _rows(net, 5)
    f = _f(net)
    got = net.integrate(a.double(), b.double(), x.double(), f=f, samples=16, generator=torch.Generator().manual_seed(1))
    want = net.integrate(a.float(), b.float(), x.float(), f=f, samples=16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(got.value.double(), want.value.double(), atol=1e-4)
