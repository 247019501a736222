"""Pointwise functions as sympy expressions of one symbol ``x``: the activation table and the derivative
cache (the formula parser is ``formula.py``, the stable primitives ``primitives.py``).

Every activation is an expression in ``x`` built from sympy's own functions and the stable primitives
(``sigmoid``, ``softplus``, ``relu``, ``step``, ``ndtr``) whose ``fdiff`` gives the numerically stable
derivative (σ' = σ(1-σ), softplus' = σ, ...). A ``PointwiseFn`` is a value (equal expressions are
equal functions, whatever their label); IR nodes hold it directly. Derivatives are derived once per
expression with ``sympy.diff`` (a pure, memoised function).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import sympy as sp

from ..errors import CompileError
from .formula import FormulaError, parse_formula, stabilize  # noqa: F401 - re-exported
from .primitives import (  # noqa: F401 - re-exported: the table is written in these
    DISCONTINUOUS,
    KINKED,
    expm1_neg,
    log_domain,
    ndtr,
    relu,
    sigmoid,
    softplus,
    step,
    x,
)

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _num(v: float) -> sp.Expr:
    return sp.Integer(int(v)) if float(v).is_integer() else sp.Float(v)


def _leaky_relu(negative_slope: float) -> sp.Expr:
    # relu(x) - s·relu(-x): one of the two terms is exactly 0, so the value is x or s·x exactly
    return relu(x) - _num(negative_slope) * relu(-x)


def _clamp(lo: float, hi: float) -> sp.Expr:
    # x - relu(x - hi) + relu(lo - x): exactly x inside [lo, hi] (both terms 0), lo or hi outside
    if not lo < hi:
        raise CompileError(f"clamp needs min < max, got min={lo}, max={hi}")
    return x - relu(x - _num(hi)) + relu(_num(lo) - x)


def _softplus_beta(beta: float, threshold: float) -> sp.Expr:
    # torch's softplus: x where beta·x > threshold, log(1 + exp(beta·x))/beta elsewhere; the switch is
    # a jump of the derivative (≈ exp(-threshold)), so this function is flagged as not smooth
    if not beta > 0:
        raise CompileError(f"softplus needs beta > 0, got beta={beta}")
    u = _num(beta) * x
    above = step(u - _num(threshold))
    return x * above + softplus(u) / _num(beta) * (1 - above)


def _elu(alpha: float) -> sp.Expr:
    # relu(x) + α(exp(min(x, 0)) - 1): equal to ELU everywhere, and exp never sees a large argument
    return relu(x) + sp.Float(alpha) * expm1_neg(x)


@dataclass(frozen=True)
class ActivationDef:
    """One row of the activation table: how to build the expression, which parameters it takes, and
    an optional name of a fused library primal the backends may use instead of the printed formula."""

    build: object  # callable(**params) -> sympy expression in x
    params: tuple[tuple[str, float], ...] = ()  # (name, default)
    library: str | None = None  # backend hint for the primal (e.g. "silu")
    doc: str = ""


ACTIVATIONS: dict[str, ActivationDef] = {
    "sin": ActivationDef(lambda: sp.sin(x), doc="sin(x)"),
    "cos": ActivationDef(lambda: sp.cos(x), doc="cos(x)"),
    "exp": ActivationDef(lambda: sp.exp(x), doc="exp(x)"),
    "log": ActivationDef(lambda: sp.log(x), doc="log(x) (x > 0)"),
    "tanh": ActivationDef(lambda: sp.tanh(x), library="tanh", doc="tanh(x)"),
    "sigmoid": ActivationDef(lambda: sigmoid(x), library="sigmoid", doc="1/(1+exp(-x))"),
    "swish": ActivationDef(lambda: x * sigmoid(x), library="silu", doc="x·σ(x) (SiLU)"),
    "silu": ActivationDef(lambda: x * sigmoid(x), library="silu", doc="alias of swish"),
    "softplus": ActivationDef(lambda: softplus(x), library="softplus", doc="log(1+exp(x)), stable"),
    "relu": ActivationDef(lambda: relu(x), library="relu", doc="max(x, 0); its derivative is a step"),
    "abs": ActivationDef(lambda: sp.Abs(x), doc="|x|; its derivative is sign(x)"),
    "leaky_relu": ActivationDef(
        _leaky_relu, params=(("negative_slope", 0.01),), doc="x for x > 0, negative_slope·x below (kinked)"
    ),
    "clamp": ActivationDef(
        lambda min, max: _clamp(min, max), params=(("min", -1.0), ("max", 1.0)), doc="x clamped to [min, max]"
    ),
    "softplus_beta": ActivationDef(
        _softplus_beta,
        params=(("beta", 1.0), ("threshold", 20.0)),
        doc="torch's softplus(x, beta, threshold): log(1+exp(beta·x))/beta, x above threshold/beta",
    ),
    "requ": ActivationDef(lambda: relu(x) ** 2, doc="relu(x)²"),
    "gelu": ActivationDef(lambda: x * ndtr(x), library="gelu", doc="x·Φ(x) (exact GELU)"),
    "elu": ActivationDef(lambda alpha: _elu(alpha), params=(("alpha", 1.0),), library="elu", doc="ELU"),
    "selu": ActivationDef(
        lambda: sp.Float(_SELU_SCALE) * _elu(_SELU_ALPHA), library="selu", doc="SELU (fixed α, λ)"
    ),
    "sine": ActivationDef(
        lambda w0: sp.sin(sp.Float(w0) * x) if w0 != int(w0) else sp.sin(sp.Integer(int(w0)) * x),
        params=(("w0", 30.0),),
        doc="sin(w0·x) (SIREN)",
    ),
}


# ---------------------------------------------------------------------------------------------------
# Pointwise function registry: canonical key -> (expression, display label)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointwiseFn:
    """A pointwise function as a value: its sympy expression in ``x`` (what it *is*: equality and
    hashing use only ``expr``, so swish, silu and ``x/(1+exp(-x))`` are one function), a human label
    (``swish``, ``swish'``, ``sine(w0=30)''``...) and an optional fused-library hint for backends.
    IR nodes hold these directly: a graph carries its own meaning and pickles without any registry."""

    expr: sp.Expr
    label: str = field(compare=False)
    library: str | None = field(default=None, compare=False)
    library_args: tuple[float, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        """Canonical text of the expression (deterministic; used in printed IR and sorting)."""
        return canonical_key(self.expr)

    @property
    def smooth(self) -> bool:
        return not self.expr.has(*KINKED, *DISCONTINUOUS)

    @property
    def continuous(self) -> bool:
        return not self.expr.has(*DISCONTINUOUS)


def canonical_key(expr: sp.Expr) -> str:
    return sp.sstr(expr, order="lex")


@functools.lru_cache(maxsize=4096)
def _derivative_expr(expr: sp.Expr) -> sp.Expr:
    # Dirac deltas (from sign' or Heaviside') are zero almost everywhere: the derivative of a kinked
    # function is taken pointwise, and the compile report flags the function as not smooth
    d = sp.diff(expr, x).replace(sp.DiracDelta, lambda *args: sp.Integer(0))
    for arg in sorted({a.args[0] for a in expr.atoms(sp.log) if a.args[0].has(x)}, key=sp.default_sort_key):
        if d != 0 and not d.has(log_domain(arg)):  # keep NaN where Φ is NaN (log of a negative)
            d = d * log_domain(arg)
    return d


def derivative(fn: PointwiseFn) -> PointwiseFn | None:
    """f' as a pointwise function labelled ``label'``; ``None`` where it is identically zero
    (relu'' = step' = 0 almost everywhere). Pure: derived once per expression by sympy, memoised."""
    d = _derivative_expr(fn.expr)
    if d == 0:
        return None
    return PointwiseFn(d, fn.label + "'")


@functools.lru_cache(maxsize=1)
def _library_of_expr() -> dict[sp.Expr, str]:
    """Expressions of the parameter-free library activations -> their fused-library name."""
    return {row.build(): row.library for row in ACTIVATIONS.values() if row.library and not row.params}


def activation(name: str, **params) -> PointwiseFn:
    """The pointwise function of a named activation with its parameters (defaults filled in)."""
    if name not in ACTIVATIONS:
        known = ", ".join(sorted(ACTIVATIONS))
        raise CompileError(f"unknown activation {name!r} (known: {known}, or a formula)")
    row = ACTIVATIONS[name]
    values = {p: float(params.get(p, default)) for p, default in row.params}
    expr = row.build(**values)
    label = name if not values else f"{name}({', '.join(f'{k}={_fmt(v)}' for k, v in values.items())})"
    return PointwiseFn(expr, label, row.library, tuple(values.values()))


def formula(text: str) -> PointwiseFn:
    """A user activation from a formula string (parsed by the whitelisting parser in ``formula.py``).
    A formula equal to a library activation (``x/(1+exp(-x))`` is swish) keeps the library hint."""
    expr = stabilize(parse_formula(text))
    return PointwiseFn(expr, f"formula[{canonical_key(expr)}]", _library_of_expr().get(expr))


def _fmt(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(v)


