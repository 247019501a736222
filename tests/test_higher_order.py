"""Antiderivatives of any order (issue 11, compiler side): integrate: {t: 2} / [t, t], Taylor-mode
derivation, per-order networks sharing parameters, the graph-size budget, and activation derivatives
of every order that stay finite."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import autoint_compiler as ac
from autoint_compiler.core import activations as A
from autoint_compiler.core import interpret
from autoint_compiler.core.differentiate import MAX_GRAD_NODES, derive_jet, derive_once
from autoint_compiler.frontends.spec import load_spec
from autoint_compiler.frontends.spec_build import build_integral

NAMES = ["t", "y", "s", "z", "u", "v"]


def nested_jvp(f, x, cols):
    def along(g, c):
        def h(y):
            e = torch.zeros_like(y)
            e[:, c] = 1.0
            return torch.func.jvp(g, (y,), (e,))[1]

        return h

    for c in cols:
        f = along(f, c)
    return f(x)


def _spec(orders: dict, act="swish", enc=False, hidden=(6, 6), seed=0):
    names = list(dict.fromkeys([*orders, "y"]))
    mlp = {"hidden": list(hidden), "activation": act}
    if enc:
        mlp["encoding"] = {"inputs": [names[0]], "frequencies": 2}
    return {"name": "ho", "inputs": {n: 1 for n in names}, "integrate": orders, "output": 1,
            "dtype": "float64", "seed": seed, "mlp": mlp}


def _all_orders(max_total=6, max_vars=3):
    """Every order combination over up to ``max_vars`` variables with total order 1..max_total."""
    out = []
    for n in range(1, max_vars + 1):
        for ks in itertools.product(range(1, max_total + 1), repeat=n):
            if sum(ks) <= max_total:
                out.append(dict(zip(NAMES[:n], ks)))
    return out


ORDER_CASES = _all_orders()


@pytest.mark.parametrize("orders", ORDER_CASES, ids=lambda o: "".join(f"{v}{k}" for v, k in o.items()))
def test_grad_equals_nested_jvp_for_every_order(orders):
    enc = sum(orders.values()) <= 4  # posenc's Faà di Bruno path too, where the reference stays cheap
    net = ac.compile(_spec(orders, act="tanh" if len(orders) % 2 else "swish", enc=enc))
    x = torch.rand(5, net.in_features, dtype=torch.float64) * 2 - 1
    cols = [net.program.inputs[[n for n, *_ in net.program.inputs].index(v)][1] for v in net.program.wrt]
    ref = nested_jvp(net.integral, x, cols).detach()
    got = net.grad(x).detach()
    assert (got - ref).abs().max() <= 1e-9 * ref.abs().max().clamp_min(1e-6)
    params = {k: v.numpy() for k, v in net.integral.state_dict().items()}  # and the IR interpreter
    assert np.abs(interpret.run(net.grad_ir, x.numpy(), params) - got.numpy()).max() <= 1e-9 * float(
        ref.abs().max().clamp_min(1e-6))


@pytest.mark.parametrize("k", [2, 3])
def test_repeated_derivative_matches_finite_differences(k):
    net = ac.compile(_spec({"t": k}, act="gelu", hidden=(8,)))
    x = torch.rand(6, net.in_features, dtype=torch.float64)
    h = 1e-3
    lower = ac.compile(_spec({"t": k - 1}, act="gelu", hidden=(8,)))
    lower.integral.load_state_dict(net.integral.state_dict())
    xp, xm = x.clone(), x.clone()
    xp[:, 0] += h
    xm[:, 0] -= h
    with torch.no_grad():
        fd = (lower.grad(xp) - lower.grad(xm)) / (2 * h)  # d/dt of the order k-1 network
        assert (net.grad(x) - fd).abs().max() <= 1e-5 * fd.abs().max().clamp_min(1.0)


def test_mapping_and_list_forms_are_the_same_program():
    a = ac.compile_source(_spec({"t": 2, "y": 1}))
    b = ac.compile_source({**_spec({"t": 2, "y": 1}), "integrate": ["t", "t", "y"]})
    assert a.source == b.source and a.program.hash == b.program.hash
    assert a.program.orders == {"t": 2, "y": 1} and a.program.integration_columns == (0, 1)


def test_per_order_networks_share_parameters_and_nest():
    net = ac.compile(_spec({"t": 2, "y": 2}))
    assert net.orders == {"t": 2, "y": 2}
    assert net.derivative({}) is net.integral and net.derivative({"t": 2, "y": 2}) is net.grad
    d11 = net.derivative({"t": 1, "y": 1})
    assert d11 is net.derivative({"t": 1, "y": 1})  # compiled once
    own = {id(p) for p in net.integral.parameters()}
    assert {id(p) for p in d11.parameters()} <= own
    x = torch.rand(7, net.in_features, dtype=torch.float64)
    ref = nested_jvp(net.integral, x, [0, 1]).detach()
    assert torch.allclose(d11(x).detach(), ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="exceed"):
        net.derivative({"t": 3})
    with pytest.raises(ValueError, match="orders must map"):
        net.derivative({"q": 1})


def test_fx_module_with_orders():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 1)).double()
    net = ac.compile_module(module, 2, integrate={0: 2, 1: 1})
    x = torch.rand(5, 2, dtype=torch.float64)
    ref = nested_jvp(module, x, [0, 0, 1]).detach()
    assert torch.allclose(net.grad(x).detach(), ref, rtol=1e-9, atol=1e-12)


def test_taylor_mode_grows_slower_than_nested_passes():
    spec = load_spec({"name": "g", "inputs": {"t": 1}, "integrate": ["t"], "output": 1,
                      "mlp": {"hidden": [16] * 4, "activation": "swish"}})
    phi = build_integral(spec)
    sizes = {}
    for k in range(2, 7):
        nested = phi
        for _ in range(k):
            nested = derive_once(nested, "t")
        sizes[k] = (derive_jet(phi, "t", k).number_of_nodes(), nested.number_of_nodes())
    # measured: taylor 41, 72, 125, 194, 306 against nested 41, 78, 143, 250, 416 for k = 2..6
    assert all(t <= n for t, n in sizes.values())
    assert sizes[6][0] < 0.8 * sizes[6][1]
    base = phi.number_of_nodes()
    for k, (t, _) in sizes.items():  # at most quadratic in the order: per layer, 2.5 k² nodes
        assert (t - base) / 4 <= 2.5 * k * k, (k, t)


def test_graph_size_budget_is_a_clear_compile_error():
    spec = {"name": "huge", "inputs": {v: 1 for v in "abcdef"}, "integrate": list("abcdef"), "output": 1,
            "mlp": {"hidden": [4] * 64, "activation": "swish"}}
    with pytest.raises(ac.CompileError, match=f"over the budget of {MAX_GRAD_NODES}"):
        ac.compile_source(spec)


def test_order_limits_are_spec_errors():
    with pytest.raises(ac.SpecError, match="total order 10 is more than 9"):
        ac.load_spec(_spec({"t": 4, "y": 3, "z": 3}))
    with pytest.raises(ac.SpecError, match="order of 't' must be an integer"):
        ac.load_spec(_spec({"t": 0}))


SMOOTH = sorted(n for n in A.ACTIVATIONS if n not in ("relu", "requ", "elu", "selu", "log", "exp"))


@pytest.mark.parametrize("name", SMOOTH)
def test_activation_derivatives_of_every_order_are_finite(name):
    """f, f', ..., f^(6) evaluate finite at ±1e4, ±30 and 0 (stable forms survive repeated sympy diff)."""
    fn = A.activation(name)
    chain = [fn]
    while len(chain) < 7 and chain[-1] is not None:
        chain.append(A.derivative(chain[-1]))
    pts = np.array([-1e4, -30.0, 0.0, 30.0, 1e4])
    for k, f in enumerate(chain):
        if f is None:
            break
        with np.errstate(all="ignore"):
            v = np.broadcast_to(interpret.eval_expr(f.expr, {A.x: pts}), pts.shape)
        assert np.isfinite(v).all(), f"{name}^({k}) at {pts[~np.isfinite(v)]}: {A.canonical_key(f.expr)[:80]}"
