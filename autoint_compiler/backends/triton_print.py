"""Print pointwise sympy expressions as Triton (``triton.language``) source. Strings only: no triton import.

``TritonPrinter`` is a ``sympy.printing.pycode.PythonCodePrinter`` whose symbols are given names, whose
numbers are plain float literals (weakly typed in Triton, so they follow the tensor's dtype), whose
powers are products (``tl`` has no ``**``) and whose functions come from one table, ``FUNCTIONS``:
``tl.*`` intrinsics where Triton has them (and the interpreter runs them), else a small ``@triton.jit``
helper of the generated module (``HELPERS``), written with ``tl`` core math only so the same text runs
compiled on a GPU and under ``TRITON_INTERPRET=1`` (which cannot call ``libdevice``). A function
without a row is a ``CompileError`` naming it. ``print_exprs`` shares subexpressions (``sympy.cse``).
"""

from __future__ import annotations

import math

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.pycode import PythonCodePrinter

from ..core import primitives as P
from ..errors import CompileError

#: sympy function -> Triton callable (``tl.*`` or a helper from ``HELPERS``)
FUNCTIONS: dict[type, str] = {
    sp.sin: "tl.sin",
    sp.cos: "tl.cos",
    sp.exp: "tl.exp",
    sp.log: "tl.log",
    sp.erf: "tl.erf",
    sp.Abs: "tl.abs",
    sp.tan: "_tan",
    sp.tanh: "_tanh",
    sp.sinh: "_sinh",
    sp.cosh: "_cosh",
    sp.atan: "_atan",
    sp.sign: "_sign",
    P.sigmoid: "tl.sigmoid",
    P.softplus: "_softplus",
    P.relu: "_relu",
    P.step: "_step",
    P.ndtr: "_ndtr",
    P.expm1_neg: "_expm1_neg",
    P.log_domain: "_log_domain",
}

#: the helpers, in the order the module defines them (each uses only earlier ones and ``tl``)
HELPERS: tuple[tuple[str, str], ...] = (
    (
        "_expm1",
        """def _expm1(x):
    # exp(x) - 1 without cancellation near 0 (Kahan: (u - 1) * x / log(u))
    u = tl.exp(x)
    um1 = u - 1.0
    r = tl.where(um1 == 0.0, x, um1 * x / tl.log(tl.where(um1 == 0.0, 2.0, u)))
    return tl.where(tl.abs(x) < 0.5, r, um1)""",
    ),
    (
        "_log1p",
        """def _log1p(x):
    # log(1 + x) without cancellation near 0 (Goldberg: log(u) * x / (u - 1))
    u = 1.0 + x
    d = u - 1.0
    return tl.where(d == 0.0, x, tl.log(u) * x / tl.where(d == 0.0, 1.0, d))""",
    ),
    (
        "_tanh",
        """def _tanh(x):
    e = _expm1(-2.0 * tl.abs(x))
    t = -e / (2.0 + e)
    return tl.where(x < 0.0, -t, t)""",
    ),
    (
        "_softplus",
        """def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)): never overflows (torch's threshold=20 shortcut differs by < 3e-9)
    return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))""",
    ),
    ("_relu", "def _relu(x):\n    return tl.maximum(x, 0.0)"),
    ("_step", "def _step(x):\n    return tl.where(x > 0.0, 1.0, 0.0).to(x.dtype)"),
    ("_sign", "def _sign(x):\n    return tl.where(x > 0.0, 1.0, tl.where(x < 0.0, -1.0, 0.0)).to(x.dtype)"),
    (
        "_ndtr",
        """def _ndtr(x):
    # standard normal CDF; the erf of the far tail is exactly +-1, so 0 or 1 there (torch: ~1e-300)
    return 0.5 + 0.5 * tl.erf(x * 0.7071067811865476)""",
    ),
    ("_expm1_neg", "def _expm1_neg(x):\n    return _expm1(tl.minimum(x, 0.0))"),
    ("_log_domain", "def _log_domain(x):\n    # 1, or NaN where log(x) is NaN\n    return 0.0 * tl.log(x) + 1.0"),
    ("_tan", "def _tan(x):\n    return tl.sin(x) / tl.cos(x)"),
    (
        "_sinh",
        """def _sinh(x):
    e = _expm1(tl.abs(x))
    s = 0.5 * e * (e + 2.0) / (e + 1.0)
    return tl.where(x < 0.0, -s, s)""",
    ),
    ("_cosh", "def _cosh(x):\n    e = tl.exp(tl.abs(x))\n    return 0.5 * (e + 1.0 / e)"),
    (
        "_atan",
        """def _atan(x):
    # argument reduction to |z| <= tan(pi/12), then an odd polynomial (Cephes atanf, ~2 ulp)
    a = tl.abs(x)
    big = a > 2.414213562373095
    mid = a > 0.4142135623730950
    z = tl.where(big, -1.0 / tl.where(big, a, 1.0), tl.where(mid, (a - 1.0) / (a + 1.0), a))
    base = tl.where(big, 1.5707963267948966, tl.where(mid, 0.7853981633974483, 0.0))
    z2 = z * z
    p = ((8.05374449538e-2 * z2 - 1.38776856032e-1) * z2 + 1.99777106478e-1) * z2 - 3.33329491539e-1
    r = base + z + z * z2 * p
    return tl.where(x < 0.0, -r, r)""",
    ),
)


def _float(v: float) -> str:
    f = float(v)
    if math.isnan(f) or math.isinf(f):
        raise CompileError(f"non-finite constant {f} in a pointwise expression")
    return repr(f)


class TritonPrinter(PythonCodePrinter):
    """Triton source for a pointwise sympy expression; ``names`` maps its symbols to variable names."""

    printmethod = "_tritoncode"
    language = "Triton"

    def __init__(self, names: dict[sp.Symbol, str]):
        super().__init__({"fully_qualified_modules": False, "standard": "python3"})
        self.names = names

    # -- atoms ---------------------------------------------------------------------------------------
    def _print_Symbol(self, e):
        if e not in self.names:
            raise CompileError(f"unbound symbol {e} in a pointwise expression")
        return self.names[e]

    def _print_Float(self, e):
        return _float(e)

    def _print_Integer(self, e):
        return _float(e)

    def _print_Rational(self, e):
        return _float(e)

    def _print_NumberSymbol(self, e):
        return _float(e.evalf(17))

    _print_Pi = _print_Exp1 = _print_EulerGamma = _print_NumberSymbol

    def _print_Half(self, e):
        return "0.5"

    def _print_One(self, e):
        return "1.0"

    def _print_Zero(self, e):
        return "0.0"

    def _print_NegativeOne(self, e):
        return "-1.0"

    def _print_ImaginaryUnit(self, e):
        raise CompileError("complex constant in a pointwise expression")

    # -- arithmetic ----------------------------------------------------------------------------------
    def _print_Pow(self, e, rational=False):
        base, ex = e.base, e.exp
        if base == sp.E:
            return f"tl.exp({self._print(ex)})"
        if ex.is_Number and float(ex).is_integer():
            n = int(ex)
            if n == 0:
                return "1.0"
            b = self.parenthesize(base, PRECEDENCE["Mul"])  # sums and products in parentheses
            prod = " * ".join([b] * abs(n))
            # parenthesised: the parent printer sees a Pow, and a Pow binds tighter than * and /
            return (b if n == 1 else f"({prod})") if n > 0 else f"(1.0 / ({prod}))"
        if ex == sp.Rational(1, 2):
            return f"tl.sqrt({self._print(base)})"
        if ex == -sp.Rational(1, 2):
            return f"tl.rsqrt({self._print(base)})"
        if ex.is_Number and float(2 * ex).is_integer():  # x**(k/2) = sqrt(x)**k
            n = int(2 * ex)
            root = f"tl.sqrt({self._print(base)})"
            prod = " * ".join([root] * abs(n))
            return f"({prod})" if n > 0 else f"(1.0 / ({prod}))"
        # general power of a positive base
        return f"tl.exp({self.parenthesize(ex, PRECEDENCE['Mul'])} * tl.log({self._print(base)}))"

    # -- functions -----------------------------------------------------------------------------------
    def _print_Function(self, e):
        for cls in type(e).__mro__:
            if cls in FUNCTIONS:
                return f"{FUNCTIONS[cls]}({', '.join(self._print(a) for a in e.args)})"
        raise CompileError(f"triton backend: no Triton lowering for the function {type(e).__name__!r}")

    def _print_Piecewise(self, e):
        raise CompileError("triton backend: no Triton lowering for the function 'Piecewise'")

    def _print_Heaviside(self, e):
        return f"_step({self._print(e.args[0])})"

    def _print_DiracDelta(self, e):
        return "0.0"


def _fn_methods():
    # PythonCodePrinter defines _print_sin etc. as math.* calls: send every function through the table
    for cls in (*FUNCTIONS, sp.Heaviside, sp.acos, sp.asin, sp.sqrt, sp.floor, sp.ceiling, sp.Max, sp.Min):
        if cls is not sp.Heaviside:
            setattr(TritonPrinter, f"_print_{cls.__name__}", TritonPrinter._print_Function)


_fn_methods()


def used_helpers(code: str) -> list[str]:
    """The helpers a piece of code calls, in definition order, with the helpers they call."""
    need: set[str] = set()
    texts = dict(HELPERS)
    todo = [name for name, _ in HELPERS if f"{name}(" in code]
    while todo:
        name = todo.pop()
        if name in need:
            continue
        need.add(name)
        todo += [other for other, _ in HELPERS if other != name and f"{other}(" in texts[name]]
    return [name for name, _ in HELPERS if name in need]


def to_triton(expr: sp.Expr, names: dict[sp.Symbol, str]) -> str:
    return TritonPrinter(names).doprint(_numeric(expr))


def _numeric(expr: sp.Expr) -> sp.Expr:
    """Numeric subexpressions (sqrt(2)/sqrt(pi), 3/2...) folded to floats; integer powers kept."""
    reps = {}
    for sub in sp.preorder_traversal(expr):
        if isinstance(sub, sp.Expr) and sub.is_number and not sub.is_Atom and not sub.is_Integer:
            reps[sub] = sp.Float(sub.evalf(17), 17)
    return expr.xreplace(reps) if reps else expr


def print_exprs(exprs: list[sp.Expr], names: dict[sp.Symbol, str], prefix: str = "t"):
    """Print expressions over named symbols, sharing subexpressions: ``([(temp, code)], [code])``."""
    names = dict(names)
    replacements, reduced = sp.cse(
        [_numeric(e) for e in exprs], symbols=sp.numbered_symbols(prefix, real=True), order="canonical"
    )
    temps = []
    for sym, sub in replacements:
        temps.append((str(sym), to_triton(sub, names)))
        names[sym] = str(sym)
    return temps, [to_triton(r, names) for r in reduced]
