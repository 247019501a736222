"""The Triton backend: a ``Program`` -> one standalone Python module (jinja2 template
``templates/triton_module.py.j2``) whose ``IntegralNet``/``GradNet`` run generated Triton kernels
through ``torch.autograd.Function``s with Triton backwards. Source text only: no torch or triton import.

Lowering, per IR graph:
- **Elementwise units.** Every fusion region (``fusion.find_regions``), every remaining pointwise group
  (the activations of one tensor) and every remaining ``add/sub/mul/neg/scale`` becomes one unit: a
  forward kernel printing the region's output expressions and a backward kernel printing their
  sympy-derived vector-Jacobian product (``fusion.gradient_exprs``), both over 2-D tiles with
  per-input broadcast strides (rows ``[1, W]`` and width-1 columns broadcast; their gradients are summed
  by a Triton reduction kernel). Units that compute the same function share kernels.
- **Layers: stacked chains + epilogue.** The ``linear`` nodes that multiply the same weight columns and
  feed the same unit (the primal ``z = W h + b`` and the tangents ``ż = W ḣ`` of a layer: 1, 2, 4 or 8
  chains) become ONE GEMM kernel: each ``W`` tile is loaded once and multiplied into one accumulator per
  chain, the bias goes to the primal chain only, and the unit's expressions run in the epilogue (σ(z)
  and the tangent products), so the pre-activations reach memory only when backward needs them.
  ``linear`` nodes without such a consumer still share one GEMM when they stack
  (``stacking.find_stacks``: same weight columns, independent), with the bias epilogue only.
  Backward: the unit's backward kernel, then ``dX = dZ W`` per chain and ``dW = Σ dZᵀ X`` (split
  over the batch, summed by the reduction kernel), ``db`` by the reduction kernel.
- **Precision.** Kernels accumulate and evaluate in ``ACC`` (float64 for float64 data, else float32);
  float16/bfloat16 parameters and inputs are loaded, upcast, and stored back in their own dtype.
  float32 GEMMs use IEEE float32 (``allow_tf32`` opts into TF32).
- **Whole-network kernels** (``triton_fused``, opt-in ``FUSE_NETWORK``): the same schedule replayed on
  register tiles, one kernel per network, for inference.
- **Data movement in torch** (documented fallback): input columns, ``slice``, ``expand``, weight columns
  (``wcol``) are views; ``concat`` is ``torch.cat``. ``posenc``, ``fscale`` and ``sum`` are Triton kernels.

``LOWERINGS`` is the backend's one lowering table, derived, not written out: every elementwise op
(``ops.ELEMENTWISE``, printed from its sympy meaning in a unit), ``linear`` (a layer), and the rows of
``NODE_LOWER`` (everything else, one function per op). An op outside it is a ``CompileError`` naming
it. The IR is read only through node data (``op``, ``inputs``, ``attrs``, ``width``, ``batched``),
``graph['outputs'|'params'|'inputs']``, ``order()``, ``ir.pointwise_expr`` and the ``fusion`` helpers.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass, field

import networkx as nx
import sympy as sp

from ..core import fusion
from ..core.ir import IRGraph, nonsmooth_labels
from ..core.names import param_attribute
from ..core.ops import ELEMENTWISE, ELEMENTWISE_ARITHMETIC
from ..core.stacking import find_stacks
from ..errors import CompileError
from . import param_rows, sympy_print, triton_fused, triton_print
from .sympy_print import split_long, wrap_list
from .templating import render

#: the longest line of a generated Triton module: the project's ruff line-length (its template's own
#: lines reach 119; generated statements in method bodies keep to 110 plus the template's indent)
MODULE_LIMIT = 120

#: op -> how it is lowered: the backend's one lowering table (an op outside it is a CompileError). It is
#: derived: elementwise ops need no row of their own, ``NODE_LOWER`` (below) holds the rest
LOWERINGS: dict[str, str] = {}  # filled in below NODE_LOWER


def _f(v: float) -> str:
    return sympy_print.float_literal(v, "triton")


# ---------------------------------------------------------------------------------------------------
# Planning: units, layers, schedule
# ---------------------------------------------------------------------------------------------------


@dataclass
class LayerPlan:
    members: tuple[int, ...]  # the linear nodes (same param and columns), one per chain
    region: fusion.Region | None  # the unit fused into the epilogue


@dataclass
class GraphPlan:
    units: list[fusion.Region]  # every elementwise unit, in schedule order
    layers: list[LayerPlan]
    steps: list[tuple[str, int]]  # ("unit", k) | ("layer", k) | ("node", nid)


def _check_ops(g: IRGraph) -> None:
    for nid in g.order():
        op = g.nodes[nid]["op"]
        if op not in LOWERINGS:
            raise CompileError(f"triton backend: no Triton lowering for op {op!r} (node %{nid})")


def _units(g: IRGraph) -> list[fusion.Region]:
    regions = list(fusion.find_regions(g))
    taken = {n for r in regions for n in r.nodes}
    groups: dict[int, list[int]] = {}
    for nid in g.order():
        if nid not in taken and g.op(nid) == "pointwise":
            groups.setdefault(g.inputs_of(nid)[0], []).append(nid)
    for src, members in groups.items():
        regions.append(fusion.Region(tuple(members), (src,), tuple(members), (not g.nodes[src]["batched"],)))
    for nid in g.order():
        if nid not in taken and g.op(nid) in ELEMENTWISE_ARITHMETIC:
            ins = tuple(dict.fromkeys(g.inputs_of(nid)))
            regions.append(fusion.Region((nid,), ins, (nid,), tuple(not g.nodes[i]["batched"] for i in ins)))
    return sorted(regions, key=lambda r: r.nodes[0])


def _fusable(g: IRGraph, region: fusion.Region, members: list[int]) -> bool:
    width = g.width(region.outputs[0])
    if any(g.width(i) != width for i in region.inputs):
        return False
    if not all(g.nodes[o]["batched"] for o in region.outputs):
        return False
    others = [i for i in region.inputs if i not in members]
    for m in members:
        if any(nx.has_path(g, m, i) for i in others):
            return False
        if any(m != m2 and nx.has_path(g, m, m2) for m2 in members):
            return False
    return True


def plan_graph(g: IRGraph, stack: bool = True) -> GraphPlan:
    _check_ops(g)
    units = _units(g)
    layers: list[LayerPlan] = []
    fused_units: set[int] = set()
    in_layer: set[int] = set()
    if stack:
        for k, region in enumerate(units):
            cands: dict[tuple, list[int]] = {}
            for i in region.inputs:
                d = g.nodes[i]
                if d["op"] == "linear" and d["batched"] and i not in in_layer:
                    a = d["attrs"]
                    cands.setdefault((a["param"], tuple(a["cols"])), []).append(i)
            if not cands:
                continue
            members = max(cands.values(), key=len)  # the first of the largest groups
            if not _fusable(g, region, members):
                continue
            layers.append(LayerPlan(tuple(sorted(members)), region))
            fused_units.add(k)
            in_layer.update(members)
    rest = {nid for nid in g.order() if g.op(nid) == "linear" and nid not in in_layer}
    if stack:  # linear nodes on the same weight without a unit to fuse: still one GEMM for all chains
        for st in find_stacks(g, among=rest):
            layers.append(LayerPlan(st.members, None))
            rest -= set(st.members)
    for nid in sorted(rest):
        layers.append(LayerPlan((nid,), None))
    # contract the steps and order them (stable: by the smallest node id of each step)
    owner: dict[int, tuple[str, int]] = {}
    for k, layer in enumerate(layers):
        for n in layer.members + (layer.region.nodes if layer.region else ()):
            owner[n] = ("layer", k)
    for k, region in enumerate(units):
        if k not in fused_units:
            for n in region.nodes:
                owner[n] = ("unit", k)
    dag, first = fusion.contract(g, owner, node_key="node")
    if not nx.is_directed_acyclic_graph(dag):
        if stack:
            return plan_graph(g, stack=False)
        raise CompileError("triton backend: the fused schedule has a cycle")
    steps = list(nx.lexicographical_topological_sort(dag, key=lambda s: first[s]))
    return GraphPlan(units, layers, steps)


# ---------------------------------------------------------------------------------------------------
# Kernel sources
# ---------------------------------------------------------------------------------------------------


def _split_args(text: str) -> list[str]:
    """The top-level comma-separated arguments of a call's argument text (brackets and strings kept)."""
    src = f"f({text})"
    call = ast.parse(src, mode="eval").body
    return [ast.get_source_segment(src, a) for a in [*call.args, *call.keywords]]


def _tile_lines(exprs, names, targets, dtype: str, indent="    ") -> list[str]:
    """``target = expr`` lines (shared temporaries first); a constant becomes a full tile."""
    todo = [j for j, e in enumerate(exprs) if not (isinstance(e, sp.Expr) and e.is_number)]
    temps, codes = triton_print.print_exprs([exprs[j] for j in todo], names, "t")
    code = dict(zip(todo, codes))
    width = MODULE_LIMIT - len(indent)
    lines = [indent + ln for t, c in temps for ln in split_long(t, c, limit=width)]
    for j, target in enumerate(targets):
        if j in code:
            lines += [indent + ln for ln in split_long(target, code[j], limit=width)]
        else:
            lines.append(f"{indent}{target} = tl.full((BLOCK_M, BLOCK_N), {_f(exprs[j])}, {dtype})")
    return lines


def _load(name: str, ptr: str, stride_m: str, stride_n: str, indent="    ") -> str:
    return f"{indent}{name} = tl.load({ptr} + rm * {stride_m} + rn * {stride_n}, mask=mask, other=0.0).to(ACC)"


@dataclass
class UnitKernels:
    name: str  # _ew<k>
    n_in: int
    n_out: int
    live: tuple[int, ...]  # inputs with a nonzero gradient
    summary: str
    lines: list[str] = field(default_factory=list)
    outputs: list[sp.Expr] = field(default_factory=list)

    @property
    def cls(self) -> str:  # the autograd.Function
        return "Ew" + self.name.removeprefix("_ew")


def unit_kernels(name: str, g: IRGraph, region: fusion.Region) -> UnitKernels:
    outs = fusion.output_exprs(g, region)
    us = region.symbols
    gs = [sp.Symbol(f"g{j}", real=True) for j in range(len(outs))]
    grads = fusion.gradient_exprs(outs, us, gs)
    live = tuple(k for k, e in enumerate(grads) if e != 0)
    n_in, n_out = len(us), len(outs)
    names = {u: str(u) for u in us} | {gj: str(gj) for gj in gs}
    summary = "; ".join(f"o{j} = {sp.sstr(o, order='lex')}" for j, o in enumerate(outs))
    uk = UnitKernels(name, n_in, n_out, live, summary, outputs=outs)
    head = "    rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]).to(tl.int64)"
    head2 = "    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]"
    uargs = [f"U{k}, su{k}m, su{k}n" for k in range(n_in)]
    oargs = [f"O{j}" for j in range(n_out)]
    lines = ["@triton.autotune(configs=_EW_CONFIGS, key=['N'], **_TUNE)", "@triton.jit"]
    lines += _signature(
        f"{name}_fwd", uargs + oargs + ["M", "N", "ACC: tl.constexpr", "BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr"]
    )
    lines += [head, head2, "    mask = (rm < M) & (rn < N)"]
    lines += [_load(f"u{k}", f"U{k}", f"su{k}m", f"su{k}n") for k in range(n_in)]
    lines += _tile_lines(outs, names, [f"o{j}" for j in range(n_out)], "ACC")
    lines += [f"    tl.store(O{j} + rm * N + rn, o{j}, mask=mask)" for j in range(n_out)]
    lines += ["", ""]
    gargs = [f"G{j}, sg{j}m, sg{j}n" for j in range(n_out)]
    dargs = [f"D{k}" for k in live]
    lines += ["@triton.autotune(configs=_EW_CONFIGS, key=['N'], **_TUNE)", "@triton.jit"]
    lines += _signature(
        f"{name}_bwd",
        uargs + gargs + dargs + ["M", "N", "ACC: tl.constexpr", "BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr"],
    )
    lines += [head, head2, "    mask = (rm < M) & (rn < N)"]
    used = set().union(*(grads[k].free_symbols for k in live)) if live else set()
    lines += [_load(f"u{k}", f"U{k}", f"su{k}m", f"su{k}n") for k in range(n_in) if us[k] in used]
    lines += [_load(f"g{j}", f"G{j}", f"sg{j}m", f"sg{j}n") for j in range(n_out) if gs[j] in used]
    lines += _tile_lines([grads[k] for k in live], names, [f"d{k}" for k in live], "ACC")
    lines += [f"    tl.store(D{k} + rm * N + rn, d{k}, mask=mask)" for k in live]
    if not live:
        lines.append("    pass")
    uk.lines = lines
    return uk


def _signature(name: str, args: list[str]) -> list[str]:
    one = f"def {name}({', '.join(args)}):"
    if len(one) <= 110:
        return [one]
    return [f"def {name}("] + [f"    {a}," for a in args] + ["):"]


@dataclass
class LayerKernel:
    name: str  # _layer<k>
    chains: int
    bias: tuple[bool, ...]  # per chain
    unit: str | None  # the epilogue unit's name (its backward kernel is the layer's elementwise backward)
    zpos: tuple[int, ...]  # per chain: its position among the unit's inputs
    extras: tuple[int, ...]  # positions of the unit's other inputs
    n_out: int
    live: tuple[int, ...] = ()
    lines: list[str] = field(default_factory=list)

    @property
    def cls(self) -> str:  # the autograd.Function
        return "Layer" + self.name.removeprefix("_layer")


def layer_kernel(name: str, chains: int, bias: tuple[bool, ...], unit: UnitKernels | None, zpos, extras) -> LayerKernel:
    lk = LayerKernel(name, chains, bias, unit.name if unit else None, tuple(zpos), tuple(extras),
                     unit.n_out if unit else 0, unit.live if unit else ())  # fmt: skip
    xargs = [f"X{j}, sx{j}m, sx{j}k" for j in range(chains)]
    eargs = [f"E{q}, se{q}m, se{q}n" for q in range(len(extras))]
    zargs = [f"Z{j}" for j in range(chains)]
    oargs = [f"O{j}" for j in range(lk.n_out)]
    bargs = ["B"] if any(bias) else []
    consts = ["STORE_Z: tl.constexpr", "PREC: tl.constexpr", "ACC: tl.constexpr"]
    consts += ["BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr", "BLOCK_K: tl.constexpr"]
    lines = ["@triton.autotune(configs=_GEMM_CONFIGS, key=['N', 'K'], **_TUNE)", "@triton.jit"]
    lines += _signature(
        f"{name}_fwd", xargs + ["W, swn, swk"] + bargs + eargs + zargs + oargs + ["M", "N", "K"] + consts
    )
    lines += [
        "    rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]).to(tl.int64)",
        "    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]",
        "    rk = tl.arange(0, BLOCK_K)",
    ]
    lines += [f"    acc{j} = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)" for j in range(chains)]
    lines += [
        "    for k0 in range(0, K, BLOCK_K):",
        "        kk = k0 + rk",
        "        w = tl.load(W + rn * swn + kk[:, None] * swk, mask=(kk[:, None] < K) & (rn < N), other=0.0)",
        "        xmask = (rm < M) & (kk[None, :] < K)",
    ]
    for j in range(chains):
        lines.append(f"        x{j} = tl.load(X{j} + rm * sx{j}m + kk[None, :] * sx{j}k, mask=xmask, other=0.0)")
        lines.append(f"        acc{j} += _dot(x{j}, w, PREC, ACC)")
    lines.append("    mask = (rm < M) & (rn < N)")
    if any(bias):
        lines.append("    b = tl.load(B + rn, mask=rn < N, other=0.0).to(ACC)")
        lines += [f"    acc{j} += b" for j in range(chains) if bias[j]]
    if unit is None:
        lines += [f"    tl.store(Z{j} + rm * N + rn, acc{j}, mask=mask)" for j in range(chains)]
    else:
        lines.append("    if STORE_Z:")
        lines += [f"        tl.store(Z{j} + rm * N + rn, acc{j}, mask=mask)" for j in range(chains)]
        us = [sp.Symbol(f"u{k}", real=True) for k in range(unit.n_in)]
        names = {us[p]: f"acc{j}" for j, p in enumerate(zpos)}
        for q, p in enumerate(extras):
            names[us[p]] = f"e{q}"
            lines.append(_load(f"e{q}", f"E{q}", f"se{q}m", f"se{q}n"))
        lines += _tile_lines(unit.outputs, names, [f"o{j}" for j in range(unit.n_out)], "ACC")
        lines += [f"    tl.store(O{j} + rm * N + rn, o{j}, mask=mask)" for j in range(unit.n_out)]
    lk.lines = lines
    return lk


class Kernels:
    """Units and layers of both graphs, deduplicated by what they compute."""

    def __init__(self):
        self.units: dict[tuple, UnitKernels] = {}
        self.layers: dict[tuple, LayerKernel] = {}

    def unit(self, g: IRGraph, region: fusion.Region) -> UnitKernels:
        sig = fusion.signature(g, region)
        if sig not in self.units:
            self.units[sig] = unit_kernels(f"_ew{len(self.units)}", g, region)
        return self.units[sig]

    def layer(self, g: IRGraph, plan: LayerPlan) -> LayerKernel:
        bias = tuple(bool(g.attrs(m)["bias"]) for m in plan.members)
        unit = self.unit(g, plan.region) if plan.region else None
        zpos = tuple(plan.region.inputs.index(m) for m in plan.members) if plan.region else ()
        extras = tuple(p for p in range(len(plan.region.inputs)) if p not in zpos) if plan.region else ()
        sig = (len(plan.members), bias, unit.name if unit else None, zpos)
        if sig not in self.layers:
            self.layers[sig] = layer_kernel(f"_layer{len(self.layers)}", len(plan.members), bias, unit, zpos, extras)
        return self.layers[sig]


# ---------------------------------------------------------------------------------------------------
# Forward-method emission
# ---------------------------------------------------------------------------------------------------


@dataclass
class Buffer:
    name: str
    values: tuple[float, ...]
    row: bool  # [1, width] (a constant row) or [len] (frequencies)

    def lines(self) -> list[str]:
        vals = ", ".join(_f(v) for v in self.values)
        lit = f"[[{vals}]]" if self.row else f"[{vals}]"
        one = f'self.register_buffer("{self.name}", torch.tensor({lit}, **kw), persistent=False)'
        if len(one) <= 110:
            return [one]
        wrapped = textwrap.wrap(vals, width=92, break_long_words=False)
        open_, close = ("[[", "]]") if self.row else ("[", "]")
        body = [f"        {open_ if i == 0 else ' ' * len(open_)}{w}" for i, w in enumerate(wrapped)]
        body[-1] += close + ","
        return ["self.register_buffer(", f'    "{self.name}",', "    torch.tensor(", *body, "        **kw,", "    ),",
                "    persistent=False,", ")"]  # fmt: skip


@dataclass
class Emitted:
    lines: list[str] = field(default_factory=list)
    buffers: list[Buffer] = field(default_factory=list)
    result: str = ""
    plan: GraphPlan | None = None
    buffer_of: dict[int, str] = field(default_factory=dict)  # node id -> its buffer's module attribute


class _Emitter:
    def __init__(self, g: IRGraph, tag: str, owner: str, kernels: Kernels, stack: bool):
        self.g, self.tag, self.owner, self.kernels = g, tag, owner, kernels
        self.plan = plan_graph(g, stack)
        self.out = Emitted()
        self.ref_: dict[int, str] = {}
        self.total = max((b for _, b in g.graph["inputs"].values()), default=0)

    def ref(self, nid: int) -> str:
        return self.ref_[nid]

    def batched_ref(self, nid: int) -> str:
        r = self.ref(nid)
        return r if self.g.nodes[nid]["batched"] else f"{r}.expand(x.shape[0], -1)"

    def param(self, name: str, part: str) -> str:
        return f"{self.owner}.{param_attribute(name, part)}"

    def assign(self, nid: int, code: str, comment: str = "") -> None:
        name = f"v{nid}"
        self.ref_[nid] = name
        line = f"{name} = {code}"
        if comment and len(line) + len(comment) <= 104:
            line += f"  # {comment}"
        self.out.lines.append(line)

    def buffer(self, nid: int, values, row: bool, kind: str = "c") -> str:
        name = f"{kind}{self.tag}{nid}"
        self.out.buffers.append(Buffer(name, tuple(float(v) for v in values), row))
        self.out.buffer_of[nid] = f"{self.owner}.{name}"
        return f"{self.owner}.{name}"

    def run(self) -> Emitted:
        g = self.g
        for kind, k in self.plan.steps:
            if kind == "layer":
                self._layer(self.plan.layers[k])
            elif kind == "unit":
                self._unit(self.plan.units[k])
            else:
                self._node(k)
        (o,) = g.graph["outputs"]
        self.out.result = self.batched_ref(o)
        self.out.plan = self.plan
        return self.out

    def _labels(self, region: fusion.Region) -> str:
        """The unit's functions by name (a derivative under its function's name; a long formula as
        "formula"), so the comment stays one short line."""
        labels = []
        for n in region.nodes:
            if self.g.op(n) == "pointwise":
                label = self.g.attrs(n)["fn"].label.rstrip("'")
                labels.append("formula" if len(label) > 24 else label)
        return ", ".join(dict.fromkeys(labels))

    def _call(self, targets: list[str], call: str, comment: str) -> None:
        lhs = f"({targets[0]},)" if len(targets) == 1 else ", ".join(targets)
        line = f"{lhs} = {call}"
        if comment and len(line) + len(comment) <= 104:
            line += f"  # {comment}"
        elif comment:
            self.out.lines.append(f"# {comment}")
        if len(line) <= 110:
            self.out.lines.append(line)
            return
        lines = split_long(lhs, call, limit=110)  # one argument per line
        if max(map(len, lines)) <= 110:
            self.out.lines += lines
            return
        head, _, args = call.partition("(")  # many targets: both sides as blocks (the template indents by 8)
        self.out.lines += wrap_list("", "(", targets, f") = {head}(", force=True)[:-1]
        self.out.lines += wrap_list("", f") = {head}(", [a.strip() for a in _split_args(args[:-1])], ")", force=True)

    def _layer(self, layer: LayerPlan) -> None:
        g = self.g
        lk = self.kernels.layer(g, layer)
        a = g.attrs(layer.members[0])
        p = g.graph["params"][a["param"]]
        w = self.param(a["param"], "weight")
        if tuple(a["cols"]) != (0, p.inp):
            w += f"[:, {a['cols'][0]}:{a['cols'][1]}]"
        b = self.param(a["param"], "bias") if any(lk.bias) else "None"
        xs = [self.ref(g.inputs_of(m)[0]) for m in layer.members]
        region = layer.region
        es = [self.ref(region.inputs[p]) for p in lk.extras] if region else []
        outs = list(region.outputs) if region else []
        inner = set(region.nodes) if region else set()
        outputs = set(g.graph["outputs"])
        exposed = [
            m for m in layer.members if region is None or m in outputs or any(s not in inner for s in g.successors(m))
        ]
        targets = [f"v{o}" for o in outs] + [f"v{m}" for m in exposed]
        for n in outs + exposed:
            self.ref_[n] = f"v{n}"
        flags = "".join("1" if (region is None or m in exposed) else "0" for m in layer.members)
        args = ", ".join([w, b, *xs, *es])
        what = (self._labels(region) or ", ".join(self.g.op(n) for n in region.nodes)) if region else ""
        label = f"{a['param']} x{len(layer.members)}" + (f" -> {what}" if region else "")
        self._call(targets, f'_run({lk.cls}, "{flags}", {args})', label)

    def _unit(self, region: fusion.Region) -> None:
        uk = self.kernels.unit(self.g, region)
        for o in region.outputs:
            self.ref_[o] = f"v{o}"
        args = ", ".join(self.ref(i) for i in region.inputs)
        label = self._labels(region) or ", ".join(self.g.op(n) for n in region.nodes)
        self._call([f"v{o}" for o in region.outputs], f"_run({uk.cls}, {args})", label)

    def _contiguous_inputs(self, ins) -> bool:
        g = self.g
        if not all(g.op(i) == "input" for i in ins):
            return False
        return all(g.attrs(p)["stop"] == g.attrs(q)["start"] for p, q in zip(ins, ins[1:]))

    def _node(self, nid: int) -> None:
        op = self.g.op(nid)
        if op not in NODE_LOWER:  # linear and elementwise ops always belong to a layer or a unit
            raise CompileError(f"triton backend: no Triton lowering for op {op!r} (node %{nid})")
        NODE_LOWER[op](self, nid, self.g.attrs(nid), self.g.inputs_of(nid))


def _lower_input(e: _Emitter, nid: int, a: dict, ins) -> None:
    """view of x"""
    e.ref_[nid] = "x" if (a["start"], a["stop"]) == (0, e.total) else f"x[:, {a['start']}:{a['stop']}]"


def _lower_concat(e: _Emitter, nid: int, a: dict, ins) -> None:
    """torch.cat (data movement), or a view of adjacent input columns"""
    if e._contiguous_inputs(ins):
        first, last = e.g.attrs(ins[0])["start"], e.g.attrs(ins[-1])["stop"]
        e.ref_[nid] = "x" if (first, last) == (0, e.total) else f"x[:, {first}:{last}]"
        return
    parts = [e.batched_ref(i) for i in ins] if e.g.nodes[nid]["batched"] else [e.ref(i) for i in ins]
    e.assign(nid, f"torch.cat([{', '.join(parts)}], 1)")


def _lower_fscale(e: _Emitter, nid: int, a: dict, ins) -> None:
    """Triton kernel (_FScale)"""
    e.assign(nid, f"_FScale.apply({e.ref(ins[0])}, {e.buffer(nid, a['freqs'], False, 'f')})")


def _lower_posenc(e: _Emitter, nid: int, a: dict, ins) -> None:
    """Triton kernel (_PosEnc)"""
    buf = e.buffer(nid, a["freqs"], False, "f")
    e.assign(nid, f"_PosEnc.apply({e.ref(ins[0])}, {buf}, {bool(a['include_input'])})", "positional encoding")


def _set(e: _Emitter, nid: int, ref: str) -> None:
    e.ref_[nid] = ref


#: op -> how a node outside every layer and unit is lowered: ``lower(emitter, nid, attrs, inputs)``
#: (data movement in torch, and the Triton kernels of the ops that are not elementwise)
NODE_LOWER = {
    "input": _lower_input,
    "constant": lambda e, nid, a, ins: _set(e, nid, e.buffer(nid, a["value"], True)),
    "wcol": lambda e, nid, a, ins: _set(e, nid, f"{e.param(a['param'], 'weight')}[:, {a['col']}:{a['col'] + 1}].t()"),
    "slice": lambda e, nid, a, ins: e.assign(nid, f"{e.ref(ins[0])}[:, {a['start']}:{a['stop']}]"),
    "expand": lambda e, nid, a, ins: e.assign(nid, f"{e.ref(ins[0])}.expand(-1, {a['out']})"),
    "concat": _lower_concat,
    "sum": lambda e, nid, a, ins: e.assign(nid, f"_RowSum.apply({e.ref(ins[0])})"),
    "fscale": _lower_fscale,
    "posenc": _lower_posenc,
}
_NODE_DOC = {
    "constant": "buffer",
    "wcol": "view of the weight (torch)",
    "slice": "view (torch)",
    "expand": "view (torch)",
    "sum": "Triton reduction kernel (_RowSum)",
}
LOWERINGS.update(
    {op: "Triton elementwise unit (printed from its sympy meaning)" for op in sorted(ELEMENTWISE)}
    | {"linear": "Triton GEMM over stacked chains, bias and elementwise epilogue"}
    | {op: _NODE_DOC.get(op) or (fn.__doc__ or op).strip() for op, fn in NODE_LOWER.items()}
)


def emit_graph(g: IRGraph, tag: str, owner: str, kernels: Kernels, stack: bool = True) -> Emitted:
    if len(g.graph["outputs"]) != 1:
        raise CompileError("triton backend: exactly one output node expected")
    return _Emitter(g, tag, owner, kernels, stack).run()


# ---------------------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------------------


def generate(
    program,
    *,
    version: str,
    stack: bool = True,
    allow_tf32: bool = False,
    fuse_network: bool = True,
    fused_chunk: int = triton_fused.CHUNK,
    fused_precision: str = "tf32x3",
    **options,
) -> str:
    """The module source for a ``Program`` (deterministic: same program and options, same text).

    ``stack`` (default) runs the chains of a layer as one GEMM with the unit in its epilogue; ``False``
    gives one GEMM per ``linear`` node and one kernel per unit. ``allow_tf32`` lets float32 GEMMs use
    TF32 tensor cores on the GPU (about 1e-3 relative error; default: IEEE float32). The module always
    holds one whole-network kernel per network (``triton_fused``, ``fused_chunk`` columns per register
    tile); ``fuse_network`` sets its ``FUSE_NETWORK`` switch, under which inference (autograd not
    recording) runs them. On by default: on an H200 they ran the grad network 3x faster than the
    per-layer kernels and 1.8x faster than ``torch.compile`` of the torch module
    (``benchmarks/results/gpu/README.md``). Training always runs the per-layer kernels."""
    if fused_precision not in ("tf32x3", "tf32", "ieee"):
        raise CompileError(f"triton backend: fused_precision must be tf32x3, tf32 or ieee, got {fused_precision!r}")
    unknown = sorted(set(options) - {"fuse"})
    if unknown:
        raise CompileError(f"triton backend: unknown option(s) {', '.join(unknown)}")
    integral_ir, grad_ir = program.integral, program.grad
    kernels = Kernels()
    integral = emit_graph(integral_ir, "i", "self", kernels, stack)
    grad = emit_graph(grad_ir, "g", "m", kernels, stack)
    fused = {
        key: triton_fused.fused_kernel(
            ir_,
            em.plan,
            kernels,
            f"_{key}_fused_kernel",
            weight_attr=lambda p, owner=owner: f"{owner}.{param_attribute(p, 'weight')}",
            bias_attr=lambda p, owner=owner: f"{owner}.{param_attribute(p, 'bias')}",
            buffers=em.buffer_of,
            chunk=fused_chunk,
        )
        for key, ir_, em, owner in (("integral", integral_ir, integral, "self"), ("grad", grad_ir, grad, "m"))
    }
    fused_calls = {key: _fused_call(kernel) for key, kernel in fused.items()}
    params = param_rows(integral_ir.graph["params"], "triton")
    units = list(kernels.units.values())
    layers = list(kernels.layers.values())
    code = "\n".join(line for u in units for line in u.lines) + "\n".join(line for k in layers for line in k.lines)
    wrt = list(program.wrt)
    return render(
        "triton_module.py.j2",
        net_name=program.name,
        spec_hash=program.hash,
        version=version,
        params=params,
        integral=integral,
        grad=grad,
        units=units,
        layers=layers,
        helpers=[text for name, text in triton_print.HELPERS if name in triton_print.used_helpers(code)],
        buffer_lines=[line for b in integral.buffers for line in b.lines()],
        grad_buffer_lines=[line for b in grad.buffers for line in b.lines()],
        grad_params=_attributes_read(grad.lines + [grad.result] + fused_calls["grad"], "m", params),
        dtype="torch.float64" if program.dtype == "float64" else "torch.float32",
        in_features=program.in_features,
        out_features=program.out_features,
        columns=tuple(program.integration_columns),
        grad_title=("d" if len(wrt) == 1 else f"d^{len(wrt)} ") + "Phi / " + " ".join(f"d{v}" for v in wrt),
        grad_uses_m=any("m." in line for line in grad.lines + [grad.result] + fused_calls["grad"]),
        nonsmooth=nonsmooth_labels(grad_ir),
        allow_tf32=allow_tf32,
        stack=stack,
        fuse_network=fuse_network,
        fused_precision=fused_precision,
        precision=program.precision,
        fused=fused,
        fused_calls=fused_calls,
        fuse_helpers=any(f.lines for f in fused.values()),
    )


def _attributes_read(lines: list[str], owner: str, params) -> list[str]:
    """The parameter attributes of ``owner`` that the grad network's code reads (sorted): GradNet
    registers exactly these, as the same tensors as IntegralNet's (what DDP and optimizers need)."""
    names = {p["weight"] for p in params} | {p["bias_attr"] for p in params if p["bias"]}
    used = set(re.findall(rf"\b{owner}\.(\w+)", "\n".join(lines)))
    return sorted(used & names)


def _fused_call(kernel: triton_fused.FusedKernel) -> list[str]:
    """``return _fused(kernel, x, tensors...)`` laid out within the line limit (empty when not fused)."""
    if not kernel.lines:
        return []
    args = [kernel.name, "x", *kernel.tensors]
    one = f"y = _fused({', '.join(args)})"
    return [one] if len(one) <= 100 else ["y = _fused(", *[f"    {a}," for a in args], ")"]
