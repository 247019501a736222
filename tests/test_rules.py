"""Table-driven checks of the derivative rules.

One row per activation in ``activations.ACTIVATIONS`` (plus formula activations) and one row per IR op
(graph-form specs). For every row, ``net.grad(x)`` must equal
- the nested ``torch.func.jvp`` of ``net.integral`` along the integration columns (within 1e-5 in
  float64; in practice ~1e-13), and
- float64 central finite differences of ``net.integral`` (step and tolerance justified in
  ``conftest.fd_reference`` / ``conftest.fd_step``: truncation O(h²·Φ‴) ≈ 1e-8 × scale for h=1e-4,
  so 1e-5 relative is generous for first derivatives; mixed partials use Richardson extrapolation).

Kinked activations (relu, requ, elu, selu) are checked against FD only at points whose pre-activations
are farther from 0 than the stencil can move them. The sympy derivative rules are also evaluated at
extreme arguments (±1e4, 0, moderate values) against high-precision reference values.
"""

from __future__ import annotations

import dataclasses
import math

import mpmath
import pytest
import sympy as sp
import torch
import torch.nn.functional as F
from conftest import (
    ac_compile,
    ac_graph_spec,
    ac_inputs,
    ac_mlp_spec,
    assert_fd_close,
    assert_rel_close,
    jvp_reference,
)

import autoint_compiler as ac
from autoint_compiler.backends import sympy_print
from autoint_compiler.core import activations as A
from autoint_compiler.core import ir, ops, rules

JVP_TOL = 1e-5
FD_TOL = 1e-5

# ---------------------------------------------------------------------------------------------------
# Activation rows
# ---------------------------------------------------------------------------------------------------


def _named(name):
    """The activation spec used for a table row (parameters chosen so FD stays well conditioned)."""
    if name == "sine":
        return {"name": "sine", "w0": 3.0}
    if name == "elu":
        return {"name": "elu", "alpha": 0.7}
    return name


FORMULAS = [
    "x*tanh(log(1+exp(x)))",  # mish, rewritten to softplus by the compiler
    "x**3/3 + sin(2*x)",
    "exp(-x**2) + atan(x)",
    "sqrt(1 + x**2) - 1",
    "x/(1+exp(-x))",  # swish spelled out
    "erf(x)*cosh(x/4)",
    "2**x - x/pi + e",
    "abs(x)**3",  # kinked primitive, C² function
]

ACT_ROWS = [pytest.param(_named(n), id=n) for n in sorted(A.ACTIVATIONS)]
ACT_ROWS += [pytest.param({"name": "sine", "w0": 1.5}, id="sine-w0=1.5")]
# (the spec's activation mapping takes name/w0/alpha only: other parameter values of the rows below
# are checked through the fx frontend, tests/test_fx_corpus.py)
ACT_ROWS += [pytest.param({"formula": f}, id=f"formula:{f}") for f in FORMULAS]


def _pointwise(act):
    if isinstance(act, str):
        return A.activation(act)
    if "formula" in act:
        return A.formula(act["formula"])
    return A.activation(act["name"], **{k: v for k, v in act.items() if k != "name"})


def _act_name(act):
    return act if isinstance(act, str) else act.get("name", "formula")


#: torch versions of the kinked activations (for the manual forward that locates the kinks)
KINKED_TORCH = {
    "relu": lambda z, a: torch.relu(z),
    "requ": lambda z, a: torch.relu(z) ** 2,
    "elu": lambda z, a: F.elu(z, alpha=a.get("alpha", 1.0)),
    "selu": lambda z, a: F.selu(z),
    "formula": lambda z, a: z.abs() ** 3,  # the only kinked formula row
    "abs": lambda z, a: z.abs(),
    "leaky_relu": lambda z, a: F.leaky_relu(z, a.get("negative_slope", 0.01)),
    "clamp": lambda z, a: z.clamp(a.get("min", -1.0), a.get("max", 1.0)),
    "softplus_beta": lambda z, a: F.softplus(z, a.get("beta", 1.0), a.get("threshold", 20.0)),
}

#: where each kinked row's kinks are, with its default parameters (default 0)
KINKS = {"clamp": (-1.0, 1.0), "softplus_beta": (20.0,)}


def _kinks(act):
    a = act if isinstance(act, dict) else {}
    if _act_name(act) == "clamp":
        return (a.get("min", -1.0), a.get("max", 1.0))
    if _act_name(act) == "softplus_beta":
        return (a.get("threshold", 20.0) / a.get("beta", 1.0),)
    return KINKS.get(_act_name(act), (0.0,))


def _distance_to_kinks(z, act):
    return torch.stack([(z - k).abs() for k in _kinks(act)]).min(0).values


def _spec_for(act, n_vars, seed=0):
    integrate = ["t", "s", "u"][:n_vars]
    inputs = {"y": 2, "t": 1, "s": 1, "u": 1}
    if _act_name(act) == "log":
        # log needs a positive argument: log(softplus(h) + 0.5) with h linear in every input
        return ac_graph_spec(
            [
                {"name": "h", "op": "linear", "in": ["y", "t", "s", "u"], "out": 4},
                {"name": "p", "op": "softplus", "in": ["h"]},
                {"name": "c", "op": "constant", "value": 0.5},
                {"name": "q", "op": "add", "in": ["p", "c"]},
                {"name": "l", "op": "log", "in": ["q"]},
                {"name": "o", "op": "linear", "in": ["l"], "out": 2},
            ],
            inputs=inputs,
            integrate=integrate,
            seed=seed,
        )
    return ac_mlp_spec(inputs=inputs, integrate=integrate, hidden=(6, 5), activation=act, seed=seed)


def _kink_margin(net, x, act):
    """min over layers and units of |pre-activation| for the 2-layer MLP of ``_spec_for`` (computed by
    hand, which also checks the integral network's forward)."""
    p = dict(net.integral.named_parameters())
    a = act if isinstance(act, dict) else {}
    f = KINKED_TORCH[_act_name(act)]
    z0 = F.linear(x, p["layer0_weight"], p["layer0_bias"])
    z1 = F.linear(f(z0, a), p["layer1_weight"], p["layer1_bias"])
    phi = F.linear(f(z1, a), p["out_weight"], p["out_bias"])
    assert_rel_close(net.integral(x).detach(), phi.detach(), 1e-12, "manual forward")
    d0, d1 = _distance_to_kinks(z0, act), _distance_to_kinks(z1, act)
    return torch.minimum(d0.min(1).values, d1.min(1).values).detach()


def _check_grad(net, x, n_vars, fd_mask=None, what=""):
    g = net.grad(x).detach()
    assert g.shape == (x.shape[0], net.out_features)
    assert_rel_close(g, jvp_reference(net, x), JVP_TOL, f"{what} grad vs nested jvp")
    if fd_mask is not None:
        x, g = x[fd_mask], g[fd_mask]
    assert_fd_close(net, x, g, FD_TOL, what)


def _act_cases():
    for row in ACT_ROWS:
        for n_vars in (1, 2):
            (act,) = row.values
            yield pytest.param(act, n_vars, id=f"{row.id}-{n_vars}var")


@pytest.mark.parametrize(("act", "n_vars"), list(_act_cases()))
def test_activation_grad_matches_jvp_and_fd(act, n_vars):
    fn = _pointwise(act)
    spec = _spec_for(act, n_vars)
    net = ac_compile(spec)
    x = ac_inputs(net, 64, seed=n_vars)
    if _act_name(act) == "log":
        x = x.abs() + 0.1
    mask = None
    if not fn.smooth:
        margin = _kink_margin(net, x, act)
        mask = margin > 5e-2  # the FD stencil moves a pre-activation by < 2·h·Σ|W| << 5e-2
        assert mask.sum() >= 8, "too few sample points away from the kinks"
        assert not net.report["smooth"], "a kinked activation must be flagged in the report"
    elif _act_name(act) != "log":
        assert net.report["smooth"], net.report
    _check_grad(net, x, n_vars, mask, what=str(act))


@pytest.mark.parametrize(
    "act", [pytest.param("swish", id="swish"), pytest.param({"name": "sine", "w0": 2.0}, id="sine"),
            pytest.param({"formula": "x**3/3 + sin(2*x)"}, id="formula")]
)
def test_three_variable_mixed_partial(act):
    net = ac_compile(_spec_for(act, 3, seed=3))
    _check_grad(net, ac_inputs(net, 32, seed=3), 3, what=str(act))


def test_relu_mixed_partial():
    """∂²Φ/∂t∂s of a relu MLP is 0 almost everywhere (relu'' = 0): the grad network is zero (not an
    error, not NaN)."""
    net = ac_compile(_spec_for("relu", 2))
    x = ac_inputs(net, 32)
    assert torch.equal(net.grad(x).detach(), torch.zeros(32, net.out_features, dtype=torch.float64))
    assert torch.equal(jvp_reference(net, x), torch.zeros_like(jvp_reference(net, x)))


def test_relu_mixed_partial_flagged():
    """DESIGN.md: a derivative of a kinked activation is flagged as not smooth, also when the grad
    graph is the constant 0 (the true mixed partial is a sum of Dirac deltas)."""
    cs = ac.compile_source(_spec_for("relu", 2))
    assert not cs.report["smooth"]


# ---------------------------------------------------------------------------------------------------
# Op rows (graph-form specs)
# ---------------------------------------------------------------------------------------------------


def _lin(name, ins, out, **kw):
    return {"name": name, "op": "linear", "in": ins, "out": out, **kw}


def _un(name, op, ins, **kw):
    return {"name": name, "op": op, "in": ins, **kw}


OP_ROWS = {
    "linear": [_lin("h", ["y", "t", "s"], 4), _un("a", "tanh", ["h"]), _lin("o", ["a"], 2)],
    "linear-nobias-input-first": [
        _lin("h", ["t", "s", "y"], 4, bias=False),
        _un("a", "sin", ["h"]),
        _lin("o", ["a"], 1, bias=False),
    ],
    "linear-of-t-only (wcol)": [
        _lin("p", ["t"], 3),
        _lin("q", ["s"], 3),
        _un("a", "swish", ["p"]),
        _un("b", "tanh", ["q"]),
        _un("m", "mul", ["a", "b"]),
        _lin("o", ["m", "y"], 2),
    ],
    "add": [
        _lin("p", ["y", "t"], 3),
        _lin("q", ["s", "t"], 3),
        _un("a", "tanh", ["p"]),
        _un("b", "sin", ["q"]),
        _un("c", "add", ["a", "b"]),
        _un("d", "sigmoid", ["c"]),
        _lin("o", ["d"], 2),
    ],
    "add-broadcast (expand)": [
        _lin("p", ["y"], 3),
        _lin("q", ["t", "s"], 1),
        _un("b", "sin", ["q"]),
        _un("c", "add", ["p", "b"]),
        _un("d", "tanh", ["c"]),
        _lin("o", ["d"], 2),
    ],
    "sub": [
        _lin("p", ["y", "t"], 3),
        _lin("q", ["s", "t"], 3),
        _un("a", "tanh", ["p"]),
        _un("b", "cos", ["q"]),
        _un("c", "sub", ["a", "b"]),
        _un("d", "softplus", ["c"]),
        _lin("o", ["d"], 1),
    ],
    "sub-of-constant-first": [
        {"name": "k", "op": "constant", "value": 2.0, "out": 3},
        _lin("q", ["t", "s", "y"], 3),
        _un("b", "tanh", ["q"]),
        _un("c", "sub", ["k", "b"]),
        _un("d", "sin", ["c"]),
        _lin("o", ["d"], 1),
    ],
    "mul": [
        _lin("p", ["y", "t"], 3),
        _lin("q", ["s", "t"], 3),
        _un("a", "tanh", ["p"]),
        _un("b", "sin", ["q"]),
        _un("c", "mul", ["a", "b"]),
        _lin("o", ["c"], 2),
    ],
    "mul-broadcast-self": [
        _lin("p", ["y", "t", "s"], 4),
        _un("a", "tanh", ["p"]),
        _un("w", "sum", ["a"]),
        _un("c", "mul", ["a", "w"]),
        _un("d", "mul", ["c", "c"]),
        _lin("o", ["d"], 2),
    ],
    "neg": [
        _lin("p", ["t", "y", "s"], 3),
        _un("a", "swish", ["p"]),
        _un("n", "neg", ["a"]),
        _un("b", "tanh", ["n"]),
        _lin("o", ["b"], 2),
    ],
    "scale": [
        _lin("p", ["t", "y", "s"], 3),
        _un("a", "sin", ["p"]),
        _un("k", "scale", ["a"], value=-2.5),
        _un("b", "tanh", ["k"]),
        _un("k2", "scale", ["b"], value=3),
        _lin("o", ["k2"], 2),
    ],
    "sum": [
        _lin("p", ["t", "y", "s"], 4),
        _un("a", "sin", ["p"]),
        _un("w", "sum", ["a"]),
        _un("b", "tanh", ["w"]),
        _lin("q", ["s"], 1),
        _un("c", "mul", ["b", "q"]),
        _un("o", "sum", ["c", "a"]),
    ],
    "concat": [
        _lin("p", ["t", "y"], 3),
        _lin("q", ["s"], 2),
        _un("a", "tanh", ["p"]),
        _un("b", "sin", ["q"]),
        _un("c", "concat", ["a", "y", "b", "t"]),
        _un("d", "swish", ["c"]),
        _lin("o", ["d", "c"], 2),
    ],
    "slice": [
        _lin("p", ["t", "y", "s"], 5),
        _un("a", "tanh", ["p"]),
        _un("sl", "slice", ["a"], start=1, stop=4),
        _un("sl2", "slice", ["y", "t", "s"], start=2, stop=4),
        _un("b", "sin", ["sl"]),
        _lin("o", ["b", "sl2"], 2),
    ],
    "constant": [
        {"name": "k", "op": "constant", "value": 0.5, "out": 3},
        {"name": "k1", "op": "constant", "value": -1.25},
        _lin("p", ["t", "y", "s"], 3),
        _un("a", "add", ["p", "k"]),
        _un("b", "mul", ["a", "k1"]),
        _un("c", "tanh", ["b"]),
        _un("d", "mul", ["c", "k"]),
        _lin("o", ["d"], 2),
    ],
    "posenc-include-input": [
        _un("e", "posenc", ["t"], frequencies=3, include_input=True),
        _un("f", "posenc", ["s"], frequencies=2),
        _lin("h", ["e", "y", "f"], 6),
        _un("a", "tanh", ["h"]),
        _lin("o", ["a"], 2),
    ],
    "posenc-no-input": [
        _un("e", "posenc", ["y", "t", "s"], frequencies=2, include_input=False),
        _lin("h", ["e"], 5),
        _un("a", "swish", ["h"]),
        _lin("o", ["a"], 1),
    ],
    "posenc-of-hidden": [
        _lin("h", ["t", "s", "y"], 2),
        _un("a", "tanh", ["h"]),
        _un("e", "posenc", ["a"], frequencies=2, include_input=False),
        _lin("o", ["e"], 2),
    ],
    "formula": [
        _lin("h", ["t", "s", "y"], 4),
        {"name": "f", "op": "formula", "in": ["h"], "formula": "x**3/3 + sin(2*x)"},
        _lin("o", ["f"], 2),
    ],
    "diamond-reuse": [
        _lin("h", ["t", "s", "y"], 3),
        _un("a", "sin", ["h"]),
        _un("b", "cos", ["h"]),
        _un("c", "mul", ["a", "b"]),
        _un("d", "add", ["c", "a"]),
        _un("e", "sub", ["d", "h"]),
        _lin("o", ["e", "a"], 2),
    ],
}


@pytest.mark.parametrize("n_vars", [1, 2])
@pytest.mark.parametrize("row", sorted(OP_ROWS))
def test_op_grad_matches_jvp_and_fd(row, n_vars):
    integrate = ["t", "s"][:n_vars]
    net = ac_compile(ac_graph_spec(OP_ROWS[row], integrate=integrate, name="op_" + str(len(row))))
    _check_grad(net, ac_inputs(net, 48, seed=7 + n_vars), n_vars, what=row)


def test_op_rows_cover_every_ir_op():
    """Together the rows' integral and grad graphs use every op of ``ir.OPS`` (derived ops like wcol,
    expand and fscale only appear in grad graphs)."""
    used: set[str] = set()
    for nodes in OP_ROWS.values():
        for integrate in (["t"], ["t", "s"]):
            cs = ac.compile_source(ac_graph_spec(nodes, integrate=integrate))
            for g in (cs.integral_ir, cs.grad_ir):
                used |= {g.op(n) for n in g.nodes}
    assert set(ir.OPS) <= used, f"ops without a test row: {sorted(set(ir.OPS) - used)}"


def test_every_ir_op_has_a_rule():
    assert set(ir.OPS) <= set(rules.RULES), sorted(set(ir.OPS) - set(rules.RULES))
    assert set(rules.RULES) <= set(ir.OPS), sorted(set(rules.RULES) - set(ir.OPS))


@pytest.mark.parametrize("op", ["mul", "posenc", "pointwise"])
def test_missing_rule_raises_compile_error_naming_op(monkeypatch, op):
    spec = ac_graph_spec(OP_ROWS["mul"] if op != "posenc" else OP_ROWS["posenc-include-input"])
    ac.compile_source(spec)  # fine with the full table
    monkeypatch.setitem(ops.OPS, op, dataclasses.replace(ops.OPS[op], jvp=None))
    with pytest.raises(ac.CompileError) as info:
        ac.compile_source(spec)
    assert repr(op) in str(info.value) or f" {op}" in str(info.value), str(info.value)


# ---------------------------------------------------------------------------------------------------
# Numerical stability of the sympy derivative rules
# ---------------------------------------------------------------------------------------------------


def _standard_form(expr):
    """The table's expression rewritten with plain sympy functions only (no custom fdiff), so its
    sympy derivative is an independent reference."""
    u = sp.Dummy("u")
    repl = {
        A.sigmoid: sp.Lambda(u, 1 / (1 + sp.exp(-u))),
        A.softplus: sp.Lambda(u, sp.log(1 + sp.exp(u))),
        A.relu: sp.Lambda(u, sp.Max(u, 0)),
        A.step: sp.Lambda(u, sp.Heaviside(u)),
        A.ndtr: sp.Lambda(u, sp.erfc(-u / sp.sqrt(2)) / 2),  # no cancellation for u << 0
    }
    if hasattr(A, "expm1_neg"):
        repl[A.expm1_neg] = sp.Lambda(u, sp.exp(sp.Min(u, 0)) - 1)
    for f, lam in repl.items():
        expr = expr.replace(f, lam)
    custom = {type(f).__name__ for f in expr.atoms(sp.Function) if type(f).__module__ == A.__name__}
    assert not custom, f"add a standard form for {custom} to this test"
    return expr


def _reference_derivative(std, k):
    """k-th derivative of a standard-form expression; Dirac deltas (at kinks only) dropped, as the
    reference is only evaluated away from kinks."""
    d = sp.diff(std, A.x, k) if k else std
    return d.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)


def _true_value(expr, v):
    """``expr`` at ``v`` with 80-digit mpmath arithmetic, as a float (inf when not representable)."""
    f = sp.lambdify(A.x, expr, modules="mpmath")
    with mpmath.workdps(80):
        return float(f(mpmath.mpf(v)))


STABILITY_POINTS = [-1e4, -800.0, -40.0, -3.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 3.0, 40.0, 800.0, 1e4]
POSITIVE_POINTS = [1e-3, 0.5, 1.0, 3.0, 40.0, 800.0, 1e4]

STABILITY_ROWS = [pytest.param(n, id=n) for n in sorted(A.ACTIVATIONS)] + [
    pytest.param({"formula": f}, id=f"formula:{f}") for f in FORMULAS[:3] + FORMULAS[4:5]
]


def _eval_printed(exprs, v, dtype):
    """Evaluate sympy expressions of x through the torch printer (as the generated code would)."""
    temps, codes = sympy_print.print_group(exprs, "x", "x_")
    env = {"torch": torch, "F": F, "x": torch.tensor([v], dtype=dtype)}
    for name, code in temps:
        env[name] = eval(code, env)  # noqa: S307 - text printed by our own printer
    return [eval(code, env).item() for code in codes]  # noqa: S307


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("act", STABILITY_ROWS)
def test_derivative_rules_are_stable(act, dtype):
    """f, f' and f'' as printed for torch: finite wherever the true value is finite (representable),
    and close to a 40-digit reference; at ±1e4 and 0 in particular."""
    fn = A.activation(act) if isinstance(act, str) else A.formula(act["formula"])
    chain = [fn]
    for _ in range(2):
        d = A.derivative(chain[-1])
        if d is None:  # identically zero (relu''): nothing to print
            break
        chain.append(d)
    std = _standard_form(fn.expr)
    refs = [_reference_derivative(std, k) for k in range(len(chain))]
    points = POSITIVE_POINTS if act == "log" else STABILITY_POINTS
    big = 1e300 if dtype == torch.float64 else 1e38
    rtol, atol = (1e-9, 1e-12) if dtype == torch.float64 else (2e-4, 1e-6)
    failures = []
    for v in points:
        if not fn.smooth and v in KINKS.get(_act_name(act), (0.0,)):
            continue  # kinked at 0: the derivative there is a convention (see test_elu_derivative_at_0)
        got = _eval_printed([f.expr for f in chain], v, dtype)
        for k, (g, ref) in enumerate(zip(got, refs)):
            true = _true_value(ref, v)
            if not math.isfinite(true) or abs(true) > big:
                continue  # e.g. exp(1e4): overflow is the right answer
            if dtype == torch.float32 and abs(v) >= 800 and _sensitive(fn):
                continue  # float32 cannot represent the argument finely enough (sin(1e4) etc.)
            tol = atol + rtol * abs(true) * (1 + abs(v) if _sensitive(fn) else 1)
            if not math.isfinite(g) or abs(g - true) > tol:
                failures.append(f"{chain[k].label} at x={v}: got {g!r}, true {true!r}")
    assert not failures, "\n".join(failures)


def _sensitive(fn):
    """Periodic functions lose relative accuracy at large |x| (argument rounding): allow |x|·ε."""
    return fn.expr.has(sp.sin, sp.cos)


@pytest.mark.parametrize("n_vars", [1, 2])
@pytest.mark.parametrize("name", sorted(A.ACTIVATIONS))
def test_generated_network_is_stable_at_extremes(name, n_vars):
    """A 1-unit network with weights set so Φ(t, s) = act(t + s): grad is act' (one variable) or act''
    (two), through the generated module (fused library primals included). Finite and accurate at
    ±1e4, ±40, 0 wherever the true value is finite."""
    fn = A.activation(name)
    spec = ac_mlp_spec(inputs={"t": 1, "s": 1}, integrate=["t", "s"][:n_vars], hidden=(1,), activation=name, output=1)
    net = ac_compile(spec)
    with torch.no_grad():
        for p_name, p in net.integral.named_parameters():
            p.fill_(0.0 if p_name.endswith("bias") else 1.0)
    points = POSITIVE_POINTS if name == "log" else [
        p for p in STABILITY_POINTS if fn.smooth or p not in KINKS.get(name, (0.0,))
    ]
    x = torch.tensor([[v, 0.0] for v in points], dtype=torch.float64)
    got = net.grad(x).detach()[:, 0].tolist()
    phi = net.integral(x).detach()[:, 0].tolist()
    std = _standard_form(fn.expr)
    d = _reference_derivative(std, n_vars)
    failures = []
    for v, g, f in zip(points, got, phi):
        for label, value, ref in ((f"{name}", f, std), (f"{name}{chr(39) * n_vars}", g, d)):
            true = _true_value(ref, v)
            if not math.isfinite(true) or abs(true) > 1e300:
                continue
            tol = 1e-12 + 1e-9 * abs(true) * (1 + abs(v) if _sensitive(fn) else 1)
            if not math.isfinite(value) or abs(value - true) > tol:
                failures.append(f"{label} at {v}: got {value!r}, true {true!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("name", "expected"), [("elu", 1.0), ("selu", 1.0507009873554805 * 1.6732632423543772)])
def test_elu_derivative_at_0(name, expected):
    """ELU with α = 1 is C¹: its derivative at 0 is 1 (torch's backward gives α·λ there for both)."""
    spec = ac_mlp_spec(inputs={"t": 1}, integrate=["t"], hidden=(1,), activation=name, output=1)
    net = ac_compile(spec)
    with torch.no_grad():
        for p_name, p in net.integral.named_parameters():
            p.fill_(0.0 if p_name.endswith("bias") else 1.0)
    x = torch.zeros(1, 1, dtype=torch.float64)
    assert net.grad(x).item() == pytest.approx(expected, rel=1e-12)
    assert jvp_reference(net, x).item() == pytest.approx(expected, rel=1e-12)
