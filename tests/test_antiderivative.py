"""autoint_compiler.runtime.antiderivative against converged quadrature of the signal f = ∂^kΦ (float64).

The module is tested independently of the compiler: ``FakeNet.derivative(orders)`` returns a closure of
an analytic Φ(x) = g(y) · Πᵢ φᵢ(tᵢ) (two outputs, each a product of sin / exp / polynomial factors with
exact derivatives of any order; y an input that is not integrated). References are tensor-product
Gauss–Legendre rules in float64, with the kernel (Cauchy's (b−s)^{k−1}/(k−1)!, a scipy B-spline) in the
weights and one rule per knot interval where the kernel has kinks; in 1-D the repeated integral is also
checked against genuinely nested quadrature (which validates the Cauchy-kernel reference).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.interpolate import BSpline

from autoint_compiler.runtime import antiderivative as A


@pytest.fixture(scope="module", autouse=True)
def _float64():
    """float64 by default in this module only (restored afterwards: other test modules share the process)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# ---------------------------------------------------------------------------------------------------
# an analytic Φ with exact derivatives of every order
# ---------------------------------------------------------------------------------------------------
class Sin:
    def __init__(self, a, b):
        self.a, self.b = a, b

    def d(self, j, t):
        return self.a**j * torch.sin(self.a * t + self.b + j * math.pi / 2)


class Exp:
    def __init__(self, a):
        self.a = a

    def d(self, j, t):
        return self.a**j * torch.exp(self.a * t)


class Poly:
    def __init__(self, coefs):  # c0 + c1 t + ...
        self.c = list(coefs)

    def d(self, j, t):
        c = self.c
        for _ in range(j):
            c = [i * c[i] for i in range(1, len(c))] or [0.0]
        return sum(ci * t**i for i, ci in enumerate(c)) + 0 * t


class FakeNet:
    """The interface antiderivative needs; columns: the integration variables interleaved with y."""

    def __init__(self, orders: dict[str, int], factors=None, y_col: int | None = 1):
        self.orders = dict(orders)
        n = len(orders)
        self.in_features = n + (1 if y_col is not None else 0)
        cols = list(range(self.in_features))
        self.y_col = y_col
        if y_col is not None:
            cols.remove(y_col)
        self.integration_columns = cols[:n]
        default = [
            [Sin(1.3, 0.4), Exp(0.7)],
            [Exp(-0.9), Poly([0.5, -1.0, 0.3, 0.2, -0.1])],
            [Poly([1.0, 0.2, -0.5, 0.25]), Sin(2.1, -0.3)],
        ]
        self.factors = factors or default[:n]  # per variable: (factor of output 0, factor of output 1)
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def derivative(self, orders: dict[str, int]):
        assert list(orders) == list(self.orders)
        ks = tuple(orders[v] for v in self.orders)
        assert all(0 <= k <= K for k, K in zip(ks, self.orders.values()))

        def phi(x):
            self.calls.append((ks, x.shape[0]))
            outs = []
            for o in range(2):
                v = 1.0 + x[:, self.y_col] ** 2 if (self.y_col is not None and o == 0) else torch.ones_like(x[:, 0])
                for i, col in enumerate(self.integration_columns):
                    v = v * self.factors[i][o].d(ks[i], x[:, col])
                outs.append(v)
            return torch.stack(outs, 1)

        return phi

    def f(self):
        return self.derivative(self.orders)


# ---------------------------------------------------------------------------------------------------
# reference quadrature: per row, a tensor product of 1-D rules (nodes, weights incl. the kernel)
# ---------------------------------------------------------------------------------------------------
GL_N = 40


def gl(a, b, n=GL_N):
    xi, w = np.polynomial.legendre.leggauss(n)
    return a + (b - a) * (xi + 1) / 2, w * (b - a) / 2


def rule_box(a, b):
    return gl(a, b)


def rule_cauchy(a, b, k):
    s, w = gl(a, b)
    return s, w * (b - s) ** (k - 1) / math.factorial(k - 1)


def rule_bspline(c, h, d):
    m = d + 1
    knots = c + (np.arange(m + 1) - m / 2) * h
    basis = BSpline.basis_element(knots, extrapolate=False)
    s, w = zip(*(gl(knots[i], knots[i + 1], 16) for i in range(m)))  # the kernel is a polynomial per interval
    s, w = np.concatenate(s), np.concatenate(w)
    return s, w * np.nan_to_num(basis(s)) / h  # basis integrates to h: normalise


def quad(net: FakeNet, x: torch.Tensor, rules) -> torch.Tensor:
    """rules[row][i] = (nodes, weights) of variable i; returns [N, out]."""
    f = net.f()
    out = []
    for r, row_rules in enumerate(rules):
        grids = np.meshgrid(*[s for s, _ in row_rules], indexing="ij")
        wts = np.ones_like(grids[0])
        for i, (_, w) in enumerate(row_rules):
            shape = [1] * len(row_rules)
            shape[i] = -1
            wts = wts * w.reshape(shape)
        pts = x[r].repeat(grids[0].size, 1).clone()
        for col, g in zip(net.integration_columns, grids):
            pts[:, col] = torch.from_numpy(g.ravel())
        out.append((f(pts) * torch.from_numpy(wts.ravel())[:, None]).sum(0))
    return torch.stack(out)


def nested_repeated_1d(net: FakeNet, x: torch.Tensor, a: float, b: float, k: int, n: int = 24) -> torch.Tensor:
    """∫ₐᵇ ds₁ ∫ₐ^{s₁} ds₂ … f(s_k), by genuinely nested Gauss–Legendre (1-D nets, one row)."""
    xi, w = np.polynomial.legendre.leggauss(n)

    def inner(u, depth):  # u: array of upper limits; returns ∫_a^u (depth-fold) of f
        s = a + (u[..., None] - a) * (xi + 1) / 2
        ww = w * (u[..., None] - a) / 2
        if depth == 1:
            pts = x.repeat(s.size, 1).clone()
            pts[:, net.integration_columns[0]] = torch.from_numpy(s.ravel())
            vals = net.f()(pts).numpy().reshape(*s.shape, -1)
        else:
            vals = inner(s, depth - 1)
        return (vals * ww[..., None]).sum(-2)

    return torch.from_numpy(inner(np.array(b), k))[None]


def rows(n_rows, n_vars, seed, lo=-1.5, hi=1.5):
    g = torch.Generator().manual_seed(seed)
    a = lo + (hi - lo) * torch.rand(n_rows, n_vars, generator=g)
    b = lo + (hi - lo) * torch.rand(n_rows, n_vars, generator=g)
    return a, b


def make_x(net, n_rows, seed, pts=None):
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.rand(n_rows, net.in_features, generator=g) * 2 - 1
    if pts is not None:
        x[:, net.integration_columns] = pts
    return x


TOL = dict(rtol=1e-9, atol=1e-10)
ORDERS = [{"t": 1}, {"t": 2}, {"t": 3}, {"t": 1, "u": 1}, {"t": 2, "u": 1}, {"t": 2, "u": 3}, {"t": 3, "u": 3}]


# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orders", ORDERS, ids=str)
def test_integrate_box(orders):
    net = FakeNet(orders)
    a, b = rows(4, len(orders), 0)
    x = make_x(net, 4, 0)
    got = A.integrate(net, a, b, x)
    calls = list(net.calls)
    ref = quad(net, x, [[rule_box(float(a[r, i]), float(b[r, i])) for i in range(len(orders))] for r in range(4)])
    torch.testing.assert_close(got, ref, **TOL)
    assert calls == [(tuple(k - 1 for k in orders.values()), 4 * 2 ** len(orders))]  # one batched call


@pytest.mark.parametrize("orders", ORDERS, ids=str)
def test_repeated_integral(orders):
    net = FakeNet(orders)
    a, b = rows(4, len(orders), 1)
    x = make_x(net, 4, 1)
    got = A.repeated_integral(net, a, b, x)
    calls = list(net.calls)
    ks = list(orders.values())
    ref = quad(net, x, [[rule_cauchy(float(a[r, i]), float(b[r, i]), ks[i]) for i in range(len(ks))] for r in range(4)])
    torch.testing.assert_close(got, ref, **TOL)
    assert len(calls) == math.prod(ks)  # one call per distinct network (orders 0..k-1 per variable)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_repeated_integral_nested_1d(k):
    """Genuinely nested quadrature: also checks the Cauchy-kernel reference used above."""
    net = FakeNet({"t": k})
    a, b = torch.tensor([[-0.7]]), torch.tensor([[1.4]])
    x = make_x(net, 1, 2)
    ref = nested_repeated_1d(net, x, -0.7, 1.4, k)
    torch.testing.assert_close(A.repeated_integral(net, a, b, x), ref, **TOL)
    cauchy = quad(net, x, [[rule_cauchy(-0.7, 1.4, k)]])
    torch.testing.assert_close(cauchy, ref, **TOL)


def test_order_one_everywhere_repeated_equals_box():
    net = FakeNet({"t": 1, "u": 1})
    a, b = rows(5, 2, 3)
    x = make_x(net, 5, 3)
    torch.testing.assert_close(A.repeated_integral(net, a, b, x), A.integrate(net, a, b, x), **TOL)


def test_reversed_and_empty_bounds():
    net = FakeNet({"t": 2, "u": 1})
    a, b = rows(3, 2, 4)
    x = make_x(net, 3, 4)
    a2, b2 = a.clone(), b.clone()
    a2[:, 0], b2[:, 0] = b[:, 0], a[:, 0]  # one variable reversed: the sign flips; both: it does not
    torch.testing.assert_close(A.integrate(net, a2, b2, x), -A.integrate(net, a, b, x), **TOL)
    torch.testing.assert_close(A.integrate(net, b, a, x), A.integrate(net, a, b, x), **TOL)
    torch.testing.assert_close(A.repeated_integral(net, a, a, x), torch.zeros(3, 2), **TOL)


@pytest.mark.parametrize("orders", ORDERS, ids=str)
def test_convolve_box(orders):
    net = FakeNet(orders)
    x = make_x(net, 4, 5)
    w = torch.tensor([0.3, 0.8, 1.1][: len(orders)])
    got = A.convolve_box(net, x, w)
    cols = net.integration_columns
    ref = (
        quad(
            net,
            x,
            [
                [rule_box(float(x[r, c] - w[i] / 2), float(x[r, c] + w[i] / 2)) for i, c in enumerate(cols)]
                for r in range(4)
            ],
        )
        / w.prod()
    )
    torch.testing.assert_close(got, ref, **TOL)


@pytest.mark.parametrize("orders", ORDERS, ids=str)
def test_convolve_bspline_highest_degree(orders):
    net = FakeNet(orders)
    x = make_x(net, 3, 6)
    h = torch.rand(3, len(orders), generator=torch.Generator().manual_seed(6)) * 0.9 + 0.2  # per row
    got = A.convolve_bspline(net, x, None, h)
    calls = list(net.calls)
    ks, cols = list(orders.values()), net.integration_columns
    ref = quad(
        net,
        x,
        [[rule_bspline(float(x[r, c]), float(h[r, i]), ks[i] - 1) for i, c in enumerate(cols)] for r in range(3)],
    )
    torch.testing.assert_close(got, ref, **TOL)
    # the highest degree reads Φ itself, at k+1 points per variable
    assert calls == [((0,) * len(ks), 3 * math.prod(k + 1 for k in ks))]


def test_convolve_bspline_lower_degree_and_box():
    net = FakeNet({"t": 3, "u": 2})
    x = make_x(net, 3, 7)
    ref = quad(net, x, [[rule_bspline(float(x[r, 0]), 0.5, 1), rule_bspline(float(x[r, 2]), 0.7, 0)] for r in range(3)])
    for degree in ([1, 0], {"t": 1, "u": 0}):
        torch.testing.assert_close(A.convolve_bspline(net, x, degree, torch.tensor([0.5, 0.7])), ref, **TOL)
    torch.testing.assert_close(A.convolve_bspline(net, x, 0, 0.4), A.convolve_box(net, x, 0.4), **TOL)


def test_no_other_inputs_and_default_x():
    net = FakeNet({"t": 2, "u": 2}, y_col=None)
    a, b = rows(3, 2, 8)
    got = A.integrate(net, a, b)
    ref = quad(net, torch.zeros(3, 2), [[rule_box(float(a[r, i]), float(b[r, i])) for i in range(2)] for r in range(3)])
    torch.testing.assert_close(got, ref, **TOL)


def test_float32_and_autograd_through_parameters():
    """Works in float32; gradients flow back from the result into what the networks read."""
    scale = torch.tensor(1.5, requires_grad=True)

    class Scaled(FakeNet):
        def derivative(self, orders):
            phi = super().derivative(orders)
            return lambda x: scale * phi(x.double()).to(x.dtype)

    net = Scaled({"t": 2})
    a, b = torch.tensor([[0.0]], dtype=torch.float32), torch.tensor([[1.0]], dtype=torch.float32)
    out = A.repeated_integral(net, a, b)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)


# ---------------------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------------------
def test_errors():
    net = FakeNet({"t": 2, "u": 1})
    a, b = rows(3, 2, 9)
    x = make_x(net, 3, 9)
    with pytest.raises(ValueError, match=r"lower must be \[N, 2\]"):
        A.integrate(net, a[:, :1], b, x)
    with pytest.raises(ValueError, match="shape of the other bound"):
        A.integrate(net, a, b[:2], x)
    with pytest.raises(ValueError, match=r"x must be \[3, 3\]"):
        A.integrate(net, a, b, x[:, :2])
    with pytest.raises(ValueError, match="floating-point"):
        A.repeated_integral(net, a.long(), b.long(), x)
    with pytest.raises(ValueError, match="width must be finite and > 0"):
        A.convolve_box(net, x, torch.tensor([0.5, -1.0]))
    with pytest.raises(ValueError, match=r"width must be a scalar, \[2\] or \[3, 2\]"):
        A.convolve_box(net, x, torch.ones(3))
    with pytest.raises(ValueError, match=r"degree for 'u' must be an integer in 0..0"):
        A.convolve_bspline(net, x, 1, 0.5)
    with pytest.raises(ValueError, match="degree names unknown variables"):
        A.convolve_bspline(net, x, {"v": 0}, 0.5)
    with pytest.raises(ValueError, match="degree must be None, an int or one per variable"):
        A.convolve_bspline(net, x, [0], 0.5)
    with pytest.raises(ValueError, match="must provide .orders"):
        A.integrate(object(), a, b, x)
    bad = FakeNet({"t": 0})
    with pytest.raises(ValueError, match="positive integer"):
        A.integrate(bad, a[:, :1], b[:, :1])


# ---------------------------------------------------------------------------------------------------
# hypothesis: random variables, orders, bounds, widths
# ---------------------------------------------------------------------------------------------------
FACTORS = st.one_of(
    st.builds(Sin, st.floats(-2.0, 2.0), st.floats(-3.0, 3.0)),
    st.builds(Exp, st.floats(-1.0, 1.0)),
    st.builds(Poly, st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=6)),
)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 3))
    ks = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n).filter(lambda k: n < 3 or sum(k) <= 5))
    factors = [(draw(FACTORS), draw(FACTORS)) for _ in range(n)]
    bounds = draw(st.lists(st.tuples(st.floats(-2.0, 2.0), st.floats(-2.0, 2.0)), min_size=2 * n, max_size=2 * n))
    widths = draw(st.lists(st.floats(0.05, 1.5), min_size=n, max_size=n))
    degrees = [draw(st.integers(0, k - 1)) for k in ks]
    return n, ks, factors, bounds, widths, degrees


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_hypothesis_against_quadrature(case):
    n, ks, factors, bounds, widths, degrees = case
    names = ["t", "u", "v"][:n]
    net = FakeNet(dict(zip(names, ks)), factors=factors)
    a = torch.tensor([[bounds[i][0] for i in range(n)], [bounds[n + i][0] for i in range(n)]])
    b = torch.tensor([[bounds[i][1] for i in range(n)], [bounds[n + i][1] for i in range(n)]])
    x = make_x(net, 2, 10)
    tol = dict(rtol=1e-8, atol=1e-9)
    got = A.integrate(net, a, b, x)
    ref = quad(net, x, [[gl(float(a[r, i]), float(b[r, i]), 24) for i in range(n)] for r in range(2)])
    torch.testing.assert_close(got, ref, **tol)
    got = A.repeated_integral(net, a, b, x)
    ref = quad(net, x, [[rule_cauchy(float(a[r, i]), float(b[r, i]), ks[i]) for i in range(n)] for r in range(2)])
    torch.testing.assert_close(got, ref, **tol)
    w = torch.tensor(widths)
    got = A.convolve_bspline(net, x, degrees, w)
    cols = net.integration_columns
    ref = quad(
        net, x, [[rule_bspline(float(x[r, c]), widths[i], degrees[i]) for i, c in enumerate(cols)] for r in range(2)]
    )
    # the finite-difference form divides by h^(d+1): cancellation costs digits at small widths
    torch.testing.assert_close(
        got, ref, rtol=1e-7, atol=1e-9 * math.prod(wi ** -(d + 1) for wi, d in zip(widths, degrees))
    )


# ---------------------------------------------------------------------------------------------------
# the real compiler (first-order nets compile today): the adapter reads net.integral / net.grad
# ---------------------------------------------------------------------------------------------------
def test_real_compiled_first_order_net():
    import autoint_compiler as ac

    spec = {
        "name": "anti_t",
        "inputs": {"t": 1, "y": 1, "u": 1},
        "integrate": ["t", "u"],
        "output": 1,
        "mlp": {"hidden": [16, 16], "activation": "swish"},
        "seed": 0,
        "dtype": "float64",
    }
    net = ac.compile(spec)
    a, b = rows(3, 2, 11)
    x = make_x(FakeNet({"t": 1, "u": 1}), 3, 11)
    torch.testing.assert_close(A.integrate(net, a, b, x), net.integrate(a, b, x), **TOL)
    got = A.convolve_box(net, x, torch.tensor([0.4, 0.6]))
    cols = net.integration_columns
    f = net.grad
    ref = []
    for r in range(3):
        (s0, w0), (s1, w1) = [
            rule_box(float(x[r, c] - w / 2), float(x[r, c] + w / 2)) for c, w in zip(cols, (0.4, 0.6))
        ]
        g0, g1 = np.meshgrid(s0, s1, indexing="ij")
        pts = x[r].repeat(g0.size, 1).clone()
        pts[:, cols[0]], pts[:, cols[1]] = torch.from_numpy(g0.ravel()), torch.from_numpy(g1.ravel())
        with torch.no_grad():
            ref.append((f(pts)[:, 0] * torch.from_numpy(np.outer(w0, w1).ravel())).sum() / 0.24)
    torch.testing.assert_close(got.detach()[:, 0], torch.stack(ref), **TOL)
