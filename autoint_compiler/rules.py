"""The derivative table: one forward-mode (JVP) rule per IR op.

A rule receives the builder, the node id and the tangent map ``T`` (node id -> tangent node id, or
``None`` for a tangent that is identically zero) and returns the node's tangent. Rules only emit IR
ops that themselves have rules, so deriving twice gives mixed partials. Pointwise functions share one
rule: the derivative expression comes from sympy (``activations.derivative``), derived once.
"""

from __future__ import annotations

from typing import Callable, Optional

from . import activations
from .errors import CompileError
from .ir import Builder

Tangents = dict[int, Optional[int]]
Rule = Callable[[Builder, int, Tangents], Optional[int]]


def _t(T: Tangents, g, nid: int, k: int = 0) -> Optional[int]:
    return T[g.inputs_of(nid)[k]]


def _zero(b: Builder, nid: int, T: Tangents) -> None:
    """Ops whose value does not depend on the integration variable through their inputs."""
    return None


def _linear(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    # d(W h + c) = W dh; over a concat whose parts have zero tangents, only the columns of the live
    # parts are multiplied (the first layer's tangent is then a weight column, see Builder.linear)
    g = b.g
    a = g.attrs(nid)
    (src,) = g.inputs_of(nid)
    if T[src] is None:
        return None
    lo, _ = a["cols"]
    if g.op(src) == "concat":
        parts, off = [], lo
        for p in g.inputs_of(src):
            w = g.width(p)
            if T[p] is not None:
                parts.append(b.linear(T[p], a["param"], cols=(off, off + w), bias=False))
            off += w
        if len(parts) < len(g.inputs_of(src)):
            out = parts[0]
            for p in parts[1:]:
                out = b.add(out, p)
            return out
    return b.linear(T[src], a["param"], cols=tuple(a["cols"]), bias=False)


def _add(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    ta, tb = _t(T, b.g, nid, 0), _t(T, b.g, nid, 1)
    if ta is None or tb is None:
        return ta if tb is None else tb
    return b.add(ta, tb)


def _sub(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    ta, tb = _t(T, b.g, nid, 0), _t(T, b.g, nid, 1)
    if tb is None:
        return ta
    return b.neg(tb) if ta is None else b.sub(ta, tb)


def _mul(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    x, y = b.g.inputs_of(nid)
    terms = []
    if T[x] is not None:
        terms.append(b.mul(T[x], y))
    if T[y] is not None:
        terms.append(b.mul(x, T[y]))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else b.add(terms[0], terms[1])


def _neg(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    t = _t(T, b.g, nid)
    return None if t is None else b.neg(t)


def _scale(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    t = _t(T, b.g, nid)
    return None if t is None else b.scale(t, b.g.attrs(nid)["value"])


def _sum(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    t = _t(T, b.g, nid)
    return None if t is None else b.sum(t)


def _expand(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    t = _t(T, b.g, nid)
    return None if t is None else b.expand(t, b.g.attrs(nid)["out"])


def _concat(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    parts = b.g.inputs_of(nid)
    ts = [T[p] for p in parts]
    if all(t is None for t in ts):
        return None
    return b.concat([t if t is not None else b.const([0.0] * b.g.width(p)) for p, t in zip(parts, ts)])


def _slice(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    t = _t(T, b.g, nid)
    if t is None:
        return None
    a = b.g.attrs(nid)
    return b.slice(t, a["start"], a["stop"])


def _pointwise(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    # d f(a) = f'(a) * da, with f' derived once by sympy
    t = _t(T, b.g, nid)
    if t is None:
        return None
    (a,) = b.g.inputs_of(nid)
    d = activations.derivative(b.g.attrs(nid)["fn"])
    if d is None:
        return None
    if d.expr.is_number:  # an affine formula: f' is a constant
        return b.scale(t, float(d.expr))
    # the label follows the node's own (swish -> swish'), never the registry's first-seen alias
    return b.mul(b.pointwise(a, d.key, b.g.attrs(nid)["label"] + "'"), t)


def _fscale(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    t = _t(T, b.g, nid)
    return None if t is None else b.fscale(t, b.g.attrs(nid)["freqs"])


def _posenc(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    # P = [a?, sin(F a), cos(F a)]  =>  dP = [da?, cos(F a) * F da, -sin(F a) * F da]; the sin and cos
    # blocks are slices of P itself, so the primal work is reused, not recomputed
    t = _t(T, b.g, nid)
    if t is None:
        return None
    a = b.g.attrs(nid)
    w = b.g.width(b.g.inputs_of(nid)[0])
    k = len(a["freqs"]) * w
    off = w if a["include_input"] else 0
    sin_block = b.slice(nid, off, off + k)
    cos_block = b.slice(nid, off + k, off + 2 * k)
    ft = b.fscale(t, a["freqs"])
    parts = [t] if a["include_input"] else []
    parts += [b.mul(cos_block, ft), b.neg(b.mul(sin_block, ft))]
    return b.concat(parts)


#: op -> rule. Every op in ir.OPS has a row; derive() raises CompileError naming an op without one.
RULES: dict[str, Rule] = {
    "input": _zero,  # seeded by derive(): the integration variable's tangent is 1
    "constant": _zero,
    "wcol": _zero,  # a parameter view: no dependence on x
    "linear": _linear,
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "neg": _neg,
    "scale": _scale,
    "sum": _sum,
    "expand": _expand,
    "concat": _concat,
    "slice": _slice,
    "pointwise": _pointwise,
    "fscale": _fscale,
    "posenc": _posenc,
}


def rule_for(op: str) -> Rule:
    try:
        return RULES[op]
    except KeyError:
        raise CompileError(f"no differentiation rule for op {op!r}: add a row to rules.RULES") from None
