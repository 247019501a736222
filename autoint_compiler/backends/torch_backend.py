"""The PyTorch backend: IR graphs -> one readable Python module (jinja2 template) holding
``IntegralNet`` (owns every parameter and constant) and ``GradNet`` (reads them through
``self.integral``), so the two always share tensors. Source text only: no torch import here.

Emission is one statement per IR node, in schedule order, with three refinements:
- views (input columns, slices, weight columns) are inlined where used, not assigned;
- pointwise nodes of the same input are printed together, sharing subexpressions (``sympy.cse``),
  so ``swish(z)`` and ``swish'(z)`` compute ``sigmoid(z)`` once;
- a row that is the same for every sample (``[1, width]``) stays a row and broadcasts.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field

import sympy as sp

from .. import activations as A
from .. import fusion
from ..errors import CompileError
from ..ir import IRGraph
from ..templating import render
from . import sympy_print


def _f(v: float) -> str:
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        raise CompileError(f"non-finite constant {v} cannot be emitted")
    return repr(v)


@dataclass
class Buffer:
    name: str
    values: tuple[float, ...]

    @property
    def literal(self) -> str:
        return "[[" + ", ".join(_f(v) for v in self.values) + "]]"

    def lines(self) -> list[str]:
        """``register_buffer`` call, wrapped to stay within the line length."""
        one = f'self.register_buffer("{self.name}", torch.tensor({self.literal}, **kw), persistent=False)'
        if len(one) <= 100:
            return [one]
        wrapped = textwrap.wrap(", ".join(_f(v) for v in self.values), width=84, break_long_words=False)
        body = [f"        [{w}" if i == 0 else f"         {w}" for i, w in enumerate(wrapped)]
        body[-1] += "]"
        return [
            "self.register_buffer(",
            f'    "{self.name}",',
            "    torch.tensor(",
            "        [",
            *["    " + b for b in body],
            "        ],",
            "        **kw,",
            "    ),",
            "    persistent=False,",
            ")",
        ]


@dataclass
class Emitted:
    lines: list[str] = field(default_factory=list)
    buffers: list[Buffer] = field(default_factory=list)
    result: str = ""


#: activations whose JVP  t * f'(x)  is one aten kernel (the kernels autograd itself uses for f)
LIBRARY_JVP = {
    "silu": "torch.ops.aten.silu_backward({t}, {x})",
    "gelu": "torch.ops.aten.gelu_backward({t}, {x})",
    "softplus": "torch.ops.aten.softplus_backward({t}, {x}, 1.0, 20.0)",
}
_JVP_FUNCTIONS = {name: type(f"{name}_jvp", (sp.Function,), {}) for name in LIBRARY_JVP}


def _library_rewrites(g: IRGraph, region: fusion.Region):
    """For the region's library activations f(z): {f(u_z): library primal code} and {f'(u_z): JVP class}."""
    primal, jvp = {}, {}
    sym = dict(zip(region.inputs, region.symbols))
    for n in region.nodes:
        if g.op(n) != "pointwise" or g.inputs_of(n)[0] not in sym:
            continue
        u = sym[g.inputs_of(n)[0]]
        for name, row in A.ACTIVATIONS.items():
            if row.library not in LIBRARY_JVP or row.params:
                continue
            fn = A.activation(name)
            d = A.derivative(fn.key)
            if g.attrs(n)["fn"] in (fn.key, d.key):
                primal[fn.expr.subs(A.x, u)] = sympy_print.LIBRARY[row.library].format(x=u)
                jvp[d.expr.subs(A.x, u)] = (_JVP_FUNCTIONS[row.library], u)
    return primal, jvp


class FusedFunctions:
    """One ``torch.autograd.Function`` per distinct fusion-region signature. Its forward and backward
    bodies are plain module-level functions (the *kernels*): the forward prints the region's outputs,
    the backward their sympy-derived vector-Jacobian product; inputs are saved and the rest recomputed,
    so a region keeps two tensors alive instead of one per op. ``t * f'(z)`` of a library activation
    is one aten kernel (``silu_backward``...), and ``compile_pointwise()`` in the generated module swaps
    the kernels for ``torch.compile``d ones while the GEMMs stay eager."""

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
        temps, codes = sympy_print.print_exprs([exprs[j] for j in todo], names, "t")
        code = dict(fixed) | dict(zip(todo, codes))
        body = temps + [(targets[j], code[j]) for j in range(len(exprs))]
        return ["    " + ln for n, c in body for ln in sympy_print.split_long(n, c, limit=100)]

    @staticmethod
    def _render(name: str, g: IRGraph, region: fusion.Region) -> list[str]:
        outs = fusion.output_exprs(g, region)
        us = region.symbols
        gs = [sp.Symbol(f"g{j}", real=True) for j in range(len(outs))]
        primal, jvp = _library_rewrites(g, region)
        grads = fusion.gradient_exprs(outs, us, gs, jvp)
        names = {u: str(u) for u in us}
        names.update({gj: str(gj) for gj in gs})
        rows = dict(zip(us, region.rows))
        fixed = {}
        for j, o in enumerate(outs):
            if o in primal:
                fixed[j] = primal[o]
            elif isinstance(o, sp.Mul) and len(o.args) == 2:
                for t, d in (o.args, o.args[::-1]):
                    if t in rows and d in jvp:
                        cls, z = jvp[d]
                        tt = f"{t}.expand_as({z})" if rows[t] else str(t)
                        fixed[j] = sympy_print.to_torch(cls(sp.Symbol(tt), z), {**names, sp.Symbol(tt): tt})
                        break
        args = ", ".join(str(u) for u in us)
        gargs = ", ".join(str(x) for x in gs)
        kernel = name.lower()
        summary = "; ".join(f"o{j} = {A.canonical_key(o)}" for j, o in enumerate(outs))
        doc = textwrap.wrap(f"Fused elementwise region: {summary}.", width=96, break_long_words=True)
        outs_list = ", ".join(f"o{j}" for j in range(len(outs)))
        lines = [f"def {kernel}_forward({args}):"]
        lines += FusedFunctions._body(outs, names, [f"o{j}" for j in range(len(outs))], fixed)
        lines += [f"    return {outs_list}", "", ""]
        live = [k for k, e in enumerate(grads) if e != 0]
        dlist = ", ".join(f"d{k}" for k in live)
        lines += [f"def {kernel}_backward({args}, {gargs}):"]
        lines += FusedFunctions._body([grads[k] for k in live], names, [f"d{k}" for k in live])
        lines += [f"    return {dlist}" + ("," if len(live) == 1 else ""), "", ""]
        lines += [f"class {name}(torch.autograd.Function):", f'    """{doc[0]}']
        lines += [f"    {d}" for d in doc[1:]]
        lines += ['    """', "", "    @staticmethod", f"    def forward(ctx, {args}):"]
        lines.append(f"        ctx.save_for_backward({args})")
        lines.append(f'        return KERNELS["{kernel}_forward"]({args})')
        lines += ["", "    @staticmethod", f"    def backward(ctx, {gargs}):"]
        lines.append(f"        {args}, = ctx.saved_tensors" if len(us) == 1 else f"        {args} = ctx.saved_tensors")
        lines.append(f'        {dlist}{"," if len(live) == 1 else ""} = KERNELS["{kernel}_backward"]({args}, {gargs})')
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


class _Emitter:
    def __init__(self, g: IRGraph, tag: str, owner: str, fused: FusedFunctions | None = None):
        self.g = g
        self.fused = fused
        self.tag = tag  # buffer name prefix, distinct per graph
        self.owner = owner  # expression for the module holding parameters and buffers
        self.out = Emitted()
        self.inline: dict[int, str] = {}
        self.var: dict[int, str] = {}
        self.done: set[int] = set()
        self.groups: dict[int, list[int]] = defaultdict(list)
        for nid in g.order():
            if g.op(nid) == "pointwise":
                self.groups[g.inputs_of(nid)[0]].append(nid)

    # -- references ---------------------------------------------------------------------------------
    def ref(self, nid: int) -> str:
        if nid in self.inline:
            return self.inline[nid]
        return self.var[nid]

    def batched_ref(self, nid: int) -> str:
        """A reference with N rows (rows that are the same for all samples are expanded, a view)."""
        r = self.ref(nid)
        return r if self.g.nodes[nid]["batched"] else f"{self._atom(r)}.expand(x.shape[0], -1)"

    @staticmethod
    def _atom(r: str) -> str:
        return r if r.replace("_", "").replace(".", "").isalnum() or r.endswith(")") or r.endswith("]") else f"({r})"

    def buffer(self, nid: int, values) -> str:
        name = f"{self.tag}{nid}"
        self.out.buffers.append(Buffer(name, tuple(values)))
        return f"{self.owner}.{name}"

    def assign(self, nid: int, code: str, comment: str = "") -> None:
        name = f"v{nid}"
        self.var[nid] = name
        lines = sympy_print.split_long(name, code)
        if comment and len(lines) == 1 and len(lines[0]) + len(comment) <= 98:
            lines[0] += f"  # {comment}"
        elif comment and len(comment) <= 100:
            lines.insert(0, f"# {comment}")
        self.out.lines.extend(lines)

    def param(self, name: str, part: str) -> str:
        return f"{self.owner}.{name}_{part}"

    # -- emission -------------------------------------------------------------------------------------
    def run(self) -> Emitted:
        g = self.g
        regions = fusion.find_regions(g) if self.fused is not None else []
        for step in fusion.schedule(g, regions):
            if isinstance(step, fusion.Region):
                self._region(step)
                self.done.update(step.nodes)
            elif step not in self.done:
                self.emit(step)
                self.done.add(step)
        (o,) = g.graph["outputs"]
        self.out.result = self.batched_ref(o)
        return self.out

    def emit(self, nid: int) -> None:
        g = self.g
        d = g.nodes[nid]
        op, a, ins = d["op"], d["attrs"], d["inputs"]
        r = [self.ref(i) for i in ins if i in self.inline or i in self.var]
        if op == "input":
            full = a["start"] == 0 and a["stop"] == sum(b - s for s, b in g.graph["inputs"].values())
            self.inline[nid] = "x" if full else f"x[:, {a['start']}:{a['stop']}]"
        elif op == "constant":
            self.inline[nid] = self.buffer(nid, a["value"])
        elif op == "wcol":
            self.inline[nid] = f"{self.param(a['param'], 'weight')}[:, {a['col']}:{a['col'] + 1}].t()"
        elif op == "slice":
            self.inline[nid] = f"{self._atom(r[0])}[:, {a['start']}:{a['stop']}]"
        elif op == "concat" and self._contiguous_inputs(ins):
            first, last = g.attrs(ins[0]), g.attrs(ins[-1])
            total = sum(b - s for s, b in g.graph["inputs"].values())
            whole = (first["start"], last["stop"]) == (0, total)
            self.inline[nid] = "x" if whole else f"x[:, {first['start']}:{last['stop']}]"
        elif op == "concat":
            parts = [self.batched_ref(i) for i in ins] if d["batched"] else r
            self.assign(nid, f"torch.cat([{', '.join(parts)}], 1)")
        elif op == "linear":
            p = g.graph["params"][a["param"]]
            w = self.param(a["param"], "weight")
            if tuple(a["cols"]) != (0, p.inp):
                w += f"[:, {a['cols'][0]}:{a['cols'][1]}]"
            args = [r[0], w] + ([self.param(a["param"], "bias")] if a["bias"] else [])
            self.assign(nid, f"F.linear({', '.join(args)})")
        elif op in ("add", "sub", "mul"):
            sym = {"add": "+", "sub": "-", "mul": "*"}[op]
            self.assign(nid, f"{r[0]} {sym} {self._atom(r[1]) if op == 'sub' else r[1]}")
        elif op == "neg":
            self.assign(nid, f"-{self._atom(r[0])}")
        elif op == "scale":
            self.assign(nid, f"{_f(a['value'])} * {self._atom(r[0])}")
        elif op == "sum":
            self.assign(nid, f"{self._atom(r[0])}.sum(1, keepdim=True)")
        elif op == "expand":
            self.assign(nid, f"{self._atom(r[0])}.expand(-1, {a['out']})")
        elif op == "fscale":
            self.assign(nid, self._fscale(nid, r[0], g.width(ins[0]), a["freqs"]))
        elif op == "posenc":
            u = f"u{nid}"
            self.out.lines.append(f"{u} = {self._fscale(nid, r[0], g.width(ins[0]), a['freqs'])}")
            parts = ([r[0]] if a["include_input"] else []) + [f"torch.sin({u})", f"torch.cos({u})"]
            self.assign(nid, f"torch.cat([{', '.join(parts)}], 1)", "positional encoding")
        elif op == "pointwise":
            self._pointwise_group(ins[0])
        else:
            raise CompileError(f"torch backend: no emission rule for op {op!r} (node %{nid})")

    def _region(self, region: fusion.Region) -> None:
        cls = self.fused.get(self.g, region)
        args = ", ".join(self.ref(i) for i in region.inputs)
        outs = [f"v{o}" for o in region.outputs]
        for o in region.outputs:
            self.var[o] = f"v{o}"
        labels = [self.g.attrs(n)["label"] for n in region.nodes if self.g.op(n) == "pointwise"]
        target = outs[0] if len(outs) == 1 else ", ".join(outs)
        comment = f"# {', '.join(labels)}"
        lines = sympy_print.split_long(target, f"{cls}.apply({args})")
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

    def _fscale(self, nid: int, src: str, width: int, freqs) -> str:
        buf = self.buffer(nid, [f for f in freqs for _ in range(width)])
        if width == 1:
            return f"{self._atom(src)} * {buf}"
        return f"{self._atom(src)}.repeat(1, {len(freqs)}) * {buf}"

    def _pointwise_group(self, src: int) -> None:
        members = self.groups[src]
        var = self.ref(src)
        if not var.isidentifier():  # give the shared input a name so the expressions stay short
            self.assign(src, var)
            var = self.var[src]
            self.inline.pop(src, None)
        fns = [A.lookup(self.g.attrs(m)["fn"]) for m in members]
        symbolic = []
        for m, fn in zip(members, fns):
            # a lone activation uses the fused library call (F.silu); beside its derivatives it is printed
            # from its expression so they share subexpressions (swish' reuses sigmoid(z) and z*sigmoid(z))
            if fn.library and len(members) == 1:
                args = {f"a{i}": _f(v) for i, v in enumerate(fn.library_args)}
                self.assign(m, sympy_print.LIBRARY[fn.library].format(x=var, **args), self.g.attrs(m)["label"])
            else:
                symbolic.append((m, fn))
        if symbolic:
            temps, codes = sympy_print.print_group([fn.expr for _, fn in symbolic], var, f"{var}_")
            for name, code in temps:
                self.out.lines.extend(sympy_print.split_long(name, code))
            for (m, _), code in zip(symbolic, codes):
                self.assign(m, code, self.g.attrs(m)["label"])
        self.done.update(members)


def _join_blocks(blocks: list[list[str]]) -> list[str]:
    out: list[str] = []
    for k, block in enumerate(blocks):
        out += (["", ""] if k else []) + block
    return out


def emit_graph(g: IRGraph, tag: str, owner: str, fused: FusedFunctions | None = None) -> Emitted:
    if len(g.graph["outputs"]) != 1:
        raise CompileError("torch backend: exactly one output node expected")
    return _Emitter(g, tag, owner, fused).run()


def generate(spec, integral_ir: IRGraph, grad_ir: IRGraph, version: str, fuse: bool = True) -> str:
    """The module source for a spec and its two graphs (deterministic: same input, same text).

    With ``fuse``, the grad network's elementwise regions become fused autograd Functions (the integral
    network stays plain PyTorch ops, so ``torch.func`` transforms of Phi keep working)."""
    integral = emit_graph(integral_ir, "ci", "self")
    fused = FusedFunctions() if fuse else None
    grad = emit_graph(grad_ir, "cg", "m", fused)
    params = [
        dict(name=name, out=p.out, inp=p.inp, bias=p.bias, wb=_f(p.weight_bound), bb=_f(p.bias_bound))
        for name, p in sorted(integral_ir.graph["params"].items())
    ]
    nonsmooth = sorted({grad_ir.attrs(n)["label"] for n in grad_ir.order()
                        if grad_ir.op(n) == "pointwise" and not A.lookup(grad_ir.attrs(n)["fn"]).smooth})
    return render(
        "torch_module.py.j2",
        spec=spec,
        version=version,
        params=params,
        integral=integral,
        grad=grad,
        fused_lines=_join_blocks(fused.sources if fused else []),
        kernels=fused.kernel_names if fused else [],
        buffer_lines=[line for b in integral.buffers + grad.buffers for line in b.lines()],
        dtype="torch.float64" if spec.dtype == "float64" else "torch.float32",
        in_features=spec.in_features,
        out_features=integral_ir.width(integral_ir.graph["outputs"][0]),
        columns=tuple(spec.integration_columns),
        wrt=list(spec.integrate),
        grad_title=("d" if len(spec.integrate) == 1 else f"d^{len(spec.integrate)} ") + "Phi / "
        + " ".join(f"d{v}" for v in spec.integrate),
        grad_uses_m=any("m." in line for line in grad.lines + [grad.result]) or bool(grad.buffers),
        nonsmooth=nonsmooth,
    )
