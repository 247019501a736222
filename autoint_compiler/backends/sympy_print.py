"""Print sympy expressions of pointwise functions as source text (strings only: no torch import).

``TablePrinter`` is a sympy printer driven by per-target tables; ``TorchPrinter`` is PyTorch's table
(a Triton printer is another subclass). Deterministic (ordered terms and factors), precedence-aware,
with numeric subexpressions folded to float literals. ``print_group`` prints several expressions of
the same variable at once, sharing common subexpressions through ``sympy.cse``; ``split_long`` lays a
long assignment out over several lines.
"""

from __future__ import annotations

import ast
import math
import re
import sys

import sympy as sp
from sympy.printing.str import StrPrinter

from ..core import activations as A
from ..errors import CompileError

#: fused library primals (activation table's ``library`` hint) -> call template
LIBRARY = {
    "silu": "F.silu({x})",
    "sigmoid": "torch.sigmoid({x})",
    "tanh": "torch.tanh({x})",
    "softplus": "F.softplus({x})",
    "relu": "torch.relu({x})",
    "gelu": "F.gelu({x})",
    "elu": "F.elu({x}, alpha={a0})",
    "selu": "F.selu({x})",
}


def library_call(library: str, **fmt) -> str:
    """The PyTorch call of a fused library primal (an activation row's ``library`` hint)."""
    if library not in LIBRARY:
        raise CompileError(
            f"torch backend: no PyTorch call for the library function {library!r} (an activation's library= "
            f"hint): add a row to backends/sympy_print.py: LIBRARY, or drop the hint"
        )
    return LIBRARY[library].format(**fmt)


_PREC_ADD, _PREC_MUL, _PREC_NEG, _PREC_POW, _PREC_ATOM = 1, 2, 3, 4, 5


def float_literal(v: float, backend: str = "") -> str:
    """A finite constant as an exact Python float literal (a non-finite one is a CompileError)."""
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        raise CompileError(f"{backend + ' backend: ' if backend else ''}non-finite constant {v} cannot be emitted")
    return repr(v)


def _float(v) -> str:
    f = float(v)
    return repr(int(f)) if f.is_integer() and abs(f) < 1e15 else repr(f)


class TablePrinter(StrPrinter):
    """A sympy printer for elementwise code, driven by tables: a target is a subclass that sets
    ``FUNCTIONS`` (sympy function class -> callable), ``SQRT``, ``EXP``, ``STEP``, ``EXPM1_NEG`` and
    ``LOG_DOMAIN``, so a new backend adds a table, not a printer.

    Deterministic (lexicographically ordered terms and factors), precedence-aware (each piece knows
    its precedence, parentheses come from structure), numbers as float literals; symbols print as
    the names given in ``names``."""

    FUNCTIONS: dict = {}
    SQRT = "sqrt({})"
    EXP = "exp({})"
    STEP = "step({})"
    EXPM1_NEG = "expm1_neg({})"
    LOG_DOMAIN = "log_domain({})"
    TARGET = "generic"

    def __init__(self, names: dict[sp.Symbol, str]):
        super().__init__({"order": "lex"})
        self.names = dict(names)

    def doprint(self, expr) -> str:
        return self.code(expr)[0]

    def wrap(self, e, prec: int) -> str:
        s, p = self.code(e)
        return s if p >= prec else f"({s})"

    def code(self, e: sp.Expr) -> tuple[str, int]:  # noqa: C901 - one case per expression kind
        if e.is_Symbol:
            if e not in self.names:
                raise CompileError(f"unbound symbol {e} in a pointwise expression")
            return self.names[e], _PREC_ATOM
        if e.is_number:
            v = complex(e.evalf(17))
            if v.imag != 0:
                raise CompileError(f"complex constant {e} in a pointwise expression")
            s = _float(v.real)
            return s, (_PREC_NEG if s.startswith("-") else _PREC_ATOM)
        if isinstance(e, sp.Add):
            terms = e.as_ordered_terms()
            text = self.code(terms[0])[0]
            for t in terms[1:]:
                coeff, _ = t.as_coeff_Mul()
                sign, t = (" - ", -t) if coeff.is_negative else (" + ", t)
                s, prec = self.code(t)
                text += sign + (s if prec > _PREC_ADD else f"({s})")
            return text, _PREC_ADD
        if isinstance(e, sp.Mul):
            coeff, _ = e.as_coeff_Mul()
            if coeff.is_negative:
                s, prec = self.code(-e)  # -(a * b) prints as -a * b: same value, fewer parentheses
                return "-" + (s if prec >= _PREC_MUL else f"({s})"), _PREC_NEG
            num, den = [], []
            for f in e.as_ordered_factors():
                if isinstance(f, sp.Pow) and f.exp.is_number and f.exp.is_negative:
                    den.append(f.base ** (-f.exp))
                elif f.is_Rational and f.q != 1:
                    if f.p != 1:
                        num.append(sp.Integer(f.p))
                    den.append(sp.Integer(f.q))
                else:
                    num.append(f)
            text = " * ".join(self.wrap(f, _PREC_MUL) for f in num) if num else "1"
            for d in den:
                text += " / " + self.wrap(d, _PREC_POW)
            return text, _PREC_MUL
        if isinstance(e, sp.Pow):
            base, ex = e.base, e.exp
            if ex == sp.Rational(1, 2):
                return self.SQRT.format(self.code(base)[0]), _PREC_ATOM
            if ex.is_number and ex.is_negative:
                return f"1 / {self.wrap(base ** (-ex), _PREC_POW)}", _PREC_MUL
            if ex == 2 and base.is_Symbol:
                s = self.code(base)[0]
                return f"{s} * {s}", _PREC_MUL
            if base == sp.E:
                return self.EXP.format(self.code(ex)[0]), _PREC_ATOM
            return self.power(base, ex), _PREC_POW
        if isinstance(e, A.expm1_neg):
            return self.EXPM1_NEG.format(self.code(e.args[0])[0]), _PREC_ATOM
        if isinstance(e, A.step):
            return self.step(e.args[0]), _PREC_ATOM
        if isinstance(e, A.log_domain):  # 1, or NaN where log(u) is NaN
            return self.LOG_DOMAIN.format(self.code(e.args[0])[0]), _PREC_ATOM
        fn = self.FUNCTIONS.get(type(e))
        if fn is None:
            raise CompileError(f"no {self.TARGET} printing rule for sympy function {type(e).__name__}")
        return f"{fn}({', '.join(self.code(a)[0] for a in e.args)})", _PREC_ATOM

    def power(self, base, ex) -> str:
        return f"{self.wrap(base, _PREC_POW + 1)} ** {self.wrap(ex, _PREC_POW + 1)}"

    def step(self, arg) -> str:
        return self.STEP.format(self.code(arg)[0])


class TorchPrinter(TablePrinter):
    """PyTorch: public ``torch.*``/``F.*`` calls only."""

    TARGET = "PyTorch"
    FUNCTIONS = {
        sp.sin: "torch.sin",
        sp.cos: "torch.cos",
        sp.tan: "torch.tan",
        sp.exp: "torch.exp",
        sp.log: "torch.log",
        sp.tanh: "torch.tanh",
        sp.sinh: "torch.sinh",
        sp.cosh: "torch.cosh",
        sp.atan: "torch.atan",
        sp.erf: "torch.erf",
        sp.Abs: "torch.abs",
        sp.sign: "torch.sign",
        A.sigmoid: "torch.sigmoid",
        A.softplus: "F.softplus",
        A.relu: "torch.relu",
        A.ndtr: "torch.special.ndtr",
    }
    SQRT = "torch.sqrt({})"
    EXP = "torch.exp({})"
    EXPM1_NEG = "torch.expm1(torch.clamp({}, max=0))"
    LOG_DOMAIN = "(0 * torch.log({}) + 1)"

    def power(self, base, ex) -> str:
        b, e = self.wrap(base, _PREC_POW + 1), self.wrap(ex, _PREC_POW + 1)
        simple = all(re.fullmatch(r"-?([A-Za-z_][A-Za-z_0-9.]*|[0-9.]+)", s) for s in (b, e))
        return f"{b}**{e}" if simple else f"{b} ** {e}"  # as ruff format writes a power

    def step(self, arg) -> str:
        source = self.names[sorted(arg.free_symbols, key=str)[0]]  # the dtype of an input tensor
        return f"({self.code(arg)[0]} > 0).to({source}.dtype)"


def to_torch(expr: sp.Expr, names: dict[sp.Symbol, str]) -> str:
    return TorchPrinter(names).doprint(expr)


def _cse(exprs: list[sp.Expr], prefix: str):
    """``sympy.cse`` with numeric subexpressions and negations of one symbol folded back in (a
    constant is a literal, not a tensor; ``-t3`` is written where it is read, not as ``t6 = -t3``)."""
    replacements, reduced = sp.cse(exprs, symbols=sp.numbered_symbols(prefix, real=True), order="canonical")
    inline = {}
    kept = []
    for sym, sub in replacements:
        sub = sub.xreplace(inline)
        if sub.is_number or _negated_symbol(sub):
            inline[sym] = sub
        else:
            kept.append((sym, sub))
    # number the temporaries that remain 0, 1, 2, ... (no gaps where one was folded back in)
    rename = {sym: sp.Symbol(f"{prefix}{k}", real=True) for k, (sym, _) in enumerate(kept)}
    kept = [(rename[sym], sub.xreplace(rename)) for sym, sub in kept]
    return kept, [r.xreplace(inline).xreplace(rename) for r in reduced]


def _negated_symbol(e: sp.Expr) -> bool:
    return isinstance(e, sp.Mul) and len(e.args) == 2 and e.args[0] == -1 and e.args[1].is_Symbol


def print_group(
    exprs: list[sp.Expr], var: str, prefix: str, width: int | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """Print expressions of ``x`` (with ``x`` named ``var``): returns the shared temporaries
    ``[(name, code)]`` and one code string per expression (each at most ``width`` long, if given)."""
    return print_exprs(exprs, {A.x: var}, prefix, width=width)


#: the column limit of generated modules (the project's tests run ruff on them with 110)
LINE_LIMIT = 110


def wrap_list(
    pad: str, head: str, items: list[str], tail: str, *, bare: bool = False, force: bool = False
) -> list[str]:
    """``head + items joined by ', ' + tail`` on one line when it fits in :data:`LINE_LIMIT` columns,
    else the head line (it ends in an open bracket, or in ``(`` and a fixed first argument such as
    ``def forward(ctx, ``), the items filled into indented lines, and ``tail``. ``bare``: the one-line
    form leaves out the brackets (the last of ``head``, the first of ``tail``): ``return a, b``, a
    tuple target ``a, b = ...``. ``force``: never one line."""
    one = f"{pad}{head}{', '.join(items)}{tail}"
    if bare:
        one = f"{pad}{head[:-1]}{', '.join(items)}{tail[1:]}"
    if len(one) <= LINE_LIMIT and not force:
        return [one]
    inner, lines, cur = pad + "    ", [f"{pad}{head.rstrip()}"], ""
    for item in items:
        piece = item + ","
        if cur and len(inner) + len(cur) + 1 + len(piece) > LINE_LIMIT:
            lines.append(inner + cur)
            cur = piece
        else:
            cur = f"{cur} {piece}" if cur else piece
    if cur:
        lines.append(inner + cur)
    return lines + [f"{pad}{tail}"]


def split_long(name: str, code: str, limit: int = 96) -> list[str]:
    """``name = code`` as one line or, past ``limit`` columns, as a parenthesised block broken the way a
    person would: at top-level ``+``/``-``, else ``*``/``/``, else between the arguments of the outer
    call; pieces that are still too long are broken again, one indent deeper. The layout follows the
    expression's syntax tree (Python's ``ast``), never bracket counting; the target ``name`` may be a
    tuple of names."""
    line = f"{name} = {code}"
    if len(line) <= limit:
        return [line]
    # high orders (∂⁹Φ: the 9th derivative of an activation) print sums hundreds of terms deep, and
    # ast.unparse recurses once per operator: lift Python's recursion limit for the layout only
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 50_000))
    try:
        body = _layout(ast.parse(code, mode="eval").body, 4, limit)
    finally:
        sys.setrecursionlimit(old)
    if len(body) == 1:
        return [line]
    return [f"{name} = ("] + body + [")"]


_ADDITIVE = (ast.Add, ast.Sub)
_MULTIPLICATIVE = (ast.Mult, ast.Div)
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _chain(node: ast.expr, ops: tuple) -> list[tuple[str, ast.expr]]:
    """A left-nested chain ``a + b - c`` as [("", a), ("+", b), ("-", c)] (right operands kept whole)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ops):
        return _chain(node.left, ops) + [(_SYMBOL[type(node.op)], node.right)]
    return [("", node)]


def _operand(node: ast.expr, ops: tuple, right: bool) -> str:
    """An operand's text, parenthesised where it binds looser than the chain's operator (or as loose,
    on the right: ``a - (b + c)``, ``a / (b * c)``)."""
    text = ast.unparse(node)
    if isinstance(node, ast.BinOp) and isinstance(node.op, _ADDITIVE):
        loose = ops is _MULTIPLICATIVE or right
    elif isinstance(node, ast.BinOp) and isinstance(node.op, _MULTIPLICATIVE):
        loose = ops is _MULTIPLICATIVE and right
    else:
        loose = isinstance(node, (ast.IfExp, ast.Lambda, ast.BoolOp, ast.Compare))
    return f"({text})" if loose else text


def _layout(node: ast.expr, indent: int, limit: int, prefix: str = "", suffix: str = "") -> list[str]:
    pad = " " * indent
    text = ast.unparse(node)
    if indent + len(prefix) + len(text) + len(suffix) <= limit:
        return [f"{pad}{prefix}{text}{suffix}"]
    for ops in (_ADDITIVE, _MULTIPLICATIVE):
        chain = _chain(node, ops)
        if len(chain) > 1:
            out = []
            for k, (op, part) in enumerate(chain):
                head = (prefix if k == 0 else "") + (f"{op} " if op else "")
                tail = suffix if k == len(chain) - 1 else ""
                piece = _operand(part, ops, right=k > 0)
                if indent + len(head) + len(piece) + len(tail) <= limit:
                    out.append(f"{pad}{head}{piece}{tail}")
                elif piece.startswith("(") and not ast.unparse(part).startswith("("):  # a parenthesised operand
                    out += [f"{pad}{head}("] + _layout(part, indent + 4, limit) + [f"{pad}){tail}"]
                else:
                    out += _layout(part, indent, limit, head, tail)
            return out
    if isinstance(node, ast.Call) and (node.args or node.keywords):
        out = [f"{pad}{prefix}{ast.unparse(node.func)}("]
        for arg in node.args:
            out += _layout(arg, indent + 4, limit, "", ",")
        for kw in node.keywords:
            out += _layout(kw.value, indent + 4, limit, f"{kw.arg}=", ",")
        return out + [f"{pad}){suffix}"]
    return [f"{pad}{prefix}{text}{suffix}"]


def print_exprs(
    exprs: list[sp.Expr], names: dict[sp.Symbol, str], prefix: str, printer=TorchPrinter, width: int | None = None
):
    """Print expressions over named symbols, sharing subexpressions: ``([(temp, code)], [code])``.
    With ``width``, no code is longer than that: a longer expression gets more temporaries (its largest
    pieces, named in turn), so every statement is one line, as a person would write it."""
    p = printer(names)
    replacements, reduced = _cse(exprs, prefix)
    if width is not None:
        replacements, reduced = _fit(replacements, reduced, p, width, prefix)
        # number the temporaries in the order they are computed
        rename = {sym: sp.Symbol(f"{prefix}{k}", real=True) for k, (sym, _) in enumerate(replacements)}
        replacements = [(rename[sym], sub.xreplace(rename)) for sym, sub in replacements]
        reduced = [r.xreplace(rename) for r in reduced]
    temps = []
    for sym, sub in replacements:
        temps.append((str(sym), p.doprint(sub)))
        p.names[sym] = str(sym)
    return temps, [p.doprint(r) for r in reduced]


def _fit(replacements, reduced, p: TablePrinter, width: int, prefix: str):
    """Split every expression whose printed code is longer than ``width`` by naming its largest piece
    (or, for a long sum or product of small terms, its first half) as a new temporary, until it fits."""
    taken = {str(s) for s, _ in replacements} | set(p.names.values())
    counter = iter(range(len(replacements), 1 << 30))
    names = dict(p.names)

    def fresh() -> sp.Symbol:
        while True:
            sym = sp.Symbol(f"{prefix}{next(counter)}", real=True)
            if str(sym) not in taken:
                taken.add(str(sym))
                return sym

    printed: dict[sp.Expr, int] = {}  # a symbol's name never changes once given: lengths can be kept

    def length(e) -> int:
        n = printed.get(e)
        if n is None:
            q = type(p)({**names, **{s: str(s) for s in e.free_symbols if s not in names}})
            n = printed[e] = len(q.doprint(e))
        return n

    def shrink(e):
        out = []
        while length(e) > width:
            piece = _piece(e, length, width)
            if piece is None:
                break
            part, rebuild = piece
            sym = fresh()
            names[sym] = str(sym)
            shorter = rebuild(sym)
            if length(shorter) >= length(e):  # naming it would not shorten the line: stop here
                del names[sym]
                break
            done, part = shrink(part)
            out += done + [(sym, part)]
            e = shorter
        return out, e

    temps = []
    for sym, sub in replacements:
        done, sub = shrink(sub)
        temps += done + [(sym, sub)]
        names[sym] = str(sym)
    fitted = []
    for r in reduced:
        done, r = shrink(r)
        temps += done
        fitted.append(r)
    return temps, fitted


def _piece(e: sp.Expr, length, width: int):
    """(the piece of ``e`` to name, how to rebuild ``e`` from its symbol), or None if ``e`` has none."""
    args = list(
        e.as_ordered_terms() if isinstance(e, sp.Add) else e.as_ordered_factors() if isinstance(e, sp.Mul) else e.args
    )
    if not args:
        return None
    compound = [a for a in args if not a.is_Atom]
    biggest = max(compound, key=length, default=None)
    if isinstance(e, (sp.Add, sp.Mul)) and len(args) > 2 and (biggest is None or length(biggest) < width // 2):
        cut = max(2, len(args) // 2)  # a piece of one term would rename it forever
        half, rest = args[:cut], args[cut:]
        return e.func(*half), lambda s: e.func(s, *rest)
    if biggest is None:
        return None
    return biggest, lambda s: e.xreplace({biggest: s})


def layout(target: str | None, code: str, indent: int, limit: int = 100) -> list[str]:
    """``target = code`` (or the expression statement ``code``) as lines, without the ``indent`` they
    will get, that ``ruff format`` keeps as they are: one line if it fits within ``limit``, else a
    call's arguments one per line with a trailing comma (recursively, for an argument that is itself a
    long call or list). Any other long expression falls back to ``split_long``; generated code avoids
    those (``print_exprs(width=...)`` names pieces of long expressions instead)."""
    prefix = "" if target is None else f"{target} = "
    if indent + len(prefix) + len(code) <= limit:
        return [prefix + code]
    node = ast.parse(code, mode="eval").body
    if not isinstance(node, ast.Call):
        return split_long(target or "_", code, limit - indent)
    return _exploded(node, code, indent, limit, prefix, "")


def _exploded(node: ast.expr, code: str, indent: int, limit: int, prefix: str, suffix: str, pad: int = 0) -> list[str]:
    text = ast.get_source_segment(code, node)
    sp_ = " " * pad
    if indent + pad + len(prefix) + len(text) + len(suffix) <= limit or not isinstance(node, (ast.Call, ast.List)):
        return [f"{sp_}{prefix}{text}{suffix}"]
    if isinstance(node, ast.List):
        out = [f"{sp_}{prefix}["]
        if len(node.elts) == 1:  # a lone element: ruff writes no trailing comma
            out += _exploded(node.elts[0], code, indent, limit, "", "", pad + 4)
        else:
            for elt in node.elts:
                out += _exploded(elt, code, indent, limit, "", ",", pad + 4)
        return out + [f"{sp_}]{suffix}"]
    out = [f"{sp_}{prefix}{ast.get_source_segment(code, node.func)}("]
    for arg in node.args:
        out += _exploded(arg, code, indent, limit, "", ",", pad + 4)
    for kw in node.keywords:
        out += _exploded(kw.value, code, indent, limit, f"{kw.arg}=" if kw.arg else "**", ",", pad + 4)
    return out + [f"{sp_}){suffix}"]
