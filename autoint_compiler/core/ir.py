"""The IR: a ``networkx.DiGraph`` of typed, hash-consed op nodes.

Each node is an int id; its data holds ``op`` (a name defined in ``ops.py``), ``inputs`` (ordered ids;
the edges carry the same information for graph algorithms), ``attrs`` (hashable values: a pointwise
node holds its ``PointwiseFn``, i.e. its sympy expression, so a graph carries its own meaning and
pickles), ``width`` (features) and ``batched`` (``False`` for a row ``[1, width]`` that is the same for
every sample, e.g. a tangent that depends only on parameters). ``IRGraph.add`` returns the existing
node for an identical ``(op, inputs, attrs)``, so common subexpressions are built once; the interning
table is derived from the nodes and rebuilt whenever it is out of step with them (``copy()``, networkx
operations), so no graph operation can make ``add`` overwrite a node. ``graph['names']`` maps node ids
to names a frontend gave them (graph-form node names), which backends keep where they are safe.

``Builder`` adds constant folding and the algebraic peepholes on top. ``format_graph`` prints
deterministic text; ``lint`` checks invariants with actionable messages. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

from ..errors import CompileError
from .activations import PointwiseFn
from .ops import COMMUTATIVE, OPS, op_def


@dataclass(frozen=True)
class ParamInfo:
    """A weight matrix [out, in] and an optional bias [out], with their uniform init bounds."""

    out: int
    inp: int
    bias: bool
    weight_bound: float
    bias_bound: float


def _key(op: str, inputs: tuple[int, ...], attrs: dict) -> tuple:
    return (op, inputs, tuple(sorted(attrs.items())))


class IRGraph(nx.DiGraph):
    """A DAG of op nodes. ``graph['name']``, ``graph['params']`` (name -> ParamInfo),
    ``graph['inputs']`` (name -> (start, stop)), ``graph['outputs']`` (list of ids),
    ``graph['names']`` (id -> frontend name), ``graph['title']`` (what the graph computes)."""

    def __init__(self, incoming_graph_data=None, **attr):
        super().__init__(incoming_graph_data, **attr)
        for key in ("params", "inputs", "names"):
            self.graph[key] = dict(self.graph.get(key, {}))  # never share these dicts with another graph
        self.graph.setdefault("outputs", [])
        self._keys: dict[tuple, int] = {}
        self._next = 0

    # -- interning -----------------------------------------------------------------------------------
    def _reindex(self) -> None:
        """Rebuild the interning table and the next id from the nodes themselves."""
        self._keys = {}
        for nid in sorted(self._node):
            self._keys.setdefault(self.node_key(nid), nid)
        self._next = max(self._node, default=-1) + 1

    def _interning_ok(self) -> bool:
        return len(self._keys) == self.number_of_nodes() and self._next not in self._node

    # -- construction ------------------------------------------------------------------------------
    def add(self, op: str, inputs: tuple[int, ...] = (), **attrs: Any) -> int:
        """Add (or find) the node ``op(inputs, attrs)``; returns its id."""
        opdef = op_def(op)
        if not self._interning_ok():
            self._reindex()
        inputs = tuple(inputs)
        for i in inputs:
            if i not in self:
                raise CompileError(f"{op}: input %{i} is not in the graph")
        if op in COMMUTATIVE:
            inputs = tuple(sorted(inputs, key=lambda i: (self.nodes[i]["op"] == "constant", i)))
        key = _key(op, inputs, attrs)
        found = self._keys.get(key)
        if found is not None and found in self and self.node_key(found) == key:
            return found
        if opdef.arity is not None and len(inputs) != opdef.arity:
            raise CompileError(f"{op}: expects {opdef.arity} input(s), got {len(inputs)}")
        missing = sorted(set(opdef.attrs) - set(attrs))
        extra = sorted(set(attrs) - set(opdef.attrs))
        if missing or extra:
            raise CompileError(f"{op}: attributes {sorted(attrs)} do not match its definition {list(opdef.attrs)}")
        widths = [self.nodes[i]["width"] for i in inputs]
        width = opdef.width(widths, attrs)
        batched = any(self.nodes[i]["batched"] for i in inputs) if op != "input" else True
        nid = self._next
        self._next += 1
        self.add_node(nid, op=op, inputs=inputs, attrs=dict(attrs), width=width, batched=batched)
        for port, i in enumerate(inputs):
            self.add_edge(i, nid, port=port)
        self._keys[key] = nid
        return nid

    def node_key(self, nid: int) -> tuple:
        d = self.nodes[nid]
        return _key(d["op"], d["inputs"], d["attrs"])

    def op(self, nid: int) -> str:
        return self.nodes[nid]["op"]

    def attrs(self, nid: int) -> dict:
        return self.nodes[nid]["attrs"]

    def width(self, nid: int) -> int:
        return self.nodes[nid]["width"]

    def inputs_of(self, nid: int) -> tuple[int, ...]:
        return self.nodes[nid]["inputs"]

    def order(self) -> list[int]:
        """Node ids in creation order, which is a topological order."""
        return sorted(self.nodes)

    def __str__(self) -> str:
        return format_graph(self)

    def to_directed_class(self):
        return IRGraph

    def copy(self, as_view=False):
        h = super().copy(as_view=as_view)
        if not as_view:
            for key in ("params", "inputs", "names"):
                h.graph[key] = dict(h.graph.get(key, {}))
            h._reindex()
        return h

    def __reduce__(self):  # pickle the data, not the interning cache (rebuilt on first use)
        return (_unpickle, (type(self), self.graph, dict(self._node), [(u, v, d) for u, v, d in self.edges(data=True)]))

    # -- checks ------------------------------------------------------------------------------------
    def lint(self, allow_dead: bool = False) -> None:
        problems = lint_problems(self, allow_dead=allow_dead)
        if problems:
            name = self.graph.get("name", "graph")
            listing = "\n  ".join(problems[:20])
            raise CompileError(f"IR lint failed for {name} ({len(problems)} problem(s)):\n  {listing}")


def _unpickle(cls, graph, nodes, edges):
    g = cls()
    g.graph.update(graph)
    for nid, data in nodes.items():
        g.add_node(nid, **data)
    g.add_edges_from(edges)
    g._reindex()
    return g


def pointwise_expr(g: IRGraph, nid: int):
    """The sympy expression (of ``primitives.x``) that a ``pointwise`` node applies elementwise."""
    return g.attrs(nid)["fn"].expr


def pointwise_fns(*graphs: IRGraph) -> list[PointwiseFn]:
    """The functions of every ``pointwise`` node of the graphs, in node order (with repeats)."""
    return [g.attrs(n)["fn"] for g in graphs for n in g.order() if g.op(n) == "pointwise"]


def nonsmooth_labels(*graphs: IRGraph) -> list[str]:
    """Labels of the graphs' pointwise functions that are not smooth, sorted. ``PointwiseFn.smooth``
    (no kinked or discontinuous primitive in the expression) is the one definition of "smooth" that the
    compile report and every backend's module docstring use."""
    return sorted({f.label for f in pointwise_fns(*graphs) if not f.smooth})


def lint_problems(g: IRGraph, allow_dead: bool = False) -> list[str]:
    """Every broken invariant, each with what to do about it."""
    out: list[str] = []
    if not nx.is_directed_acyclic_graph(g):
        out.append(f"the graph has a cycle {nx.find_cycle(g)}: IR graphs must be DAGs")
    params = g.graph["params"]
    seen: dict[tuple, int] = {}
    for nid in g.order():
        d = g.nodes[nid]
        op = d.get("op")
        where = f"%{nid} ({op})"
        if op not in OPS:
            out.append(f"{where}: unknown op; define it in ops.py (defop + defjvp)")
            continue
        opdef = OPS[op]
        ins = d["inputs"]
        preds = sorted((u, g.edges[u, nid].get("port")) for u in g.predecessors(nid))
        if sorted(set(ins)) != sorted({u for u, _ in preds}):
            out.append(f"{where}: 'inputs' {list(ins)} disagree with the graph edges {preds}; rebuild the node")
        if opdef.arity is not None and len(ins) != opdef.arity:
            out.append(f"{where}: expects {opdef.arity} input(s), has {len(ins)}")
            continue
        if set(d["attrs"]) != set(opdef.attrs):
            out.append(f"{where}: attributes {sorted(d['attrs'])} but ops.py defines {list(opdef.attrs)}")
            continue
        if any(i >= nid for i in ins):
            out.append(f"{where}: input ids must be smaller than the node id (creation order is the schedule)")
        if any(i not in g for i in ins):
            out.append(f"{where}: reads a node that is not in the graph; rebuild it with passes.rebuild")
            continue
        key = g.node_key(nid)
        if key in seen:
            out.append(f"{where}: duplicates %{seen[key]} (same op, inputs and attributes); run passes.cse()")
        seen.setdefault(key, nid)
        if op == "pointwise" and not isinstance(d["attrs"]["fn"], PointwiseFn):
            out.append(
                f"{where}: 'fn' must be a PointwiseFn (the function's sympy expression), "
                f"not {type(d['attrs']['fn']).__name__}"
            )
            continue
        try:
            w = opdef.width([g.nodes[i]["width"] for i in ins], d["attrs"])
        except (CompileError, KeyError) as exc:
            out.append(f"{where}: cannot infer its width ({exc})")
            continue
        if w != d["width"]:
            out.append(f"{where}: width {d['width']} but its inputs give {w}")
        if op in ("linear", "wcol"):
            p = params.get(d["attrs"]["param"])
            if p is None:
                out.append(f"{where}: parameter {d['attrs']['param']!r} is not declared in graph['params']")
                continue
            if p.out != d["attrs"]["out"]:
                out.append(f"{where}: out={d['attrs']['out']} but parameter has {p.out} rows")
            if op == "linear":
                a, b = d["attrs"]["cols"]
                if not (0 <= a < b <= p.inp) or b - a != g.nodes[ins[0]]["width"]:
                    out.append(
                        f"{where}: columns {a}:{b} of a [{p.out}, {p.inp}] weight do not fit an input of "
                        f"width {g.nodes[ins[0]]['width']}"
                    )
                if d["attrs"]["bias"] and not p.bias:
                    out.append(f"{where}: uses a bias that parameter {d['attrs']['param']!r} lacks")
    # the interning table must agree with the nodes, or add() would hand out a wrong or reused id
    keys = getattr(g, "_keys", {})
    for key, nid in keys.items():
        if nid not in g or g.node_key(nid) != key:
            out.append(
                f"interning table maps {key[0]}{list(key[1])} to %{nid}, which is not that node; "
                "call g._reindex() or rebuild the graph with passes.rebuild"
            )
            break
    if keys and len(keys) != g.number_of_nodes():
        out.append(f"interning table has {len(keys)} entries for {g.number_of_nodes()} nodes; call g._reindex()")
    if getattr(g, "_next", None) in g:
        out.append(f"the next node id %{g._next} is already taken; call g._reindex()")
    outputs = g.graph["outputs"]
    if not outputs:
        out.append("graph['outputs'] is empty: set the output node ids")
    for o in outputs:
        if o not in g:
            out.append(f"output %{o} is not a node of the graph")
    if not allow_dead and outputs and all(o in g for o in outputs):
        live = set(outputs)
        for o in outputs:
            live |= nx.ancestors(g, o)
        dead = sorted(set(g.nodes) - live)
        if dead:
            out.append(f"nodes {['%' + str(i) for i in dead]} do not reach an output: run passes.dce()")
    return out


# ---------------------------------------------------------------------------------------------------
# Builder: hash-consing plus constant folding and algebraic peepholes
# ---------------------------------------------------------------------------------------------------


@dataclass
class Builder:
    g: IRGraph

    # constants ----------------------------------------------------------------------------------
    def const(self, values) -> int:
        return self.g.add("constant", (), value=tuple(float(v) for v in values))

    def cval(self, nid: int) -> tuple[float, ...] | None:
        d = self.g.nodes[nid]
        return d["attrs"]["value"] if d["op"] == "constant" else None

    def name(self, nid: int, text: str) -> int:
        """Record a frontend's name for a node (the first name given wins); returns the node."""
        self.g.graph["names"].setdefault(nid, text)
        return nid

    # ops ----------------------------------------------------------------------------------------
    def mul(self, a: int, b: int) -> int:
        ca, cb = self.cval(a), self.cval(b)
        if ca is not None and cb is not None:
            return self.const(_bcast(lambda p, q: p * q, ca, cb))
        for cx, other in ((ca, b), (cb, a)):
            if cx is not None and all(v == 1.0 for v in cx) and self.g.width(other) >= len(cx):
                return other
            if cx is not None and all(v == -1.0 for v in cx) and self.g.width(other) >= len(cx):
                return self.neg(other)
            if cx is not None and len(set(cx)) == 1 and self.g.width(other) >= len(cx):
                return self.scale(other, cx[0])  # a uniform constant row is a scalar factor
        return self.g.add("mul", (a, b))

    def add(self, a: int, b: int) -> int:
        ca, cb = self.cval(a), self.cval(b)
        if ca is not None and cb is not None:
            return self.const(_bcast(lambda p, q: p + q, ca, cb))
        return self.g.add("add", (a, b))

    def add_all(self, terms: list[int]) -> int:
        out = terms[0]
        for t in terms[1:]:
            out = self.add(out, t)
        return out

    def sub(self, a: int, b: int) -> int:
        ca, cb = self.cval(a), self.cval(b)
        if ca is not None and cb is not None:
            return self.const(_bcast(lambda p, q: p - q, ca, cb))
        return self.g.add("sub", (a, b))

    def neg(self, a: int) -> int:
        ca = self.cval(a)
        if ca is not None:
            return self.const([-v for v in ca])
        d = self.g.nodes[a]
        if d["op"] == "neg":
            return d["inputs"][0]
        if d["op"] == "mul" and self.cval(d["inputs"][1]) is not None:  # -(p * c) = p * (-c)
            p, q = d["inputs"]
            return self.mul(p, self.const([-v for v in self.cval(q)]))
        if d["op"] == "scale":
            return self.scale(d["inputs"][0], -d["attrs"]["value"])
        return self.g.add("neg", (a,))

    def scale(self, a: int, value: float) -> int:
        value = float(value)
        ca = self.cval(a)
        if ca is not None:
            return self.const([value * v for v in ca])
        if value == 1.0:
            return a
        if value == -1.0:
            return self.neg(a)
        d = self.g.nodes[a]
        if d["op"] == "scale":  # c * (d * u) = (c d) * u
            return self.scale(d["inputs"][0], value * d["attrs"]["value"])
        return self.g.add("scale", (a,), value=value)

    def sum(self, a: int) -> int:
        ca = self.cval(a)
        if ca is not None:
            return self.const([sum(ca)])
        if self.g.width(a) == 1:
            return a
        return self.g.add("sum", (a,))

    def expand(self, a: int, out: int) -> int:
        if self.g.width(a) == out:
            return a
        ca = self.cval(a)
        if ca is not None:
            return self.const(list(ca) * out)
        return self.g.add("expand", (a,), out=out)

    def concat(self, parts: list[int]) -> int:
        flat: list[int] = []
        for p in parts:  # concat(a, concat(b, c)) = concat(a, b, c)
            flat.extend(self.g.inputs_of(p) if self.g.op(p) == "concat" else (p,))
        parts = flat
        if len(parts) == 1:
            return parts[0]
        cs = [self.cval(p) for p in parts]
        if all(c is not None for c in cs):
            return self.const([v for c in cs for v in c])
        return self.g.add("concat", tuple(parts))

    def slice(self, a: int, start: int, stop: int) -> int:
        if start == 0 and stop == self.g.width(a):
            return a
        ca = self.cval(a)
        if ca is not None:
            return self.const(ca[start:stop])
        d = self.g.nodes[a]
        if d["op"] == "concat":  # a slice that falls inside one part of a concat is a slice of that part
            off = 0
            for p in d["inputs"]:
                w = self.g.width(p)
                if off <= start and stop <= off + w:
                    return self.slice(p, start - off, stop - off)
                off += w
        if d["op"] == "slice":  # a slice of a slice
            s0 = d["attrs"]["start"]
            return self.slice(d["inputs"][0], s0 + start, s0 + stop)
        return self.g.add("slice", (a,), start=start, stop=stop)

    def pointwise(self, a: int, fn: PointwiseFn) -> int:
        return self.g.add("pointwise", (a,), fn=fn)

    def fscale(self, a: int, freqs: tuple[float, ...]) -> int:
        ca = self.cval(a)
        if ca is not None:
            return self.const([v * f for f in freqs for v in ca])
        return self.g.add("fscale", (a,), freqs=tuple(float(f) for f in freqs))

    def posenc(self, a: int, freqs: tuple[float, ...], include_input: bool) -> int:
        return self.g.add("posenc", (a,), freqs=tuple(float(f) for f in freqs), include_input=bool(include_input))

    def linear(self, a: int, param: str, cols: tuple[int, int] | None = None, bias: bool = True) -> int:
        info: ParamInfo = self.g.graph["params"][param]
        cols = tuple(cols or (0, info.inp))
        bias = bool(bias and info.bias)
        ca = self.cval(a)
        if ca is not None and not bias and len(ca) == 1 and ca[0] == 1.0:
            # W[:, c] @ [1] is the weight column itself: a parameter view, no compute
            return self.g.add("wcol", (), param=param, col=cols[0], out=info.out)
        if not bias and self.g.op(a) == "concat":
            folded = self._linear_over_constants(a, param, cols)
            if folded is not None:
                return folded
        return self.g.add("linear", (a,), param=param, cols=cols, bias=bias, out=info.out)

    def _linear_over_constants(self, a: int, param: str, cols: tuple[int, int]) -> int | None:
        """W @ concat(1, u, 0, v) = W[:, c0] + W[:, cu] @ u + W[:, cv] @ v: unit and zero columns of a
        tangent's concat become weight columns and nothing (no ``cat([ones, ...])``, a narrower GEMM)."""
        parts = self.g.inputs_of(a)
        consts = [self.cval(p) for p in parts]

        def foldable(c) -> bool:
            return c is not None and (c == (1.0,) or all(v == 0.0 for v in c))

        if not any(foldable(c) for c in consts) or any(c is not None and not foldable(c) for c in consts):
            return None
        terms, run, run_start, off = [], [], 0, cols[0]
        for p, c in zip(parts, consts):
            w = self.g.width(p)
            if c is None:
                if not run:
                    run_start = off
                run.append(p)
            else:
                if run:
                    terms.append(self.linear(self.concat(run), param, (run_start, off), bias=False))
                    run = []
                if c == (1.0,):
                    terms.append(self.linear(p, param, (off, off + 1), bias=False))
            off += w
        if run:
            terms.append(self.linear(self.concat(run), param, (run_start, off), bias=False))
        if not terms:
            return self.const([0.0] * self.g.graph["params"][param].out)
        return self.add_all(terms)

    def input(self, name: str, start: int, stop: int) -> int:
        return self.g.add("input", (), name=name, start=start, stop=stop)


def _bcast(f, a, b):
    if len(a) == len(b):
        return [f(p, q) for p, q in zip(a, b)]
    if len(a) == 1:
        return [f(a[0], q) for q in b]
    if len(b) == 1:
        return [f(p, b[0]) for p in a]
    raise CompileError(f"constant widths {len(a)} and {len(b)} do not broadcast")


# ---------------------------------------------------------------------------------------------------
# Printer
# ---------------------------------------------------------------------------------------------------


def describe(g: IRGraph, nid: int) -> str:
    """``op[attrs](inputs)`` for one node (the op's printed form from ``ops.py``)."""
    d = g.nodes[nid]
    return OPS[d["op"]].describe(d["attrs"], ", ".join(f"%{i}" for i in d["inputs"]), g)


def format_graph(g: IRGraph) -> str:
    """Deterministic text: one line per node, ``%id : [N|1, width] = op[attrs](inputs)``."""
    lines = [f"graph {g.graph.get('name', '?')}  # {g.graph.get('title', '')}".rstrip()]
    ins = ", ".join(f"{n}=x[:, {a}:{b}]" for n, (a, b) in g.graph["inputs"].items())
    lines.append(f"  inputs: {ins}")
    for name, p in sorted(g.graph["params"].items()):
        b = f" + bias[{p.out}]" if p.bias else ""
        lines.append(f"  param {name}: weight[{p.out}, {p.inp}]{b}")
    names = g.graph.get("names", {})
    for nid in g.order():
        d = g.nodes[nid]
        rows = "N" if d["batched"] else "1"
        note = f"  # {names[nid]}" if nid in names else ""
        lines.append(f"  %{nid} : [{rows}, {d['width']}] = {describe(g, nid)}{note}")
    lines.append("  return " + ", ".join(f"%{o}" for o in g.graph["outputs"]))
    return "\n".join(lines) + "\n"


def to_dot(g: IRGraph) -> str:
    """Graphviz DOT text of the graph (deterministic)."""
    lines = [f'digraph "{g.graph.get("name", "ir")}" {{', "  rankdir=TB;", '  node [shape=box, fontname="monospace"];']
    outs = set(g.graph["outputs"])
    for nid in g.order():
        d = g.nodes[nid]
        label = f"%{nid} [{'N' if d['batched'] else '1'},{d['width']}]\\n{describe(g, nid)}".replace('"', '\\"')
        style = ", style=bold" if nid in outs else (", style=filled, fillcolor=lightgrey" if d["op"] == "input" else "")
        lines.append(f'  n{nid} [label="{label}"{style}];')
    for nid in g.order():
        for port, i in enumerate(g.nodes[nid]["inputs"]):
            lines.append(f'  n{i} -> n{nid} [label="{port}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
