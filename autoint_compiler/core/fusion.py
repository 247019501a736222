"""Elementwise fusion regions: the IR-level plan the backends use to emit one fused unit (an
``autograd.Function`` in the torch backend, a kernel in a Triton backend) per cluster of elementwise
nodes, with a backward derived symbolically instead of recorded op by op.

A region grows from a pointwise group (the pointwise nodes that read the same input z, e.g.
``swish(z)`` and ``swish'(z)``) through elementwise consumers (``mul``, ``add``, ``sub``, ``neg``,
``scale``) whose other inputs are computed outside it, as long as contracting the region to one node
keeps the graph acyclic. Each region gets sympy expressions of its outputs in terms of its inputs;
``signature`` identifies regions that differ only by the names of their tensors, so one fused unit
serves all the layers of an MLP. Torch-free.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import cached_property

import networkx as nx
import sympy as sp

from .ir import IRGraph
from .ops import ELEMENTWISE_ARITHMETIC, OPS

# a region absorbs ops.ELEMENTWISE_ARITHMETIC beyond its seed group (pointwise nodes only seed regions,
# so that every pointwise group is either wholly inside one region or wholly outside)
#: a region stops growing here: its backward is derived symbolically, whose cost grows fast with size
#: (higher-order grad networks have long elementwise chains); the rest stays unfused ops
MAX_REGION_NODES = 12


@dataclass(frozen=True)
class Region:
    nodes: tuple[int, ...]  # in schedule order
    inputs: tuple[int, ...]  # external nodes read by the region, by id
    outputs: tuple[int, ...]  # region nodes read outside it (or graph outputs), by id
    rows: tuple[bool, ...]  # per input: True for a [1, width] row (its gradient sums over the batch)

    @cached_property
    def symbols(self) -> tuple[sp.Symbol, ...]:
        return tuple(sp.Symbol(f"u{k}", real=True) for k in range(len(self.inputs)))


def _symbolic(g: IRGraph, nodes, inputs) -> dict[int, sp.Expr]:
    syms = {nid: sp.Symbol(f"u{k}", real=True) for k, nid in enumerate(inputs)}
    exprs: dict[int, sp.Expr] = {}

    def val(i):
        return exprs[i] if i in exprs else syms[i]

    for nid in nodes:
        opdef = OPS[g.op(nid)]
        exprs[nid] = opdef.elementwise([val(i) for i in g.inputs_of(nid)], g.attrs(nid))
    return exprs


def output_exprs(g: IRGraph, region: Region) -> list[sp.Expr]:
    exprs = _symbolic(g, region.nodes, region.inputs)
    return [exprs[o] for o in region.outputs]


def readable_outputs(g: IRGraph, region: Region) -> list[str]:
    """The region's outputs as math a person reads: each pointwise function by its label, applied to
    the input symbols (``swish'(u0)·u1``), not expanded into its sympy expression."""
    syms = {nid: sp.Symbol(f"u{k}", real=True) for k, nid in enumerate(region.inputs)}
    exprs: dict[int, sp.Expr] = {}
    for nid in region.nodes:
        args = [exprs.get(i, syms.get(i)) for i in g.inputs_of(nid)]
        if g.op(nid) == "pointwise":
            exprs[nid] = sp.Function(g.attrs(nid)["fn"].label)(*args)
        else:
            exprs[nid] = OPS[g.op(nid)].elementwise(args, g.attrs(nid))
    return [sp.sstr(exprs[o], order="lex").replace("**", "^").replace("*", "·") for o in region.outputs]


def gradient_exprs(outputs: list[sp.Expr], symbols, grads) -> list[sp.Expr]:
    """d(sum_j g_j * out_j)/du_i for each input symbol: the region's backward."""
    res = []
    for u in symbols:
        total = sp.Integer(0)
        for gj, out in zip(grads, outputs):
            d = sp.diff(out, u)
            if d != 0:
                total += gj * d
        total = total.replace(sp.DiracDelta, lambda *args: sp.Integer(0))
        res.append(_readable(sp.factor_terms(total), symbols))  # common factors out; never unstable forms

    return res


def _readable(expr: sp.Expr, symbols) -> sp.Expr:
    """Inside each product, collect a polynomial factor on the region's inputs, so swish'' reads as
    ``s*(1 - s)*(2 + z*(1 - 2*s))`` rather than a sum of near-duplicate terms. Only polynomial
    factors are expanded (functions stay atoms), so no stable form is rewritten into an unstable one."""

    def tidy(e):
        if isinstance(e, sp.Add) and len(e.args) <= 8 and sp.count_ops(e) <= 40:
            c = sp.collect(sp.expand(e), list(symbols))
            return c if sp.count_ops(c) <= sp.count_ops(e) else e
        return e

    return expr.replace(lambda e: isinstance(e, sp.Add), tidy)


def signature(g: IRGraph, region: Region) -> tuple:
    """Equal for regions that compute the same function of their inputs (up to tensor names)."""
    pos = {nid: ("n", k) for k, nid in enumerate(region.nodes)}
    pos.update({nid: ("in", k) for k, nid in enumerate(region.inputs)})
    body = tuple(
        (g.op(n), tuple(sorted(g.attrs(n).items())), tuple(pos[i] for i in g.inputs_of(n))) for n in region.nodes
    )
    return body, tuple(pos[o] for o in region.outputs), region.rows


def _depends(g: IRGraph, i: int, region: set[int], floor: int, level: dict[int, int], memo: dict[int, bool]) -> bool:
    """Does node i read (transitively) a region node? A node at a level no higher than the region's
    lowest cannot (a descendant's level is strictly larger), so the walk back stays local."""
    stack, todo = [i], []
    while stack:
        n = stack.pop()
        if n in region or memo.get(n):
            return True
        if level[n] <= floor or n in memo:
            continue
        todo.append(n)
        stack.extend(g.inputs_of(n))
    memo.update(dict.fromkeys(todo, False))
    return False


def find_regions(g: IRGraph) -> list[Region]:
    """Fusion regions of two or more nodes, disjoint, in schedule order.

    A region grows from its seed group through direct consumers only (a heap in schedule order), and
    the "does this other input depend on the region?" test walks back only to the region's lowest
    topological level, so the pass is near-linear in the graph size."""
    taken: set[int] = set()
    regions = []
    groups: dict[int, list[int]] = {}
    for nid in g.order():
        if g.op(nid) == "pointwise" and g.nodes[nid]["batched"]:
            groups.setdefault(g.inputs_of(nid)[0], []).append(nid)
    outputs = set(g.graph["outputs"])
    level: dict[int, int] = {}  # longest path from a leaf: a topological rank
    for nid in g.order():
        level[nid] = 1 + max((level[i] for i in g.inputs_of(nid)), default=0)
    for members in groups.values():
        if any(m in taken for m in members):
            continue
        region = set(members)
        width = g.width(members[0])
        floor = min(level[m] for m in region)
        memo: dict[int, bool] = {}  # stays valid as the region grows: new members depend on it

        frontier = sorted({s for m in members for s in g.successors(m)})
        heapq.heapify(frontier)
        seen = set(frontier)
        while frontier and len(region) < MAX_REGION_NODES:
            nid = heapq.heappop(frontier)
            if nid in region or nid in taken:
                continue
            d = g.nodes[nid]
            if d["op"] not in ELEMENTWISE_ARITHMETIC or d["width"] != width or not d["batched"]:
                continue
            ins = d["inputs"]
            if any(g.width(i) != width for i in ins):
                continue
            # the other inputs must not depend on the region, or the fused unit would wait on itself
            if any(i not in region and _depends(g, i, region, floor, level, memo) for i in ins):
                continue
            region.add(nid)
            for s in g.successors(nid):
                if s not in seen:
                    seen.add(s)
                    heapq.heappush(frontier, s)
        if len(region) < 2:
            continue
        nodes = tuple(sorted(region))
        ext = sorted({i for n in nodes for i in g.inputs_of(n) if i not in region})
        outs = tuple(n for n in nodes if n in outputs or any(s not in region for s in g.successors(n)))
        rows = tuple(not g.nodes[i]["batched"] for i in ext)
        regions.append(Region(nodes, tuple(ext), outs, rows))
        taken |= region
    return _acyclic(g, regions)


def _acyclic(g: IRGraph, regions: list[Region]) -> list[Region]:
    """Drop regions until contracting them keeps the graph a DAG.

    Each region is acyclic on its own (``_depends``), but two regions can wait on each other through
    nodes outside both (A → e → B and B → f → A: mixed partials of a network with two branches do
    this); such a pair cannot both be fused. The later region of a cycle goes back to plain ops,
    until no cycle is left: the backends' ``schedule`` never meets one."""
    regions = list(regions)
    while len(regions) > 1:
        owner = {n: ("r", k) for k, r in enumerate(regions) for n in r.nodes}
        dag, _ = contract(g, owner)
        try:
            cycle = nx.find_cycle(dag)
        except nx.NetworkXNoCycle:
            break
        ks = [step[1] for edge in cycle for step in edge[:2] if step[0] == "r"]
        del regions[max(ks)]
    return regions


def contract(g: IRGraph, owner: dict[int, tuple], node_key: str = "n") -> tuple[nx.DiGraph, dict[tuple, int]]:
    """The graph with each group of nodes contracted to one step: ``owner`` maps a node to its step
    key, other nodes are steps ``(node_key, id)``. Returns the step DAG (acyclic unless a group waits
    on itself) and each step's smallest node id, for a stable order."""
    dag = nx.DiGraph()
    first: dict[tuple, int] = {}
    for nid in g.order():
        step = owner.get(nid, (node_key, nid))
        first.setdefault(step, nid)
        dag.add_node(step)
        for i in g.inputs_of(nid):
            src = owner.get(i, (node_key, i))
            if src != step:
                dag.add_edge(src, step)
    return dag, first


def schedule(g: IRGraph, regions: list[Region]) -> list[int | Region]:
    """A topological order of the graph with each region contracted to one step (stable: by the
    smallest node id of each step)."""
    owner = {n: ("r", k) for k, r in enumerate(regions) for n in r.nodes}
    dag, first = contract(g, owner)
    order = nx.lexicographical_topological_sort(dag, key=lambda s: first[s])
    return [regions[k] if kind == "r" else k for kind, k in order]
