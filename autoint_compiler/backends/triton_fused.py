"""Whole-network Triton kernels: one kernel computes a network for a block of rows, every layer's
values kept on chip (registers) from the input columns to the output. Source text only.

The kernel follows the per-layer backend's schedule (``triton_backend.plan_graph``): a layer's chains
(primal and tangents on one weight) load each weight tile ONCE per block and run one ``tl.dot`` per
chain, the bias and the layer's elementwise unit (σ(z) and the tangent products, the same sympy
expressions and Triton printer table as the per-layer kernels) follow in registers, and only the
network's output is written to memory. Inference only: with the module's ``FUSE_NETWORK`` on, it runs
when autograd is not recording (``torch.no_grad()``, ``inference_mode`` or parameters that do not
require grad); training keeps the per-layer kernels, whose forward saves what their backward needs.

Values are register tiles ``[BLOCK_M, P]`` (rows ``[1, P]`` for unbatched values), a value wider than
``chunk`` columns being several tiles, with ``P`` the chunk's width padded to a power of two (at least
16, the smallest ``tl.dot``); padding columns always hold zero, so they add nothing to the next GEMM.
A layer multiplies chunk by chunk: ``chunk x chunk`` weight blocks, each loaded once for all chains.
Data movement (slices, concat, expand, positional encoding, frequency scaling) moves columns exactly
(a masked row reduction and a select per column, no arithmetic on the values) or sums a row.
A graph with a value wider than ``MAX_WIDTH`` is not fused: ``plan_fused`` says why (a comment in
the generated ``forward``) and the module keeps the per-layer kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..core import fusion
from ..core.ir import IRGraph
from ..core.ops import ELEMENTWISE
from ..errors import CompileError
from . import sympy_print, triton_print
from .sympy_print import split_long, wrap_list

#: columns per register tile by default; a wider value is held as several tiles (chunks), and a layer
#: multiplies chunk by chunk, so one weight block is CHUNK x CHUNK (a power of two, at least 16).
#: 128 (one tile up to MAX_WIDTH): on an H200 a 128-wide tf32x3 grad network ran in 3.2 ms at 2^20 rows
#: with 128-column tiles against 6.4 ms with 64 and 8.0 ms with 32 (benchmarks/results/gpu/README.md)
CHUNK = 128
#: the widest value a fused kernel holds. 256 compiles (ptxas, sm_90, tf32x3) in 24 s for a one-chain
#: network and in more than 10 minutes for a two-variable grad network, spilling 7 KB+ per thread: wider
#: networks keep the per-layer kernels
MAX_WIDTH = 128
#: the most columns a layer's chains hold at once per row (chains x width): the register budget. On an
#: H200 (triton 3.6) two chains of 128 and four of 64 ran 1.6-2.4x faster than torch.compile; four
#: chains of 128 were slower than torch.compile, and eight of 128 took over 120 s to compile or hit an
#: illegal instruction (benchmarks/results/gpu/README.md). Wider networks keep the per-layer kernels
MAX_LIVE_COLUMNS = 256


#: op -> how a whole-network kernel computes it (an op without a row: the graph keeps the per-layer kernels)
LOWERINGS: dict[str, str] = {
    "input": "masked load of x's columns, at first use",
    "constant": "masked load of its buffer row",
    "wcol": "masked load of a weight column as a row",
    "linear": "tl.dot per chunk pair, weight block loaded once for all chains; bias added",
    # every elementwise op (ops.ELEMENTWISE): the unit's printed sympy expressions, per chunk
    **dict.fromkeys(sorted(ELEMENTWISE), "the unit's printed sympy expressions, per chunk"),
    "slice": "exact column moves (_fz_move)",
    "concat": "exact column moves (_fz_move), or one load of adjacent input columns",
    "expand": "row sum broadcast",
    "sum": "row sum into column 0",
    "posenc": "exact column repeats (_fz_repeat), then sin/cos of the scaled columns (_fz_scale)",
    "fscale": "exact column repeats (_fz_repeat), then scaling (_fz_scale)",
}


def _pad(width: int) -> int:
    p = 16
    while p < width:
        p *= 2
    return p


@dataclass
class FusedKernel:
    name: str  # the @triton.jit function
    lines: list[str]
    tensors: list[str]  # launcher arguments after x, in the kernel's order (module attribute paths)
    reason: str = ""  # why the graph is not fused (then ``lines`` is empty)


@dataclass
class _Tile:
    """A value as register tiles: chunk j holds columns [j*CHUNK, j*CHUNK + pad) of which ``valid(j)``
    are real (the rest zero)."""

    var: str
    width: int
    batched: bool
    chunk: int

    @property
    def pad(self) -> int:
        return _pad(min(self.width, self.chunk))

    @property
    def chunks(self) -> int:
        return -(-self.width // self.chunk)

    def valid(self, j: int) -> int:
        return min(self.chunk, self.width - j * self.chunk)

    def at(self, j: int) -> str:
        return self.var if self.chunks == 1 else f"{self.var}_{j}"

    @property
    def names(self) -> list[str]:
        return [self.at(j) for j in range(self.chunks)]


@dataclass
class _Writer:
    g: IRGraph
    chunk: int
    buffers: dict[int, str]  # node id -> module attribute of its constant row / frequency buffer
    lines: list[str] = field(default_factory=list)
    tiles: dict[int, _Tile] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)  # kernel argument -> module attribute (ordered)
    cols: set[int] = field(default_factory=set)
    ks: set[int] = field(default_factory=set)  # paddings used as weight-row indices
    pending: dict[int, dict] = field(default_factory=dict)  # input nodes not loaded yet

    def emit(self, line: str) -> None:
        name, sep, code = line.partition(" = ")
        if len(line) <= 106 or not sep or line.startswith("#"):
            self.lines.append("    " + line)
        else:  # a long assignment, broken the way the rest of the generated code is
            self.lines += ["    " + ln for ln in split_long(name, code, limit=106)]

    def col(self, pad: int) -> str:
        self.cols.add(pad)
        return f"c{pad}"

    def arg(self, kernel_name: str, attr: str) -> str:
        self.args.setdefault(kernel_name, attr)
        return kernel_name

    def tile(self, nid: int) -> _Tile:
        """A value's tiles; an input's columns are loaded here, at their first use."""
        if nid in self.pending:
            t = self.tiles[nid]
            a = self.pending.pop(nid)
            self.emit(f"# input columns {a['start']}:{a['stop']}")
            self.load_columns(t, "X", " + rm * sx0", str(a["start"]), "sx1", mask="(rm < M)")
        return self.tiles[nid]

    def put(self, nid: int) -> _Tile:
        d = self.g.nodes[nid]
        t = _Tile(f"v{nid}", d["width"], bool(d["batched"]), self.chunk)
        self.tiles[nid] = t
        return t

    def rows(self, batched: bool) -> str:
        return "BLOCK_M" if batched else "1"

    def masked(self, t: _Tile, j: int) -> None:
        """Zero the padding columns of an elementwise result (an activation of 0 need not be 0)."""
        if t.valid(j) < t.pad:
            self.emit(f"{t.at(j)} = tl.where({self.col(t.pad)} < {t.valid(j)}, {t.at(j)}, 0.0)")

    def load_columns(self, t: _Tile, ptr: str, row: str, col0: str, stride: str, mask: str = "") -> None:
        """Each chunk of ``t`` from ``ptr + row + (col0 + column) * stride`` (padding masked to zero)."""
        for j in range(t.chunks):
            c = self.col(t.pad)
            base = f"{col0} + {j * t.chunk}" if j else col0
            m = f"{mask} & ({c} < {t.valid(j)})" if mask else f"{c} < {t.valid(j)}"
            self.emit(f"{t.at(j)} = tl.load({ptr}{row} + ({base} + {c}) * {stride}, mask={m}, other=0.0).to(ACC)")


def plan_fused(g: IRGraph, plan=None) -> str:
    """Why ``g`` (scheduled by ``plan``, a ``GraphPlan``) cannot be one fused kernel ("" when it can)."""
    missing = sorted({g.op(n) for n in g.order()} - set(LOWERINGS))
    if missing:
        return f"no whole-network lowering for op(s) {', '.join(missing)}"
    widest = max((g.nodes[n]["width"] for n in g.order()), default=1)
    if widest > MAX_WIDTH:
        return f"a value {widest} wide exceeds MAX_WIDTH = {MAX_WIDTH} (registers)"
    for layer in plan.layers if plan is not None else ():
        live = len(layer.members) * g.nodes[layer.members[0]]["width"]
        if live > MAX_LIVE_COLUMNS:
            return (f"{len(layer.members)} chains x {live // len(layer.members)} columns = {live} live columns per "
                    f"row exceed MAX_LIVE_COLUMNS = {MAX_LIVE_COLUMNS} (registers)")
    return ""


def fused_kernel(
    g: IRGraph, plan, kernels, name: str, weight_attr, bias_attr, buffers, chunk: int = CHUNK
) -> FusedKernel:
    """The kernel text of graph ``g`` scheduled by ``plan`` (a ``GraphPlan``); ``kernels`` gives each
    layer's and unit's expressions (``triton_backend.Kernels``), ``weight_attr(param)`` and
    ``bias_attr(param)`` the module attributes, ``buffers`` node id -> buffer attribute; ``chunk``
    columns per register tile."""
    if chunk < 16 or chunk & (chunk - 1):
        raise CompileError(f"triton backend: fused_chunk must be a power of two >= 16, got {chunk}")
    reason = plan_fused(g, plan)
    if reason:
        return FusedKernel(name, [], [], reason)
    w = _Writer(g, chunk, buffers)
    params: dict[str, int] = {}

    def weight(param: str) -> str:
        k = params.setdefault(param, len(params))
        w.arg(f"W{k}", weight_attr(param))
        return f"W{k}"

    for kind, k in plan.steps:
        if kind == "layer":
            _layer(w, plan.layers[k], kernels, weight, bias_attr, params)
        elif kind == "unit":
            _unit(w, plan.units[k], kernels.unit(g, plan.units[k]).outputs)
        else:
            _node(w, k, weight)
    (o,) = g.graph["outputs"]
    t = w.tile(o)
    for j in range(t.chunks):
        c = w.col(t.pad)
        out = t.at(j) if t.batched else f"({t.at(j)} + tl.zeros((BLOCK_M, {t.pad}), dtype=ACC))"
        col = f"{j * t.chunk} + {c}" if j else c
        store = [
            f"Y + rm * {t.width} + {col}",
            f"{out}.to(Y.dtype.element_ty)",
            f"mask=(rm < M) & ({c} < {t.valid(j)})",
        ]
        w.lines += wrap_list("    ", "tl.store(", store, ")")
    args = []
    for a in w.args:
        args.append(f"{a}, s{a}0, s{a}1" if a[0] in "WC" else a)
    widest = max(g.nodes[n]["width"] for n in g.order())
    head = [f"@triton.autotune(configs=_fused_configs({widest}), key=['M_LOG2'], **_TUNE)", "@triton.jit"]
    sig = ["X, sx0, sx1", *args, "Y, M, M_LOG2", "PREC: tl.constexpr", "ACC: tl.constexpr",
           "BLOCK_M: tl.constexpr"]  # fmt: skip
    one = f"def {name}({', '.join(sig)}):"
    head += [one] if len(one) <= 110 else [f"def {name}(", *[f"    {s}," for s in sig], "):"]
    body = ["    rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]).to(tl.int64)"]
    body += [f"    c{p} = tl.arange(0, {p})[None, :]" for p in sorted(w.cols)]
    body += [f"    k{p} = tl.arange(0, {p})[:, None]" for p in sorted(w.ks)]
    return FusedKernel(name, head + body + w.lines, list(w.args.values()))


def _layer(w: _Writer, layer, kernels, weight, bias_attr, params) -> None:
    """The layer's chains: each weight block loaded once, one ``tl.dot`` per chain, bias, then its unit."""
    g = w.g
    a = g.attrs(layer.members[0])
    start, stop = a["cols"]
    wk, p = weight(a["param"]), params[a["param"]]
    hs = [w.tile(g.inputs_of(m)[0]) for m in layer.members]
    zs = [w.put(m) for m in layer.members]
    ink = _Tile("", stop - start, True, w.chunk)
    C = w.chunk
    w.emit(f"# {a['param']}: {len(layer.members)} chain(s), weight columns {start}:{stop}")
    bias = [bool(g.attrs(m)["bias"]) for m in layer.members]
    for j in range(zs[0].chunks):  # output chunks
        cn, rows = w.col(zs[0].pad), zs[0].valid(j)
        for i in range(ink.chunks):  # input chunks
            ck = f"k{ink.pad}"
            w.ks.add(ink.pad)
            wt = f"w{p}_{start}" + (f"_{i}_{j}" if ink.chunks > 1 or zs[0].chunks > 1 else "")
            n0 = f"{j * C} + {cn}" if j else cn
            k0 = start + i * C
            w.emit(
                f"{wt} = tl.load({wk} + ({n0}) * s{wk}0 + ({k0} + {ck}) * s{wk}1, "
                f"mask=({cn} < {rows}) & ({ck} < {ink.valid(i)}), other=0.0)"
            )
            for h, z in zip(hs, zs):
                op = "=" if i == 0 else "+="
                if z.batched:
                    dot = f"_dot({h.at(i)}, {wt}, PREC, ACC)"
                    w.emit(f"{z.at(j)} {op} {dot}")
                else:  # a row through the weight: a broadcast product and a reduction
                    w.emit(f"{z.at(j)} {op} tl.sum({h.at(i)}[:, :, None] * {wt}.to(ACC)[None, :, :], axis=1)")
        if any(bias):
            bk = w.arg(f"B{p}", bias_attr(a["param"]))
            b0 = f"{j * C} + {cn}" if j else cn
            w.emit(f"b{p}_{j} = tl.load({bk} + {b0}, mask={cn} < {rows}, other=0.0).to(ACC)")
            for z, has in zip(zs, bias):
                if has:
                    w.emit(f"{z.at(j)} += b{p}_{j}")
    if layer.region is not None:
        _unit(w, layer.region, kernels.unit(g, layer.region).outputs)


def _unit(w: _Writer, region: fusion.Region, outputs: list[sp.Expr]) -> None:
    """The region's output expressions, chunk by chunk (width-1 inputs broadcast as columns)."""
    tiles = [w.put(o) for o in region.outputs]
    width = tiles[0].width
    cols = {}
    for i in region.inputs:
        t = w.tile(i)
        if t.width == 1 and width > 1:  # a width-1 column broadcast along the row
            cols[i] = f"{t.var}_col"
            w.emit(f"{cols[i]} = tl.sum({t.var}, axis=1)[:, None]")
        elif t.width != width:
            raise AssertionError(f"elementwise input %{i} is {t.width} wide, the unit {width}")
    todo = [j for j, e in enumerate(outputs) if not (isinstance(e, sp.Expr) and e.is_number)]
    padded = [sym for sym, i in zip(region.symbols, region.inputs) if i not in cols]  # zero in padding columns
    keeps_zero = [_keeps_zero(e, padded) for e in outputs]
    for c in range(tiles[0].chunks):
        names = {sym: cols.get(i) or w.tiles[i].at(c) for sym, i in zip(region.symbols, region.inputs)}
        prefix = f"t{region.nodes[0]}_" + (f"{c}_" if tiles[0].chunks > 1 else "")
        temps, codes = triton_print.print_exprs([outputs[j] for j in todo], names, prefix)
        code = dict(zip(todo, codes))
        for t, text in temps:
            w.emit(f"{t} = {text}")
        for j, t in enumerate(tiles):
            if j in code:
                w.emit(f"{t.at(c)} = {code[j]}")
            else:
                value = sympy_print.float_literal(outputs[j], "triton")
                w.emit(f"{t.at(c)} = tl.full(({w.rows(t.batched)}, {t.pad}), {value}, ACC)")
            if not keeps_zero[j]:
                w.masked(t, c)


def _keeps_zero(expr: sp.Expr, padded) -> bool:
    """True when ``expr`` is 0 wherever its ``padded`` inputs are 0, for any finite other inputs: a
    polynomial (no function that could make 0 * inf) vanishing at zero. Then its padding stays zero
    without a mask (negations, products, sums of the tangent chains)."""
    if not isinstance(expr, sp.Expr) or expr.is_number:
        return expr == 0
    if not all(a.is_Symbol or a.is_Number or a.is_Add or a.is_Mul or (a.is_Pow and a.exp.is_Integer and a.exp > 0)
               for a in sp.preorder_traversal(expr)):  # fmt: skip
        return False
    return sp.expand(expr.subs({u: 0 for u in padded})) == 0


def _moves(src: _Tile, dst: _Tile, start: int, offset: int, count: int) -> list[tuple[int, int]]:
    """(source chunk, destination chunk) pairs that a move of ``count`` columns from ``start`` to
    ``offset`` connects."""
    pairs, C = [], src.chunk
    for i in range(src.chunks):
        lo, hi = max(start, i * C), min(start + count, i * C + src.valid(i))
        for j in range(dst.chunks):
            if lo < hi and max(lo - start + offset, j * C) < min(hi - start + offset, j * C + dst.valid(j)):
                pairs.append((i, j))
    return pairs


def _move(w: _Writer, src: _Tile, dst: _Tile, start: int, offset: int, count: int) -> dict[int, list[str]]:
    """Per destination chunk, the ``_fz_move`` terms placing ``count`` columns of ``src``."""
    terms: dict[int, list[str]] = {}
    for i, j in _moves(src, dst, start, offset, count):
        where = f"{src.pad}, {dst.pad}, {i * src.chunk}, {j * dst.chunk}"
        terms.setdefault(j, []).append(f"_fz_move({src.at(i)}, {start}, {offset}, {count}, {where})")
    return terms


def _assign(w: _Writer, t: _Tile, terms: dict[int, list[str]]) -> None:
    for j in range(t.chunks):
        parts = terms.get(j) or [f"tl.zeros(({w.rows(t.batched)}, {t.pad}), dtype=ACC)"]
        w.emit(f"{t.at(j)} = " + " + ".join(parts))


def _node(w: _Writer, nid: int, weight) -> None:
    g = w.g
    d = g.nodes[nid]
    op, a, ins = d["op"], d["attrs"], d["inputs"]
    t = w.put(nid)
    if op == "concat" and all(g.op(i) == "input" for i in ins):
        if all(g.attrs(p)["stop"] == g.attrs(q)["start"] for p, q in zip(ins, ins[1:])):  # adjacent columns
            op, a = "input", {"start": g.attrs(ins[0])["start"], "stop": g.attrs(ins[-1])["stop"]}
    if op == "input":
        w.pending[nid] = a
        return
    src = [w.tile(i) for i in ins]
    if op == "constant":
        k = w.arg(f"C{nid}", w.buffers[nid])
        w.load_columns(t, k, "", "0", f"s{k}1")
    elif op == "wcol":
        wk = weight(a["param"])
        w.load_columns(t, wk, f" + {a['col']} * s{wk}1", "0", f"s{wk}0")
    elif op == "slice":
        _assign(w, t, _move(w, src[0], t, a["start"], 0, t.width))
    elif op == "concat":
        terms: dict[int, list[str]] = {}
        offset = 0
        for h in src:
            for j, parts in _move(w, h, t, 0, offset, h.width).items():
                terms.setdefault(j, []).extend(parts)
            offset += h.width
        _assign(w, t, terms)
    elif op in ("expand", "sum"):
        total = " + ".join(f"tl.sum({v}, axis=1)" for v in src[0].names)
        w.emit(f"{t.var}_row = {total}")
        for j in range(t.chunks):
            c = w.col(t.pad)
            keep = f"{c} == 0" if op == "sum" else f"{c} < {t.valid(j)}"
            w.emit(f"{t.at(j)} = tl.where({keep}, {t.var}_row[:, None], 0.0)")
    elif op in ("posenc", "fscale"):
        k = w.arg(f"F{nid}", w.buffers[nid])
        h = src[0]
        nf = len(a["freqs"])
        inc = int(bool(a.get("include_input", False))) if op == "posenc" else 0
        trig = 1 if op == "posenc" else 0
        w.emit(f"# {'positional encoding' if trig else 'frequency scaling'}: {nf} frequencies")
        for j in range(t.chunks):
            shape = f"{h.width}, {inc}, {t.width}, {h.pad}, {t.pad}"
            reps = [f"_fz_repeat({h.at(i)}, {shape}, {i * w.chunk}, {j * w.chunk})" for i in range(h.chunks)]
            w.emit(f"{t.at(j)} = " + " + ".join(reps))
            scale = f"{h.width}, {nf}, {inc}, {trig}, {t.width}, {t.pad}, {j * w.chunk}"
            w.emit(f"{t.at(j)} = _fz_scale({t.at(j)}, {k}, {scale})")
    else:
        raise AssertionError(f"op {op!r} belongs to a layer or a unit")
