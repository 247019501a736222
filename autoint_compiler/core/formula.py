"""The formula parser: Python's ``ast``, whitelisted, then sympy built from the tree (never
``sympify``/``eval``: a formula from a spec is a hostile string), and ``stabilize``, which rewrites
overflow-prone patterns into the stable primitives before anything is differentiated."""

from __future__ import annotations

import ast
import math

import sympy as sp

from .primitives import relu, sigmoid, softplus, x

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
#: nesting depth of calls and operators in a formula (``sin(sin(sin(x)))`` has depth 4)
MAX_FORMULA_DEPTH = 12
#: nodes of the parsed formula (numbers, names, operators, calls)
MAX_FORMULA_NODES = 120
#: x-dependent exponents inside x-dependent exponents (``x**x`` is 1, a power tower ``x**x**x`` 2)
MAX_POWER_NESTING = 1
#: operations (sympy ``count_ops``) of the highest derivative the compiler will need; compile time
#: grows with it (the fused backward differentiates it once more and prints it)
MAX_DERIVATIVE_OPS = 1500


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
    except (RecursionError, MemoryError, ValueError):  # pragma: no cover - 400 characters cannot nest that deep
        raise FormulaError("formula nests too deeply") from None
    _check_shape(tree.body)
    expr = _build(tree.body)
    if not expr.has(x):
        raise FormulaError("formula does not use x")
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan, sp.I):
        raise FormulaError("formula has an infinite, undefined or complex constant part")
    return expr


def _check_shape(root: ast.AST) -> None:
    """Depth, size and power-tower limits, checked on the syntax tree before sympy sees it."""
    count = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_FORMULA_DEPTH:
            raise FormulaError(f"formula nests deeper than {MAX_FORMULA_DEPTH} levels")
        if count > MAX_FORMULA_NODES:
            raise FormulaError(f"formula has more than {MAX_FORMULA_NODES} terms, operators and calls")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node) if not _is_context(child))
    _power_nesting(root, 0)


def _is_context(node: ast.AST) -> bool:
    return isinstance(node, (ast.expr_context, ast.operator, ast.unaryop))


def _uses_x(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "x" for n in ast.walk(node))


def _power_nesting(node: ast.AST, level: int) -> None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and _uses_x(node.right):
        level += 1
        if level > MAX_POWER_NESTING:
            raise FormulaError("power towers (an exponent with x inside an exponent with x) are not allowed")
    for child in ast.iter_child_nodes(node):
        _power_nesting(child, level)


def check_derivative_cost(expr: sp.Expr, order: int) -> None:
    """Refuse a formula whose ``order``-th derivative is too large to compile in reasonable time
    (``MAX_DERIVATIVE_OPS`` operations). ``order`` is the number of integration variables."""
    d = expr
    for k in range(max(0, int(order))):
        d = sp.diff(d, x)
        ops = sp.count_ops(d)
        if ops > MAX_DERIVATIVE_OPS:
            raise FormulaError(
                f"derivative {k + 1} of the formula has {ops} operations (at most {MAX_DERIVATIVE_OPS}); "
                "simplify the formula or integrate over fewer variables"
            )


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
        if (isinstance(v, float) and not math.isfinite(v)) or abs(v) > MAX_CONSTANT:
            shown = repr(v) if len(repr(v)) <= 24 else f"{repr(v)[:12]}... ({len(repr(v))} digits)"
            raise FormulaError(f"constant {shown} out of range (|c| <= {MAX_CONSTANT:g})")
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
        if isinstance(node.op, ast.Div) and b.is_number and b == 0:
            raise FormulaError("division by zero")
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
        return _bounded(FORMULA_FUNCTIONS[node.func.id](_build(node.args[0])))
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
    if value.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise FormulaError(f"constant subexpression {sp.sstr(value)[:40]} is infinite or undefined")
    if value.is_number:
        try:
            c = complex(value.evalf(17))
            v = abs(c)
        except (OverflowError, ValueError, TypeError):
            c, v = 0j, math.inf
        if math.isfinite(v) and abs(c.imag) > 1e-12 * max(1.0, v):
            raise FormulaError(f"constant subexpression {sp.sstr(value)[:40]} is complex (only real values)")
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
