"""The reference IR interpreter: runs any IR graph op by op in float64 with numpy (no codegen, no
torch), so the generated Φ itself is checked against an independent evaluator.

``run(g, x, params)``: ``x`` is ``[N, D]``, ``params`` maps ``"<param>_weight"``/``"<param>_bias"``
to arrays (a generated module's ``state_dict`` converted with ``.numpy()``). Pointwise nodes are
evaluated by walking their sympy expression with numpy functions (``EVAL_FUNCTIONS``). Every op that
is not elementwise has one row in ``EVAL``, written here independently of the compiler, and so do the
arithmetic ops; any other elementwise op is evaluated from its sympy meaning (``ops.OpDef.elementwise``).
``tests/test_op_completeness.py`` runs every op.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import sympy as sp

from ..errors import CompileError
from . import primitives as P
from .ir import IRGraph
from .names import param_attribute
from .ops import ELEMENTWISE_ARITHMETIC, op_def

_erf = np.vectorize(math.erf, otypes=[float])


def _sigmoid(u):
    return np.where(u >= 0, 1.0 / (1.0 + np.exp(-np.abs(u))), np.exp(-np.abs(u)) / (1.0 + np.exp(-np.abs(u))))


#: sympy function class -> numpy implementation (float64)
EVAL_FUNCTIONS: dict[type, Callable] = {
    sp.sin: np.sin,
    sp.cos: np.cos,
    sp.tan: np.tan,
    sp.exp: np.exp,
    sp.log: np.log,
    sp.tanh: np.tanh,
    sp.sinh: np.sinh,
    sp.cosh: np.cosh,
    sp.atan: np.arctan,
    sp.erf: _erf,
    sp.Abs: np.abs,
    sp.sign: np.sign,
    P.sigmoid: _sigmoid,
    P.softplus: lambda u: np.logaddexp(0.0, u),
    P.relu: lambda u: np.maximum(u, 0.0),
    P.step: lambda u: (u > 0).astype(np.float64),
    P.ndtr: lambda u: 0.5 * (1.0 + _erf(u / math.sqrt(2.0))),
    P.expm1_neg: lambda u: np.expm1(np.minimum(u, 0.0)),
    P.log_domain: lambda u: np.where(u >= 0, 1.0, np.nan),
}


def eval_expr(expr: sp.Expr, env: dict[sp.Symbol, np.ndarray]) -> np.ndarray:
    """Evaluate a sympy expression tree over numpy arrays."""
    if expr.is_Symbol:
        return env[expr]
    if expr.is_number:
        return np.float64(float(expr))
    args = [eval_expr(a, env) for a in expr.args]
    if isinstance(expr, sp.Add):
        return sum(args[1:], args[0])
    if isinstance(expr, sp.Mul):
        out = args[0]
        for a in args[1:]:
            out = out * a
        return out
    if isinstance(expr, sp.Pow):
        base, ex = args
        return np.sqrt(base) if expr.exp == sp.Rational(1, 2) else np.power(base, ex)
    fn = EVAL_FUNCTIONS.get(type(expr))
    if fn is None:
        raise CompileError(f"interpreter: no numpy evaluation for sympy function {type(expr).__name__}")
    return fn(*args)


def _linear(g, nid, a, args, params):
    w = params[param_attribute(a["param"], "weight")][:, a["cols"][0] : a["cols"][1]]
    out = args[0] @ w.T
    return out + params[param_attribute(a["param"], "bias")] if a["bias"] else out


def _posenc(g, nid, a, args, params):
    u = _fscale(a["freqs"], args[0])
    return np.concatenate(([args[0]] if a["include_input"] else []) + [np.sin(u), np.cos(u)], axis=1)


def _fscale(freqs, v):
    return np.concatenate([v * f for f in freqs], axis=1)


#: op -> numpy evaluation (inputs already evaluated, rows [1, w] broadcast like the generated code)
EVAL: dict[str, Callable] = {
    "input": lambda g, nid, a, args, p: p["__x__"][:, a["start"] : a["stop"]],
    "constant": lambda g, nid, a, args, p: np.asarray(a["value"], dtype=np.float64)[None, :],
    "wcol": lambda g, nid, a, args, p: p[param_attribute(a["param"], "weight")][:, a["col"]][None, :],
    "linear": _linear,
    "add": lambda g, nid, a, args, p: args[0] + args[1],
    "sub": lambda g, nid, a, args, p: args[0] - args[1],
    "mul": lambda g, nid, a, args, p: args[0] * args[1],
    "neg": lambda g, nid, a, args, p: -args[0],
    "scale": lambda g, nid, a, args, p: a["value"] * args[0],
    "sum": lambda g, nid, a, args, p: args[0].sum(axis=1, keepdims=True),
    "expand": lambda g, nid, a, args, p: np.broadcast_to(args[0], (args[0].shape[0], a["out"])),
    "concat": lambda g, nid, a, args, p: np.concatenate(
        [np.broadcast_to(v, (max(u.shape[0] for u in args), v.shape[1])) for v in args], axis=1
    ),
    "slice": lambda g, nid, a, args, p: args[0][:, a["start"] : a["stop"]],
    "pointwise": lambda g, nid, a, args, p: eval_expr(a["fn"].expr, {P.x: args[0]}),
    "fscale": lambda g, nid, a, args, p: _fscale(a["freqs"], args[0]),
    "posenc": _posenc,
}


def _elementwise(g, nid, a, args, p):
    us = [sp.Symbol(f"u{k}", real=True) for k in range(len(args))]
    return eval_expr(op_def(g.op(nid)).elementwise(us, a), dict(zip(us, args)))


def run(g: IRGraph, x: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluate the graph's (single) output for inputs ``x`` [N, D], in float64."""
    x = np.asarray(x, dtype=np.float64)
    env = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    env["__x__"] = x
    values: dict[int, np.ndarray] = {}
    with np.errstate(all="ignore"):  # NaN/inf propagate as in the generated code
        for nid in g.order():
            op = g.op(nid)
            evaluate = EVAL.get(op, _elementwise if op in ELEMENTWISE_ARITHMETIC else None)
            if evaluate is None:
                raise CompileError(f"interpreter: no evaluation rule for op {op!r} (node %{nid})")
            values[nid] = evaluate(g, nid, g.attrs(nid), [values[i] for i in g.inputs_of(nid)], env)
    (o,) = g.graph["outputs"]
    return np.broadcast_to(values[o], (x.shape[0], g.width(o))).copy()
