"""The op definitions: every IR op is defined once, here, JAX-style — its arity, attribute schema,
width inference, printed form, elementwise meaning (a sympy expression, where it has one), its
forward-mode (JVP) rule, its Taylor-mode rule where it is nonlinear, and a small example that uses
it, side by side.

A JVP rule receives the builder, the node id and the tangent map ``T`` (node id -> tangent node id,
or ``None`` for a tangent that is identically zero) and returns the node's tangent. Rules only emit
ops that have rules themselves, so deriving twice gives mixed and repeated partials.

An op with an elementwise meaning (``ELEMENTWISE``) needs nothing else: fusion regions absorb it,
and every backend and the interpreter lower it from that sympy expression. Any other op needs one
lowering per backend (``backends/torch_backend.py: LOWER``, ``backends/triton_backend.py:
NODE_LOWER``) and an evaluator in the reference interpreter (``interpret.py: EVAL``).
``tests/test_op_completeness.py`` builds each op's ``example`` into a network and runs it through the
interpreter and every registered backend, so a missing piece fails there, naming the op. See
``docs/ARCHITECTURE.md`` for the recipes. Torch-free; no import of ``ir`` (which imports this module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import sympy as sp

from ..errors import CompileError
from . import activations

#: the IR builder (``ir.Builder``) the rules build nodes with; not imported: ``ir`` imports this module
Builder = Any
Tangents = dict[int, Optional[int]]
Rule = Callable[[Builder, int, Tangents], Optional[int]]
#: ``example(b, h, t)``: a node using the op, built with builder ``b`` from ``h`` (a batched node of
#: width 3 that depends on the integration variable ``t``, an ``input`` node of width 1)
Example = Callable[[Builder, int, int], int]


def num(v: float) -> str:
    """A number as printed in IR text: integers without a decimal point."""
    return repr(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: int | None  # None: one or more inputs
    attrs: tuple[str, ...]  # attribute names every node of this op carries
    width: Callable[[list[int], dict], int]  # output features from input widths and attributes
    doc: str
    show: Callable[[dict, object], str] | None = None  # bracketed attribute text of the printed form
    elementwise: Callable[[list[sp.Expr], dict], sp.Expr] | None = None  # meaning on scalars
    printed: Callable[[dict, str], str] | None = None  # the whole printed form, where not op[show](args)
    jvp: Rule | None = None
    # higher orders (Taylor mode, differentiate.derive_jet): an op linear in its inputs maps the j-th
    # coefficients through its own JVP rule; a nonlinear one has a jet rule (Leibniz, Faà di Bruno)
    linear: bool = True
    jet: Callable | None = None
    example: Example | None = None  # a small use of the op (tests/test_op_completeness.py runs it)

    def describe(self, attrs: dict, args: str, g) -> str:
        if self.printed is not None:
            return self.printed(attrs, args)
        inner = self.show(attrs, g) if self.show else ""
        return f"{self.name}{f'[{inner}]' if inner else ''}({args})"


OPS: dict[str, OpDef] = {}


def defop(
    name: str,
    arity: int | None,
    attrs: tuple[str, ...],
    width,
    doc: str,
    show=None,
    elementwise=None,
    printed=None,
    linear: bool = True,
    example: Example | None = None,
):
    OPS[name] = OpDef(name, arity, attrs, width, doc, show, elementwise, printed, linear=linear, example=example)


def defjet(name: str):
    """Attach the Taylor-mode rule of a nonlinear op (decorator): ``rule(b, nid, D, j)`` returns the
    j-th derivative coefficient, ``D[n][i]`` being node n's i-th (``None``: identically zero)."""

    def register(rule):
        OPS[name] = OpDef(**{**OPS[name].__dict__, "jet": rule})
        return rule

    return register


def defjvp(name: str):
    """Attach the JVP rule of an op defined above (decorator)."""

    def register(rule: Rule) -> Rule:
        OPS[name] = OpDef(**{**OPS[name].__dict__, "jvp": rule})
        return rule

    return register


def op_def(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise CompileError(f"unknown op {name!r}: it has no definition in ops.py") from None


def rule_for(op: str) -> Rule:
    rule = op_def(op).jvp
    if rule is None:
        raise CompileError(f"no differentiation rule for op {op!r}: add one with @defjvp({op!r}) in ops.py")
    return rule


def _broadcast(op: str, widths: list[int]) -> int:
    out = max(widths)
    if any(w not in (1, out) for w in widths):
        raise CompileError(f"{op}: input widths {widths} do not broadcast (equal, or 1)")
    return out


def _t(b: Builder, T: Tangents, nid: int, k: int = 0) -> Optional[int]:
    return T[b.g.inputs_of(nid)[k]]


def _zero(b: Builder, nid: int, T: Tangents) -> None:
    """Ops whose value does not depend on the integration variables through their inputs."""
    return None


def _freqs(a: dict, g=None) -> str:
    fr = ", ".join(num(f) for f in a["freqs"][:4]) + (", ..." if len(a["freqs"]) > 4 else "")
    return f"freqs=({fr})"


# --- leaves ------------------------------------------------------------------------------------------

defop(
    "input",
    0,
    ("name", "start", "stop"),
    lambda w, a: a["stop"] - a["start"],
    "columns start:stop of x",
    printed=lambda a, args: f"input[{a['name']}](x[:, {a['start']}:{a['stop']}])",
    example=lambda b, h, t: b.add(h, t),
)
defjvp("input")(_zero)  # derive() seeds the integration variable's tangent with 1


def _show_constant(a: dict, g=None) -> str:
    vals = a["value"]
    return ", ".join(num(v) for v in vals[:6]) + (f", ... ({len(vals)} values)" if len(vals) > 6 else "")


defop(
    "constant",
    0,
    ("value",),
    lambda w, a: len(a["value"]),
    "a constant row [1, width]",
    printed=lambda a, args: f"constant({_show_constant(a)})",
    example=lambda b, h, t: b.mul(h, b.const([0.5, -1.0, 2.0])),
)
defjvp("constant")(_zero)

defop(
    "wcol",
    0,
    ("param", "col", "out"),
    lambda w, a: a["out"],
    "column 'col' of weight 'param' as a row [1, out] (a parameter view)",
    show=lambda a, g: f"{a['param']}, col={a['col']}",
    # d/dt of a layer on t alone: the tangent is weight column 0 (Builder.linear folds W @ 1 to it)
    example=lambda b, h, t: b.mul(h, b.linear(t, "l0", cols=(0, 1))),
)
defjvp("wcol")(_zero)

# --- linear algebra ----------------------------------------------------------------------------------

defop(
    "linear",
    1,
    ("param", "cols", "bias", "out"),
    lambda w, a: a["out"],
    "W[:, cols] @ h (+ b): weights shared by name 'param'",
    show=lambda a, g: (
        a["param"]
        + (
            ""
            if tuple(a["cols"]) == (0, g.graph["params"][a["param"]].inp)
            else f", cols={a['cols'][0]}:{a['cols'][1]}"
        )
        + ("" if a["bias"] else ", no bias")
    ),
    example=lambda b, h, t: b.linear(h, "l0", cols=(1, 4), bias=False),  # weights shared with h's layer
)


@defjvp("linear")
def _linear(b: Builder, nid: int, T: Tangents) -> Optional[int]:
    # d(W h + c) = W dh; over a concat, only the columns of the parts with a tangent are multiplied
    g = b.g
    a = g.attrs(nid)
    (src,) = g.inputs_of(nid)
    if T[src] is None:
        return None
    lo = a["cols"][0]
    if g.op(src) == "concat" and any(T[p] is None for p in g.inputs_of(src)):
        terms, run, start, off = [], [], lo, lo
        for p in g.inputs_of(src):  # one GEMM per run of consecutive parts that have a tangent
            if T[p] is None:
                if run:
                    terms.append(b.linear(b.concat(run), a["param"], cols=(start, off), bias=False))
                run, start = [], off + g.width(p)
            else:
                run.append(T[p])
            off += g.width(p)
        if run:
            terms.append(b.linear(b.concat(run), a["param"], cols=(start, off), bias=False))
        return b.add_all(terms)
    return b.linear(T[src], a["param"], cols=tuple(a["cols"]), bias=False)


defop("sum", 1, (), lambda w, a: 1, "sum over features", example=lambda b, h, t: b.mul(h, b.sum(b.mul(h, h))))


@defjvp("sum")
def _sum(b, nid, T):
    t = _t(b, T, nid)
    return None if t is None else b.sum(t)


# --- elementwise arithmetic ---------------------------------------------------------------------------

defop(
    "add",
    2,
    (),
    lambda w, a: _broadcast("add", w),
    "a + b (broadcasting width 1)",
    elementwise=lambda u, a: u[0] + u[1],
    example=lambda b, h, t: b.add(h, b.pointwise(h, activations.activation("sin"))),
)
defop(
    "sub",
    2,
    (),
    lambda w, a: _broadcast("sub", w),
    "a - b",
    elementwise=lambda u, a: u[0] - u[1],
    example=lambda b, h, t: b.sub(h, b.mul(h, h)),
)
defop(
    "mul",
    2,
    (),
    lambda w, a: _broadcast("mul", w),
    "a * b (Hadamard)",
    elementwise=lambda u, a: u[0] * u[1],
    linear=False,
    example=lambda b, h, t: b.mul(h, b.pointwise(h, activations.activation("cos"))),
)
defop("neg", 1, (), lambda w, a: w[0], "-a", elementwise=lambda u, a: -u[0], example=lambda b, h, t: b.neg(h))
defop(
    "scale",
    1,
    ("value",),
    lambda w, a: w[0],
    "value * a",
    show=lambda a, g: num(a["value"]),
    elementwise=lambda u, a: sp.Float(a["value"]) * u[0],
    example=lambda b, h, t: b.scale(b.mul(h, h), -1.5),
)


@defjvp("add")
def _add(b, nid, T):
    ta, tb = _t(b, T, nid, 0), _t(b, T, nid, 1)
    if ta is None or tb is None:
        return ta if tb is None else tb
    return b.add(ta, tb)


@defjvp("sub")
def _sub(b, nid, T):
    ta, tb = _t(b, T, nid, 0), _t(b, T, nid, 1)
    if tb is None:
        return ta
    return b.neg(tb) if ta is None else b.sub(ta, tb)


@defjvp("mul")
def _mul(b, nid, T):
    x, y = b.g.inputs_of(nid)
    terms = []
    if T[x] is not None:
        terms.append(b.mul(T[x], y))
    if T[y] is not None:
        terms.append(b.mul(x, T[y]))
    return b.add_all(terms) if terms else None


@defjvp("neg")
def _neg(b, nid, T):
    t = _t(b, T, nid)
    return None if t is None else b.neg(t)


@defjvp("scale")
def _scale(b, nid, T):
    t = _t(b, T, nid)
    return None if t is None else b.scale(t, b.g.attrs(nid)["value"])


defop(
    "pointwise",
    1,
    ("fn",),
    lambda w, a: w[0],
    "an elementwise function (a sympy expression of x)",
    elementwise=lambda u, a: a["fn"].expr.subs(activations.x, u[0]),
    printed=lambda a, args: f"{a['fn'].label}({args})",
    linear=False,
    example=lambda b, h, t: b.pointwise(h, activations.activation("swish")),
)


@defjvp("pointwise")
def _pointwise(b, nid, T):
    # d f(a) = f'(a) * da, with f' derived once by sympy
    t = _t(b, T, nid)
    if t is None:
        return None
    (a,) = b.g.inputs_of(nid)
    d = activations.derivative(b.g.attrs(nid)["fn"])
    if d is None:
        return None
    if d.expr.is_number:  # an affine formula: f' is a constant
        return b.scale(t, float(d.expr))
    return b.mul(b.pointwise(a, d), t)


# --- shape ---------------------------------------------------------------------------------------------

defop(
    "expand",
    1,
    ("out",),
    lambda w, a: a["out"],
    "broadcast a width-1 value to 'out' features",
    show=lambda a, g: str(a["out"]),
    example=lambda b, h, t: b.concat([h, b.expand(b.sum(b.mul(h, h)), 2)]),
)


@defjvp("expand")
def _expand(b, nid, T):
    t = _t(b, T, nid)
    return None if t is None else b.expand(t, b.g.attrs(nid)["out"])


defop("concat", None, (), lambda w, a: sum(w), "feature concatenation", example=lambda b, h, t: b.concat([h, t]))


@defjvp("concat")
def _concat(b, nid, T):
    parts = b.g.inputs_of(nid)
    ts = [T[p] for p in parts]
    if all(t is None for t in ts):
        return None
    return b.concat([t if t is not None else b.const([0.0] * b.g.width(p)) for p, t in zip(parts, ts)])


defop(
    "slice",
    1,
    ("start", "stop"),
    lambda w, a: a["stop"] - a["start"],
    "features start:stop",
    show=lambda a, g: f"{a['start']}:{a['stop']}",
    example=lambda b, h, t: b.slice(b.mul(h, h), 1, 3),
)


@defjvp("slice")
def _slice(b, nid, T):
    t = _t(b, T, nid)
    if t is None:
        return None
    a = b.g.attrs(nid)
    return b.slice(t, a["start"], a["stop"])


# --- positional encoding -------------------------------------------------------------------------------

defop(
    "fscale",
    1,
    ("freqs",),
    lambda w, a: w[0] * len(a["freqs"]),
    "[a*f0, a*f1, ...] (frequency-major)",
    show=_freqs,
    example=lambda b, h, t: b.fscale(b.mul(h, h), (1.0, -2.0)),
)


@defjvp("fscale")
def _fscale(b, nid, T):
    t = _t(b, T, nid)
    return None if t is None else b.fscale(t, b.g.attrs(nid)["freqs"])


defop(
    "posenc",
    1,
    ("freqs", "include_input"),
    lambda w, a: w[0] * (int(a["include_input"]) + 2 * len(a["freqs"])),
    "[a?, sin(a*f0), sin(a*f1).., cos(a*f0)..] (frequency-major blocks)",
    show=lambda a, g: f"{_freqs(a)}, include_input={a['include_input']}",
    linear=False,
    example=lambda b, h, t: b.posenc(h, (1.0, 3.0), True),
)


@defjvp("posenc")
def _posenc(b, nid, T):
    # P = [a?, sin(F a), cos(F a)]  =>  dP = [da?, cos(F a) * F da, -sin(F a) * F da]; the sin and cos
    # blocks are slices of P itself, so the primal work is reused, not recomputed
    t = _t(b, T, nid)
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


# --- Taylor-mode rules of the nonlinear ops ------------------------------------------------------------


@defjet("mul")
def _mul_jet(b, nid, D, j):
    # Leibniz: (x y)^(j) = sum_i C(j, i) x^(i) y^(j-i)
    x, y = b.g.inputs_of(nid)
    terms = []
    for i in range(j + 1):
        p, q = D[x][i], D[y][j - i]
        if p is not None and q is not None:
            terms.append(b.scale(b.mul(p, q), math.comb(j, i)))
    return b.add_all(terms) if terms else None


def faa_di_bruno(b, j: int, fprime, du) -> Optional[int]:
    """(f∘u)^(j) = sum over integer partitions of j of  j!/prod(m_i! i!^m_i) f^(sum m_i)(u) prod (u^(i))^m_i.
    ``fprime(m)``: the node of f^(m)(u) (``None``: zero); ``du[i]``: u^(i) for i = 1..j."""
    terms = []
    for parts in _partitions(j):
        counts: dict[int, int] = {}
        for p in parts:
            counts[p] = counts.get(p, 0) + 1
        if any(du[i] is None for i in counts):
            continue
        f = fprime(len(parts))
        if f is None:
            continue
        coeff = math.factorial(j)
        for i, m in counts.items():
            coeff //= math.factorial(m) * math.factorial(i) ** m
        term = f
        for i in sorted(counts):
            for _ in range(counts[i]):
                term = b.mul(term, du[i])
        terms.append(b.scale(term, coeff))
    return b.add_all(terms) if terms else None


def _partitions(n: int, largest: int | None = None):
    """Integer partitions of n as non-increasing tuples."""
    largest = n if largest is None else largest
    if n == 0:
        yield ()
        return
    for first in range(min(n, largest), 0, -1):
        for rest in _partitions(n - first, first):
            yield (first,) + rest


@defjet("pointwise")
def _pointwise_jet(b, nid, D, j):
    (a,) = b.g.inputs_of(nid)
    chain = [b.g.attrs(nid)["fn"]]

    def fprime(m):
        while len(chain) <= m and chain[-1] is not None:
            chain.append(activations.derivative(chain[-1]))
        f = chain[m] if m < len(chain) else None
        if f is None:
            return None
        if f.expr.is_number:
            return b.const([float(f.expr)] * b.g.width(a))
        return b.pointwise(a, f)

    return faa_di_bruno(b, j, fprime, D[a])


@defjet("posenc")
def _posenc_jet(b, nid, D, j):
    # blocks sin(u), cos(u) of u = F a: sin^(m)(u) is (sin, cos, -sin, -cos)[m % 4], slices of the node
    (a,) = b.g.inputs_of(nid)
    attrs = b.g.attrs(nid)
    w = b.g.width(a)
    k = len(attrs["freqs"]) * w
    off = w if attrs["include_input"] else 0
    sin_block, cos_block = b.slice(nid, off, off + k), b.slice(nid, off + k, off + 2 * k)
    du = [None] + [None if D[a][i] is None else b.fscale(D[a][i], attrs["freqs"]) for i in range(1, j + 1)]

    def cycle(start: int):
        def fprime(m):  # the m-th derivative of sin (start 0) or cos (start 1): sin, cos, -sin, -cos
            phase = (start + m) % 4
            block = (sin_block, cos_block)[phase % 2]
            return block if phase < 2 else b.neg(block)

        return fprime

    parts = []
    if attrs["include_input"]:
        parts.append(D[a][j] if D[a][j] is not None else b.const([0.0] * w))
    for start in (0, 1):
        t = faa_di_bruno(b, j, cycle(start), du)
        parts.append(b.const([0.0] * k) if t is None else t)
    if all(b.cval(p) is not None for p in parts):
        return None
    return b.concat(parts)


#: THE definition of "elementwise": the ops with an elementwise meaning (``elementwise=`` above)
ELEMENTWISE = frozenset(name for name, d in OPS.items() if d.elementwise is not None)
#: the elementwise ops other than ``pointwise``: what a fusion region absorbs beyond its seed group (a
#: pointwise group) and what a backend lowers from the meaning alone, as one elementwise unit
ELEMENTWISE_ARITHMETIC = ELEMENTWISE - {"pointwise"}
COMMUTATIVE = frozenset({"add", "mul"})
