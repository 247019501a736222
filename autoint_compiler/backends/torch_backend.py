"""The PyTorch backend: a ``Program`` -> one readable Python module (jinja2 template) holding
``IntegralNet`` (owns every parameter) and ``GradNet``, which registers exactly the parameter tensors
it reads (the same ``nn.Parameter`` objects: shared, and nothing unused for DDP to wait on). Source
text only: no torch import here.

Emission is one statement per IR node, in schedule order, looked up in ``LOWER`` (a row per op that
is not elementwise, and readable rows for the arithmetic; any other elementwise op is printed from its
sympy meaning, ``lower_elementwise``), with these refinements:
- views (input columns, slices, weight columns) are inlined where used, not assigned;
- expressions are ``Code`` values that know their precedence, so parentheses come from structure;
- variables take the frontend's node names where they are safe, from a namespace that never shadows
  ``x``, ``self``, ``torch`` or ``F``;
- constants are deduplicated by value; a uniform constant is a literal, not a buffer;
- pointwise nodes of the same input are printed together, sharing subexpressions (``sympy.cse``),
  so ``swish(z)`` and ``swish'(z)`` compute ``sigmoid(z)`` once;
- a row that is the same for every sample (``[1, width]``) stays a row and broadcasts.
"""

from __future__ import annotations

import builtins
import keyword
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field

import sympy as sp

from ..core import activations as A
from ..core import fusion
from ..core.differentiate import orders_of
from ..core.ir import IRGraph, nonsmooth_labels
from ..core.names import is_identifier, param_attribute
from ..core.ops import ELEMENTWISE_ARITHMETIC, op_def
from ..errors import CompileError
from . import param_rows, sympy_print
from .templating import render


def _f(v: float) -> str:
    return sympy_print.float_literal(v)


#: the longest line the backend writes (ruff's limit for the project is 120: nothing is reflowed)
LINE = 100


@dataclass
class Buffer:
    name: str
    values: tuple[float, ...]

    @property
    def literal(self) -> str:
        return "[[" + ", ".join(_f(v) for v in self.values) + "]]"

    def lines(self) -> list[str]:
        """The ``register_buffer`` call (inside ``__init__``), laid out as ``ruff format`` writes it."""
        call = f'self.register_buffer("{self.name}", torch.tensor({self.literal}, **kw), persistent=False)'
        return sympy_print.layout(None, call, indent=8, limit=LINE)


@dataclass
class Emitted:
    lines: list[str] = field(default_factory=list)
    buffers: list[Buffer] = field(default_factory=list)
    result: str = ""


def _library_primals(g: IRGraph, region: fusion.Region) -> dict[sp.Expr, str]:
    """The region's library activations f(z) (a lone ``swish`` is ``F.silu``): {f(u_z): library call}."""
    primal = {}
    sym = dict(zip(region.inputs, region.symbols))
    for n in region.nodes:
        if g.op(n) != "pointwise" or g.inputs_of(n)[0] not in sym:
            continue
        fn = g.attrs(n)["fn"]
        if fn.library and not fn.library_args:
            u = sym[g.inputs_of(n)[0]]
            primal[fn.expr.subs(A.x, u)] = sympy_print.library_call(fn.library, x=u)
    return primal


class FusedFunctions:
    """One ``torch.autograd.Function`` per distinct fusion-region signature. Its forward and backward
    bodies are plain module-level functions (the *kernels*): the forward prints the region's outputs,
    the backward their sympy-derived vector-Jacobian product; inputs are saved and the rest recomputed,
    so a region keeps two tensors alive instead of one per op. Only public torch functions are called
    (no private aten kernels), and ``compile_pointwise()`` in the generated module swaps the kernels for
    ``torch.compile``d ones, which fuse them, while the GEMMs stay eager."""

    def __init__(self):
        self.names: dict[tuple, str] = {}
        self.sources: list[list[str]] = []

    def get(self, g: IRGraph, region: fusion.Region) -> str:
        sig = fusion.signature(g, region)
        if sig not in self.names:
            name = f"_Fused{len(self.names)}"
            self.names[sig] = name
            self.sources.append(self._render(name, g, region))
        return self.names[sig]

    @property
    def kernel_names(self) -> list[str]:
        out = []
        for name in self.names.values():
            out += [f"{name.lower()}_forward", f"{name.lower()}_backward"]
        return out

    @staticmethod
    def _body(exprs, names, targets, fixed=None) -> list[str]:
        """Lines computing ``targets[j] = exprs[j]`` (``fixed[j]``: code given as is), sharing temporaries."""
        fixed = fixed or {}
        todo = [j for j in range(len(exprs)) if j not in fixed]
        temps, codes = sympy_print.print_exprs([exprs[j] for j in todo], names, "t", width=LINE - 4 - 3 - 6)
        code = dict(fixed) | dict(zip(todo, codes))
        body = temps + [(targets[j], code[j]) for j in range(len(exprs))]
        return ["    " + ln for n, c in body for ln in sympy_print.layout(n, c, indent=4, limit=LINE)]

    @staticmethod
    def _render(name: str, g: IRGraph, region: fusion.Region) -> list[str]:
        outs = fusion.output_exprs(g, region)
        us = region.symbols
        gs = [sp.Symbol(f"g{j}", real=True) for j in range(len(outs))]
        primal = _library_primals(g, region)
        grads = fusion.gradient_exprs(outs, us, gs)
        names = {u: str(u) for u in us}
        names.update({gj: str(gj) for gj in gs})
        fixed = {j: primal[o] for j, o in enumerate(outs) if o in primal}
        args = ", ".join(str(u) for u in us)
        kernel = name.lower()
        summary = "; ".join(f"o{j} = {o}" for j, o in enumerate(fusion.readable_outputs(g, region)))
        doc = textwrap.wrap(f"Fused elementwise region: {summary}.", width=96, break_long_words=True)
        outs_list = ", ".join(f"o{j}" for j in range(len(outs)))
        ulist, glist = [str(u) for u in us], [str(x) for x in gs]
        lines = sympy_print.wrap_list("", f"def {kernel}_forward(", ulist, "):")
        lines += FusedFunctions._body(outs, names, [f"o{j}" for j in range(len(outs))], fixed)
        lines += [f"    return {outs_list}", "", ""]
        live = [k for k, e in enumerate(grads) if e != 0]
        dlist = ", ".join(f"d{k}" for k in live)
        lines += sympy_print.wrap_list("", f"def {kernel}_backward(", ulist + glist, "):")
        lines += FusedFunctions._body([grads[k] for k in live], names, [f"d{k}" for k in live])
        lines += [f"    return {dlist}" + ("," if len(live) == 1 else ""), "", ""]
        lines += [f"class {name}(torch.autograd.Function):"]
        if len(doc) == 1:
            lines.append(f'    """{doc[0]}"""')
        else:
            lines += [f'    """{doc[0]}'] + [f"    {d}" for d in doc[1:]] + ['    """']
        lines += ["", "    @staticmethod"]
        lines += sympy_print.wrap_list("    ", "def forward(ctx, ", ulist, "):")
        lines += sympy_print.wrap_list("        ", "ctx.save_for_backward(", ulist, ")")
        lines += sympy_print.wrap_list("        ", f'return KERNELS["{kernel}_forward"](', ulist, ")")
        lines += ["", "    @staticmethod"]
        lines += sympy_print.wrap_list("    ", "def backward(ctx, ", glist, "):")
        if len(us) == 1:
            lines.append(f"        {args}, = ctx.saved_tensors")
        else:
            lines += sympy_print.wrap_list("        ", "(", ulist, ") = ctx.saved_tensors", bare=True)
        lhs = f'{dlist}{"," if len(live) == 1 else ""} = '
        lines += sympy_print.wrap_list("        ", f'{lhs}KERNELS["{kernel}_backward"](', ulist + glist, ")")
        rets = []
        for k in range(len(us)):
            if k not in live:
                rets.append("None")
            elif region.rows[k]:  # a [1, width] input broadcast over the batch: its gradient sums the rows
                rets.append(f"d{k}.sum(0, keepdim=True)")
            else:
                rets.append(f"d{k}")
        ret = ", ".join(rets)
        if len(ret) <= 88:
            lines.append(f"        return {ret}")
        else:
            lines += ["        return ("] + [f"            {r}," for r in rets] + ["        )"]
        return lines


# ---------------------------------------------------------------------------------------------------
# Expressions, names and constants
# ---------------------------------------------------------------------------------------------------

ADD, MUL, NEG, POW, ATOM = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Code:
    """A Python expression and its precedence (ATOM: a name, call, attribute or subscript)."""

    text: str
    prec: int = ATOM

    def at(self, prec: int) -> str:
        """The text, parenthesised if it binds looser than ``prec``."""
        return self.text if self.prec >= prec else f"({self.text})"


#: names generated code uses itself; a node name equal to one of these gets a suffix
RESERVED = (
    frozenset({"x", "self", "torch", "F", "nn", "itertools", "KERNELS", "m"})
    | frozenset(dir(builtins))
    | frozenset(keyword.kwlist)
)


class Namespace:
    """Variable names for one function body: frontend names where safe, else ``v<id>``; never twice."""

    def __init__(self):
        self.used: set[str] = set(RESERVED)

    def fresh(self, hint: str | None, nid: int) -> str:
        base = hint if hint and is_identifier(hint) and len(hint) <= 40 else f"v{nid}"
        name, k = base, 1
        while name in self.used or name.startswith("_"):
            name = f"{base}_{k}" if not base.startswith("_") else f"v{nid}_{k}"
            k += 1
        self.used.add(name)
        return name


class ConstantPool:
    """Constant rows deduplicated by value across both networks: one buffer per distinct value, and
    none for the negation of one (``-self.c0``, not a buffer ``c1`` holding ``-c0``)."""

    def __init__(self):
        self.names: dict[tuple[float, ...], str] = {}

    def name(self, values: tuple[float, ...]) -> str:
        if values not in self.names:
            self.names[values] = f"c{len(self.names)}"
        return self.names[values]

    def negated(self, values: tuple[float, ...]) -> str | None:
        """The buffer holding ``-values``, if there is one (and ``values`` has none of its own)."""
        neg = tuple(-v for v in values)
        return self.names.get(neg) if values not in self.names and neg != values else None


# ---------------------------------------------------------------------------------------------------
# The emitter: one LOWER row per op
# ---------------------------------------------------------------------------------------------------


class _Emitter:
    def __init__(self, g: IRGraph, pool: ConstantPool, fused: FusedFunctions | None = None):
        self.g = g
        self.fused = fused
        self.pool = pool
        self.out = Emitted()
        self.code: dict[int, Code] = {}
        self.ns = Namespace()
        self.done: set[int] = set()
        self.params_used: set[str] = set()
        self.buffers_used: dict[str, tuple[float, ...]] = {}
        self.total = sum(b - s for s, b in g.graph["inputs"].values())
        self.groups: dict[int, list[int]] = defaultdict(list)
        for nid in g.order():
            if g.op(nid) == "pointwise":
                self.groups[g.inputs_of(nid)[0]].append(nid)
        self.regions = fusion.find_regions(g) if fused is not None else []
        region_inputs = {i for r in self.regions for i in r.inputs}  # autograd.Function args: tensors
        self.literal_ok = {
            n for n in g.order() if g.op(n) == "constant" and n not in region_inputs and self._literal_consts(n)
        }

    # -- references ---------------------------------------------------------------------------------
    def ref(self, nid: int) -> Code:
        try:
            return self.code[nid]
        except KeyError:
            raise CompileError(f"torch backend: %{nid} ({self.g.op(nid)}) is read before it is computed") from None

    def batched_ref(self, nid: int) -> Code:
        """A reference with N rows (rows that are the same for all samples are expanded, a view)."""
        r = self.ref(nid)
        return r if self.g.nodes[nid]["batched"] else Code(f"{r.at(ATOM)}.expand(x.shape[0], -1)")

    def hint(self, nid: int) -> str | None:
        """A variable name for a node: the frontend's (graph ``names``), else one that says what it is —
        ``enc_t`` for the encoding of input ``t``, ``phi`` (``phi_dt``...) for the network's output. The
        IR itself is not renamed: Φ's printed IR, and so the architecture hash, stay as they are."""
        g = self.g
        if nid in g.graph.get("names", {}):
            return g.graph["names"][nid]
        if nid in g.graph["outputs"]:
            orders = orders_of(g.graph.get("wrt", []))
            return "phi" + "".join(f"_d{v}" + (str(k) if k > 1 else "") for v, k in orders.items())
        src = g.inputs_of(nid)[0] if g.inputs_of(nid) else None
        if g.op(nid) == "posenc" and src is not None and g.op(src) == "input":
            return f"enc_{g.attrs(src)['name']}"
        return None

    def param(self, name: str, part: str) -> str:
        attr = param_attribute(name, part)
        self.params_used.add(attr)
        return f"self.{attr}"

    def assign(self, nid: int, code: Code, comment: str = "") -> None:
        name = self.ns.fresh(self.hint(nid), nid)
        self.code[nid] = Code(name)
        lines = sympy_print.layout(name, code.text, indent=8, limit=LINE)
        if comment and len(lines) == 1 and len(lines[0]) + len(comment) <= 98:
            lines[0] += f"  # {comment}"
        elif comment and len(comment) <= 100:
            lines.insert(0, f"# {comment}")
        self.out.lines.extend(lines)

    def inline_or_assign(self, nid: int, code: Code) -> None:
        """A cheap expression read once is written where it is read (``torch.cat([a, -b], 1)``), not
        given a line of its own (``v18 = -v17``)."""
        if self.g.out_degree(nid) == 1 and nid not in self.g.graph["outputs"]:
            self.code[nid] = code
        else:
            self.assign(nid, code)

    # -- constants ----------------------------------------------------------------------------------
    def _literal_consts(self, nid: int) -> bool:
        """A uniform constant read only by elementwise arithmetic whose other operand is at least as
        wide prints as a Python number (no buffer, no broadcast)."""
        g = self.g
        vals = g.attrs(nid)["value"]
        if len(set(vals)) != 1 or nid in g.graph["outputs"]:
            return False
        for s in g.successors(nid):
            if g.op(s) not in ("add", "sub", "mul") or g.width(s) < len(vals):
                return False
            other = [i for i in g.inputs_of(s) if i != nid]
            if not other or g.width(other[0]) != g.width(s):
                return False
        return True

    def constant(self, nid: int) -> Code:
        vals = tuple(self.g.attrs(nid)["value"])
        if nid in self.literal_ok:
            text = _f(vals[0])
            return Code(text, NEG if text.startswith("-") else ATOM)
        neg = self.pool.negated(vals)
        if neg is not None:
            self.buffers_used[neg] = tuple(-v for v in vals)
            return Code(f"-self.{neg}", NEG)
        name = self.pool.name(vals)
        self.buffers_used[name] = vals
        return Code(f"self.{name}")

    # -- emission -------------------------------------------------------------------------------------
    def run(self) -> Emitted:
        g = self.g
        for step in fusion.schedule(g, self.regions):
            if isinstance(step, fusion.Region):
                self._region(step)
                self.done.update(step.nodes)
            elif step not in self.done:
                op = g.op(step)
                lower = LOWER.get(op, lower_elementwise if op in ELEMENTWISE_ARITHMETIC else None)
                if lower is None:
                    raise CompileError(f"torch backend: no lowering for op {op!r} (node %{step}); add a LOWER row")
                lower(self, step, g.attrs(step), [self.ref(i) for i in g.inputs_of(step)])
                self.done.add(step)
        (o,) = g.graph["outputs"]
        self.out.result = self.batched_ref(o).text
        return self.out

    def _region(self, region: fusion.Region) -> None:
        cls = self.fused.get(self.g, region)
        args = ", ".join(self.ref(i).text for i in region.inputs)
        outs = []
        for o in region.outputs:
            outs.append(self.ns.fresh(self.hint(o), o))
            self.code[o] = Code(outs[-1])
        labels = [self.g.attrs(n)["fn"].label for n in region.nodes if self.g.op(n) == "pointwise"]
        target = ", ".join(outs)
        comment = f"# {', '.join(labels)}"
        lines = sympy_print.layout(target, f"{cls}.apply({args})", indent=8, limit=LINE)
        if len(lines) == 1 and len(lines[0]) + len(comment) <= 98:
            lines[0] += "  " + comment
        elif len(comment) <= 100:
            lines.insert(0, comment)
        self.out.lines.extend(lines)

    def _contiguous_inputs(self, ins) -> bool:
        g = self.g
        if not all(g.op(i) == "input" for i in ins):
            return False
        return all(g.attrs(p)["stop"] == g.attrs(q)["start"] for p, q in zip(ins, ins[1:]))

    def columns(self, start: int, stop: int) -> Code:
        return Code("x" if (start, stop) == (0, self.total) else f"x[:, {start}:{stop}]")

    def fscale(self, nid: int, src: Code, width: int, freqs) -> Code:
        """[a f0, a f1, ...] frequency-major, by broadcasting (no repeat, no copy of a)."""
        f = self.constant_row(tuple(float(v) for v in freqs))
        if width == 1:
            return Code(f"{src.at(MUL)} * {f}", MUL)
        return Code(f"({src.at(ATOM)}[:, None, :] * {f}[:, :, None]).flatten(1)")

    def constant_row(self, values: tuple[float, ...]) -> str:
        name = self.pool.name(values)
        self.buffers_used[name] = values
        return f"self.{name}"

    def pointwise_group(self, src: int) -> None:
        members = self.groups[src]
        var = self.ref(src)
        if not var.text.isidentifier():  # give the shared input a name so the expressions stay short
            self.assign(src, var)
            var = self.ref(src)
        var = var.text
        fns = [self.g.attrs(m)["fn"] for m in members]
        symbolic = []
        for m, fn in zip(members, fns):
            # a lone activation uses the fused library call (F.silu); beside its derivatives it is printed
            # from its expression so they share subexpressions (swish' reuses sigmoid(z) and z*sigmoid(z))
            if fn.library and len(members) == 1:
                args = {f"a{i}": _f(v) for i, v in enumerate(fn.library_args)}
                self.assign(m, Code(sympy_print.library_call(fn.library, x=var, **args)), fn.label)
            else:
                symbolic.append((m, fn))
        if symbolic:
            width = LINE - 8 - 3 - max(len(var) + 4, 40)  # 40: the longest name a node is given
            temps, codes = sympy_print.print_group([fn.expr for _, fn in symbolic], var, f"{var}_", width)
            for name, code in temps:
                self.ns.used.add(name)
                self.out.lines.extend(sympy_print.layout(name, code, indent=8, limit=LINE))
            for (m, fn), code in zip(symbolic, codes):
                self.assign(m, Code(code, ADD), fn.label)
        self.done.update(members)


def _lower_concat(e: _Emitter, nid, a, r):
    g = e.g
    ins = g.inputs_of(nid)
    if e._contiguous_inputs(ins):
        e.code[nid] = e.columns(g.attrs(ins[0])["start"], g.attrs(ins[-1])["stop"])
        return
    parts = [e.batched_ref(i) for i in ins] if g.nodes[nid]["batched"] else r
    e.assign(nid, Code(f"torch.cat([{', '.join(p.text for p in parts)}], 1)"))


def _lower_linear(e: _Emitter, nid, a, r):
    p = e.g.graph["params"][a["param"]]
    w = e.param(a["param"], "weight")
    if tuple(a["cols"]) != (0, p.inp):
        w += f"[:, {a['cols'][0]}:{a['cols'][1]}]"
    args = [r[0].text, w] + ([e.param(a["param"], "bias")] if a["bias"] else [])
    e.assign(nid, Code(f"F.linear({', '.join(args)})"))


def _lower_posenc(e: _Emitter, nid, a, r):
    width = e.g.width(e.g.inputs_of(nid)[0])
    u = e.ns.fresh(f"u{nid}", nid)
    e.out.lines.append(f"{u} = {e.fscale(nid, r[0], width, a['freqs']).text}")
    parts = ([r[0].text] if a["include_input"] else []) + [f"torch.sin({u})", f"torch.cos({u})"]
    e.assign(nid, Code(f"torch.cat([{', '.join(parts)}], 1)"), "positional encoding")


def _binary(sym: str, prec: int):
    def lower(e: _Emitter, nid, a, r):
        right = r[1].at(prec + 1) if sym == "-" else r[1].at(prec)
        e.assign(nid, Code(f"{r[0].at(prec)} {sym} {right}", prec))

    return lower


def lower_elementwise(e: _Emitter, nid, a, r):
    """Any elementwise op: its sympy meaning (``ops.OpDef.elementwise``) printed over its inputs."""
    us = [sp.Symbol(f"u{k}", real=True) for k in range(len(r))]
    expr = op_def(e.g.op(nid)).elementwise(us, a)
    text, prec = sympy_print.TorchPrinter({u: c.at(ATOM) for u, c in zip(us, r)}).code(expr)
    e.assign(nid, Code(text, prec))


def _set(e: _Emitter, nid: int, code: Code) -> None:
    e.code[nid] = code


#: op -> how the torch backend prints it: every op that is not elementwise has a row (an elementwise op
#: without one is printed by ``lower_elementwise``); tests/test_op_completeness.py runs every op
LOWER = {
    "input": lambda e, nid, a, r: _set(e, nid, e.columns(a["start"], a["stop"])),
    "constant": lambda e, nid, a, r: _set(e, nid, e.constant(nid)),
    "wcol": lambda e, nid, a, r: _set(e, nid, Code(f"{e.param(a['param'], 'weight')}[:, {a['col']}].unsqueeze(0)")),
    "slice": lambda e, nid, a, r: _set(e, nid, Code(f"{r[0].at(ATOM)}[:, {a['start']}:{a['stop']}]")),
    "concat": _lower_concat,
    "linear": _lower_linear,
    "add": _binary("+", ADD),
    "sub": _binary("-", ADD),
    "mul": _binary("*", MUL),
    "neg": lambda e, nid, a, r: e.inline_or_assign(nid, Code(f"-{r[0].at(NEG)}", NEG)),
    "scale": lambda e, nid, a, r: e.assign(nid, Code(f"{_f(a['value'])} * {r[0].at(MUL)}", MUL)),
    "sum": lambda e, nid, a, r: e.assign(nid, Code(f"{r[0].at(ATOM)}.sum(1, keepdim=True)")),
    "expand": lambda e, nid, a, r: e.assign(nid, Code(f"{r[0].at(ATOM)}.expand(-1, {a['out']})")),
    "fscale": lambda e, nid, a, r: e.assign(nid, e.fscale(nid, r[0], e.g.width(e.g.inputs_of(nid)[0]), a["freqs"])),
    "posenc": _lower_posenc,
    "pointwise": lambda e, nid, a, r: e.pointwise_group(e.g.inputs_of(nid)[0]),
}


def _join_blocks(blocks: list[list[str]]) -> list[str]:
    out: list[str] = []
    for k, block in enumerate(blocks):
        out += (["", ""] if k else []) + block
    return out


def emit_graph(g: IRGraph, pool: ConstantPool, fused: FusedFunctions | None = None) -> _Emitter:
    if len(g.graph["outputs"]) != 1:
        raise CompileError("torch backend: exactly one output node expected")
    e = _Emitter(g, pool, fused)
    e.run()
    return e


def _buffer_lines(names: dict[str, tuple[float, ...]]) -> list[str]:
    return [line for name in sorted(names, key=lambda n: int(n[1:])) for line in Buffer(name, names[name]).lines()]


def generate(program, *, version: str, fuse: bool = True) -> str:
    """The module source for a ``Program`` (deterministic: same program, same text).

    With ``fuse``, the grad network's elementwise regions become fused autograd Functions (the integral
    network stays plain PyTorch ops, so ``torch.func`` transforms of Phi keep working)."""
    pool = ConstantPool()
    integral = emit_graph(program.integral, pool)
    fused = FusedFunctions() if fuse else None
    grad = emit_graph(program.grad, pool, fused)
    params = param_rows(program.integral.graph["params"])
    g = program.grad
    nonsmooth = nonsmooth_labels(g)
    return render(
        "torch_module.py.j2",
        name=program.name,
        spec_hash=program.hash,
        version=version,
        params=params,
        integral=integral.out,
        grad=grad.out,
        grad_params=sorted(grad.params_used),
        fused_lines=_join_blocks(fused.sources if fused else []),
        kernels=fused.kernel_names if fused else [],
        integral_buffers=_buffer_lines(integral.buffers_used),
        grad_buffers=_buffer_lines(grad.buffers_used),
        dtype="torch.float64" if program.dtype == "float64" else "torch.float32",
        in_features=program.in_features,
        out_features=program.out_features,
        columns=tuple(program.integration_columns),
        grad_title=g.graph.get("title", "d Phi / d" + " d".join(program.wrt)),
        nonsmooth=nonsmooth,
        precision=program.precision,
    )
