"""Pointwise functions as sympy expressions of one symbol ``x``: the activation table, the safe formula
parser and the derivative cache.

Every activation is an expression in ``x`` built from sympy's own functions and a few stable primitives
defined here (``sigmoid``, ``softplus``, ``relu``, ``step``, ``ndtr``) whose ``fdiff`` gives the
numerically stable derivative (σ' = σ(1-σ), softplus' = σ, ...). Derivatives of any order are derived
once with ``sympy.diff`` and cached by the expression's canonical text, which is also the key the IR
stores, so equal functions hash-cons to one node.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass, replace

import sympy as sp

from .errors import CompileError

x = sp.Symbol("x", real=True)


class sigmoid(sp.Function):  # noqa: N801 - sympy function names are lower case
    """Logistic function; derivative in the stable form σ(1-σ)."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)


class softplus(sp.Function):  # noqa: N801
    """log(1 + e^u), printed as a stable library call; derivative σ(u)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


class step(sp.Function):  # noqa: N801
    """Heaviside step (0 at 0); derivative 0 almost everywhere. Marks a non-smooth function."""

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class relu(sp.Function):  # noqa: N801
    """max(u, 0); derivative step(u). Marks a kinked function."""

    def fdiff(self, argindex=1):
        return step(self.args[0])


class ndtr(sp.Function):  # noqa: N801
    """Standard normal CDF Φ(u); derivative exp(-u²/2)/√(2π) (finite for every u)."""

    def fdiff(self, argindex=1):
        u = self.args[0]
        return sp.exp(-(u**2) / 2) / sp.sqrt(2 * sp.pi)


class expm1_neg(sp.Function):  # noqa: N801
    """exp(min(u, 0)) - 1, ELU's negative branch; derivative exp(min(u, 0))·(1 - step(u)), which is 1 at
    u = 0 like torch's own ELU backward (so ELU with α = 1 is C¹ here too)."""

    def fdiff(self, argindex=1):
        u = self.args[0]
        return sp.exp(-relu(-u)) * (1 - step(u))


#: functions whose presence makes an expression non-smooth (a kink or a jump)
KINKED = (relu, sp.Abs, expm1_neg)
DISCONTINUOUS = (step, sp.sign)

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


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
    """A pointwise function: ``key`` (canonical sympy text, used for hash-consing), ``expr`` and a
    human label (``swish``, ``swish'``, ``sine(w0=30)''``...). ``library`` is a fused-primal hint."""

    key: str
    expr: sp.Expr
    label: str
    library: str | None = None
    library_args: tuple[float, ...] = ()

    @property
    def smooth(self) -> bool:
        return not self.expr.has(*KINKED, *DISCONTINUOUS)

    @property
    def continuous(self) -> bool:
        return not self.expr.has(*DISCONTINUOUS)


_REGISTRY: dict[str, PointwiseFn] = {}


def canonical_key(expr: sp.Expr) -> str:
    return sp.sstr(expr, order="lex")


def register(expr: sp.Expr, label: str, library: str | None = None, library_args=()) -> PointwiseFn:
    key = canonical_key(expr)
    fn = _REGISTRY.get(key)
    if fn is None:
        fn = PointwiseFn(key, expr, label, library, tuple(library_args))
        _REGISTRY[key] = fn
    return fn


def lookup(key: str) -> PointwiseFn:
    try:
        return _REGISTRY[key]
    except KeyError:
        raise CompileError(f"unknown pointwise function {key!r}: it was never registered") from None


@functools.lru_cache(maxsize=None)
def derivative(key: str) -> PointwiseFn | None:
    """The derivative of a registered pointwise function, derived once with sympy and registered;
    ``None`` where it is identically zero (relu'' = step' = 0 almost everywhere)."""
    fn = lookup(key)
    # Dirac deltas (from sign' or Heaviside') are zero almost everywhere: the derivative of a kinked
    # function is taken pointwise, and the compile report flags the function as not smooth
    d = sp.diff(fn.expr, x).replace(sp.DiracDelta, lambda *args: sp.Integer(0))
    if d == 0:
        return None
    return register(d, fn.label + "'")


def activation(name: str, **params) -> PointwiseFn:
    """The pointwise function of a named activation with its parameters (defaults filled in)."""
    if name not in ACTIVATIONS:
        known = ", ".join(sorted(ACTIVATIONS))
        raise CompileError(f"unknown activation {name!r} (known: {known}, or a formula)")
    row = ACTIVATIONS[name]
    values = {p: float(params.get(p, default)) for p, default in row.params}
    expr = row.build(**values)
    label = name if not values else f"{name}({', '.join(f'{k}={_fmt(v)}' for k, v in values.items())})"
    fn = register(expr, label, row.library, tuple(values.values()))
    # aliases (swish/silu) share the registry entry but keep the name the spec used
    return fn if fn.label == label else replace(fn, label=label)


def formula(text: str) -> PointwiseFn:
    """A user activation from a formula string (parsed by the whitelisting parser below)."""
    expr = stabilize(parse_formula(text))
    label = f"formula[{canonical_key(expr)}]"
    fn = register(expr, label)
    return fn if fn.label == label else replace(fn, label=label)


def _fmt(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(v)


# ---------------------------------------------------------------------------------------------------
# The formula parser: Python's ast, whitelisted, then sympy built from the tree (never sympify/eval).
# ---------------------------------------------------------------------------------------------------

FORMULA_FUNCTIONS = {
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "tanh": sp.tanh,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "atan": sp.atan,
    "erf": sp.erf,
    "abs": sp.Abs,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "relu": relu,
}
FORMULA_CONSTANTS = {"pi": sp.pi, "e": sp.E}
MAX_FORMULA_CHARS = 400
MAX_CONSTANT = 1e6
MAX_EXPONENT = 64


class FormulaError(ValueError):
    """A formula outside the accepted language (message says what is accepted)."""


def parse_formula(text: str) -> sp.Expr:
    """Parse an activation formula of ``x``: numbers, ``x``, ``pi``, ``e``, ``+ - * / **``, unary
    minus and calls of the functions in ``FORMULA_FUNCTIONS``. Anything else is refused."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("expected a non-empty formula string of x")
    if len(text) > MAX_FORMULA_CHARS:
        raise FormulaError(f"formula longer than {MAX_FORMULA_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"not a valid expression ({exc.msg} at column {exc.offset})") from None
    expr = _build(tree.body)
    if not expr.has(x):
        raise FormulaError("formula does not use x")
    return expr


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def _build(node: ast.AST) -> sp.Expr:
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise FormulaError(f"only numbers are allowed as constants, not {v!r}")
        if not math.isfinite(v) or abs(v) > MAX_CONSTANT:
            raise FormulaError(f"constant {v!r} out of range (|c| <= {MAX_CONSTANT:g})")
        return sp.Integer(v) if isinstance(v, int) else sp.Float(v)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return x
        if node.id in FORMULA_CONSTANTS:
            return FORMULA_CONSTANTS[node.id]
        raise FormulaError(f"unknown name {node.id!r} (only x, pi and e)")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _build(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _build(node.left), _build(node.right)
        if type(node.op) in _BINOPS:
            return _bounded(_BINOPS[type(node.op)](a, b))
        if isinstance(node.op, ast.Pow):
            if b.is_number and abs(float(b)) > MAX_EXPONENT:
                raise FormulaError(f"exponent {b} out of range (|p| <= {MAX_EXPONENT})")
            if a.is_number and b.is_number and a != 0:
                # bound the size of a constant power before sympy computes it exactly
                magnitude = float(b) * math.log10(abs(float(a)))
                if magnitude > MAX_MAGNITUDE:
                    raise FormulaError(f"constant {a}**{b} is too large (over 1e{MAX_MAGNITUDE})")
            return _bounded(a**b)
        raise FormulaError(f"operator {_syntax_name(node.op)} is not allowed (only + - * / **)")
    if isinstance(node, ast.Call):
        known = ", ".join(sorted(FORMULA_FUNCTIONS))
        if not isinstance(node.func, ast.Name):
            raise FormulaError(f"only calls of a function by name are allowed, not of {_syntax_name(node.func)}")
        if node.func.id not in FORMULA_FUNCTIONS:
            raise FormulaError(f"function {node.func.id!r} is not allowed (allowed: {known})")
        if node.keywords or len(node.args) != 1:
            raise FormulaError(f"{node.func.id}() takes exactly one positional argument")
        return FORMULA_FUNCTIONS[node.func.id](_build(node.args[0]))
    raise FormulaError(f"{_syntax_name(node)} is not allowed in a formula")


MAX_MAGNITUDE = 300
_SYNTAX_NAMES = {
    "Attribute": "attribute access (a.b)",
    "Subscript": "indexing (a[b])",
    "Lambda": "a lambda",
    "IfExp": "a conditional expression (a if b else c)",
    "JoinedStr": "an f-string",
    "Compare": "a comparison",
    "BoolOp": "and/or",
    "Call": "a call's result",
    "List": "a list",
    "Tuple": "a tuple",
    "Dict": "a dict",
    "Set": "a set",
    "ListComp": "a comprehension",
    "GeneratorExp": "a generator",
    "NamedExpr": "an assignment (:=)",
    "Starred": "unpacking (*a)",
    "Await": "await",
    "Mod": "%",
    "FloorDiv": "//",
    "MatMult": "@",
    "BitAnd": "&",
    "BitOr": "|",
    "BitXor": "^",
    "LShift": "<<",
    "RShift": ">>",
}


def _syntax_name(node: ast.AST) -> str:
    name = type(node).__name__
    return _SYNTAX_NAMES.get(name, name)


def _bounded(value: sp.Expr) -> sp.Expr:
    """A numeric subexpression must stay a finite float (a formula is printed as float literals)."""
    if value.is_number:
        try:
            v = abs(complex(value.evalf(17)))
        except (OverflowError, ValueError, TypeError):
            v = math.inf
        if not math.isfinite(v) or v > 10.0**MAX_MAGNITUDE:
            raise FormulaError(f"constant subexpression {sp.sstr(value)[:40]} is out of range (over 1e{MAX_MAGNITUDE})")
    return value


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Rewrite overflow-prone patterns into stable primitives before differentiating:
    log(1 + exp(u)) -> softplus(u), 1/(1 + exp(u)) -> sigmoid(-u), exp(u)/(1 + exp(u)) -> sigmoid(u)."""

    def exp_arg_of_one_plus_exp(e):
        if isinstance(e, sp.Add) and len(e.args) == 2 and sp.Integer(1) in e.args:
            other = e.args[0] if e.args[1] == 1 else e.args[1]
            if isinstance(other, sp.exp):
                return other.args[0]
        return None

    def is_log1pexp(e):
        return isinstance(e, sp.log) and exp_arg_of_one_plus_exp(e.args[0]) is not None

    expr = expr.replace(is_log1pexp, lambda e: softplus(exp_arg_of_one_plus_exp(e.args[0])))

    def is_inv1pexp(e):
        return isinstance(e, sp.Pow) and e.exp == -1 and exp_arg_of_one_plus_exp(e.base) is not None

    def is_exp_over_1pexp(e):
        if not isinstance(e, sp.Mul):
            return False
        dens = [a for a in e.args if is_inv1pexp(a)]
        return any(sp.exp(exp_arg_of_one_plus_exp(d.base)) in e.args for d in dens)

    def fold_exp_over(e):
        for d in (a for a in e.args if is_inv1pexp(a)):
            u = exp_arg_of_one_plus_exp(d.base)
            if sp.exp(u) in e.args:
                rest = [a for a in e.args if a not in (d, sp.exp(u))]
                return sp.Mul(*rest) * sigmoid(u)
        return e

    expr = expr.replace(is_exp_over_1pexp, fold_exp_over)
    expr = expr.replace(is_inv1pexp, lambda e: sigmoid(-exp_arg_of_one_plus_exp(e.base)))
    return expr
