"""The IR: a ``networkx.DiGraph`` of typed, hash-consed op nodes.

Each node is an int id; its data holds ``op``, ``inputs`` (ordered ids; the edges carry the same
information for graph algorithms), ``attrs`` (hashable values), ``width`` (features) and ``batched``
(``False`` for a row ``[1, width]`` that is the same for every sample, e.g. a tangent that depends
only on parameters). ``IRGraph.add`` returns the existing node for an identical ``(op, inputs,
attrs)``, so common subexpressions are built once. ``Builder`` adds constant folding and the
algebraic peepholes on top. ``format_graph`` prints deterministic text; ``lint`` checks invariants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx

from .errors import CompileError

# ---------------------------------------------------------------------------------------------------
# Op table: arity and width inference, one row per op
# ---------------------------------------------------------------------------------------------------


def _broadcast(node_op: str, widths: list[int]) -> int:
    out = max(widths)
    if any(w not in (1, out) for w in widths):
        raise CompileError(f"{node_op}: input widths {widths} do not broadcast (equal, or 1)")
    return out


@dataclass(frozen=True)
class OpDef:
    arity: int | None  # None: one or more
    width: Callable[[list[int], dict], int]
    doc: str


OPS: dict[str, OpDef] = {
    "input": OpDef(0, lambda w, a: a["stop"] - a["start"], "columns start:stop of x"),
    "constant": OpDef(0, lambda w, a: len(a["value"]), "a constant row [1, width]"),
    "linear": OpDef(1, lambda w, a: a["out"], "W[:, cols] @ h (+ b): weights shared by name 'param'"),
    "wcol": OpDef(0, lambda w, a: a["out"], "column 'col' of weight 'param' as a row [1, out]"),
    "add": OpDef(2, lambda w, a: _broadcast("add", w), "a + b (broadcasting width 1)"),
    "sub": OpDef(2, lambda w, a: _broadcast("sub", w), "a - b"),
    "mul": OpDef(2, lambda w, a: _broadcast("mul", w), "a * b (Hadamard)"),
    "neg": OpDef(1, lambda w, a: w[0], "-a"),
    "scale": OpDef(1, lambda w, a: w[0], "value * a"),
    "sum": OpDef(1, lambda w, a: 1, "sum over features"),
    "expand": OpDef(1, lambda w, a: a["out"], "broadcast a width-1 value to 'out' features"),
    "concat": OpDef(None, lambda w, a: sum(w), "feature concatenation"),
    "slice": OpDef(1, lambda w, a: a["stop"] - a["start"], "features start:stop"),
    "pointwise": OpDef(1, lambda w, a: w[0], "an elementwise function (sympy expression 'fn')"),
    "fscale": OpDef(1, lambda w, a: w[0] * len(a["freqs"]), "[a*f0, a*f1, ...] (frequency-major)"),
    "posenc": OpDef(
        1,
        lambda w, a: w[0] * (int(a["include_input"]) + 2 * len(a["freqs"])),
        "[a?, sin(a*f0), sin(a*f1).., cos(a*f0)..]",
    ),
}

COMMUTATIVE = {"add", "mul"}


@dataclass(frozen=True)
class ParamInfo:
    """A weight matrix [out, in] and an optional bias [out], with their uniform init bounds."""

    out: int
    inp: int
    bias: bool
    weight_bound: float
    bias_bound: float
    weight_init: str = "uniform"  # or "siren_first" etc., for the printer only


# ---------------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------------


class IRGraph(nx.DiGraph):
    """A DAG of op nodes. ``graph['name']``, ``graph['params']`` (name -> ParamInfo),
    ``graph['inputs']`` (name -> (start, stop)), ``graph['outputs']`` (list of ids),
    ``graph['title']`` (what the graph computes)."""

    def __init__(self, incoming_graph_data=None, **attr):
        super().__init__(incoming_graph_data, **attr)
        self.graph.setdefault("params", {})
        self.graph.setdefault("inputs", {})
        self.graph.setdefault("outputs", [])
        self._keys: dict[tuple, int] = {}
        self._next = 0

    # -- construction ------------------------------------------------------------------------------
    def add(self, op: str, inputs: tuple[int, ...] = (), **attrs: Any) -> int:
        """Add (or find) the node ``op(inputs, attrs)``; returns its id."""
        if op not in OPS:
            raise CompileError(f"unknown op {op!r}: no entry in the IR op table")
        inputs = tuple(inputs)
        if op in COMMUTATIVE:
            inputs = tuple(sorted(inputs, key=lambda i: (self.nodes[i]["op"] == "constant", i)))
        key = (op, inputs, tuple(sorted(attrs.items())))
        found = self._keys.get(key)
        if found is not None:
            return found
        opdef = OPS[op]
        if opdef.arity is not None and len(inputs) != opdef.arity:
            raise CompileError(f"{op}: expects {opdef.arity} input(s), got {len(inputs)}")
        for i in inputs:
            if i not in self:
                raise CompileError(f"{op}: input %{i} is not in the graph")
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
        return (d["op"], d["inputs"], tuple(sorted(d["attrs"].items())))

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

    # -- checks ------------------------------------------------------------------------------------
    def lint(self, allow_dead: bool = False) -> None:
        problems = lint_problems(self, allow_dead=allow_dead)
        if problems:
            name = self.graph.get("name", "graph")
            listing = "\n  ".join(problems[:20])
            raise CompileError(f"IR lint failed for {name} ({len(problems)} problem(s)):\n  {listing}")


def lint_problems(g: IRGraph, allow_dead: bool = False) -> list[str]:
    """Every broken invariant, each with what to do about it."""
    out: list[str] = []
    if not nx.is_directed_acyclic_graph(g):
        out.append(f"the graph has a cycle {nx.find_cycle(g)}: IR graphs must be DAGs")
    params = g.graph["params"]
    for nid in g.order():
        d = g.nodes[nid]
        op = d.get("op")
        where = f"%{nid} ({op})"
        if op not in OPS:
            out.append(f"{where}: unknown op; add it to ir.OPS and a rule to rules.RULES")
            continue
        ins = d["inputs"]
        preds = sorted((u, g.edges[u, nid].get("port")) for u in g.predecessors(nid))
        if sorted(set(ins)) != sorted({u for u, _ in preds}):
            out.append(f"{where}: 'inputs' {list(ins)} disagree with the graph edges {preds}; rebuild the node")
        arity = OPS[op].arity
        if arity is not None and len(ins) != arity:
            out.append(f"{where}: expects {arity} input(s), has {len(ins)}")
            continue
        if any(i >= nid for i in ins):
            out.append(f"{where}: input ids must be smaller than the node id (creation order is the schedule)")
        try:
            w = OPS[op].width([g.nodes[i]["width"] for i in ins], d["attrs"])
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
    folded: int = field(default=0)

    # constants ----------------------------------------------------------------------------------
    def const(self, values) -> int:
        return self.g.add("constant", (), value=tuple(float(v) for v in values))

    def cval(self, nid: int) -> tuple[float, ...] | None:
        d = self.g.nodes[nid]
        return d["attrs"]["value"] if d["op"] == "constant" else None

    def _fold(self, values) -> int:
        self.folded += 1
        return self.const(values)

    # ops ----------------------------------------------------------------------------------------
    def mul(self, a: int, b: int) -> int:
        ca, cb = self.cval(a), self.cval(b)
        if ca is not None and cb is not None:
            return self._fold(_bcast(lambda p, q: p * q, ca, cb))
        for cx, other in ((ca, b), (cb, a)):
            if cx is not None and all(v == 1.0 for v in cx) and self.g.width(other) >= len(cx):
                self.folded += 1
                return other
            if cx is not None and all(v == -1.0 for v in cx) and self.g.width(other) >= len(cx):
                return self.neg(other)
        return self.g.add("mul", (a, b))

    def add(self, a: int, b: int) -> int:
        ca, cb = self.cval(a), self.cval(b)
        if ca is not None and cb is not None:
            return self._fold(_bcast(lambda p, q: p + q, ca, cb))
        return self.g.add("add", (a, b))

    def sub(self, a: int, b: int) -> int:
        ca, cb = self.cval(a), self.cval(b)
        if ca is not None and cb is not None:
            return self._fold(_bcast(lambda p, q: p - q, ca, cb))
        return self.g.add("sub", (a, b))

    def neg(self, a: int) -> int:
        ca = self.cval(a)
        if ca is not None:
            return self._fold([-v for v in ca])
        d = self.g.nodes[a]
        if d["op"] == "neg":
            self.folded += 1
            return d["inputs"][0]
        if d["op"] == "mul":
            p, q = d["inputs"]
            cq = self.cval(q)
            if cq is not None:
                return self.mul(p, self.const([-v for v in cq]))
        if d["op"] == "scale":
            return self.scale(d["inputs"][0], -d["attrs"]["value"])
        return self.g.add("neg", (a,))

    def scale(self, a: int, value: float) -> int:
        value = float(value)
        ca = self.cval(a)
        if ca is not None:
            return self._fold([value * v for v in ca])
        if value == 1.0:
            return a
        if value == -1.0:
            return self.neg(a)
        return self.g.add("scale", (a,), value=value)

    def sum(self, a: int) -> int:
        ca = self.cval(a)
        if ca is not None:
            return self._fold([sum(ca)])
        if self.g.width(a) == 1:
            return a
        return self.g.add("sum", (a,))

    def expand(self, a: int, out: int) -> int:
        if self.g.width(a) == out:
            return a
        ca = self.cval(a)
        if ca is not None:
            return self._fold(list(ca) * out)
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
            return self._fold([v for c in cs for v in c])
        return self.g.add("concat", tuple(parts))

    def slice(self, a: int, start: int, stop: int) -> int:
        if start == 0 and stop == self.g.width(a):
            return a
        ca = self.cval(a)
        if ca is not None:
            return self._fold(ca[start:stop])
        d = self.g.nodes[a]
        if d["op"] == "concat":  # a slice that falls inside one part of a concat is a slice of that part
            off = 0
            for p in d["inputs"]:
                w = self.g.width(p)
                if off <= start and stop <= off + w:
                    return self.slice(p, start - off, stop - off)
                off += w
        return self.g.add("slice", (a,), start=start, stop=stop)

    def pointwise(self, a: int, fn_key: str, label: str) -> int:
        return self.g.add("pointwise", (a,), fn=fn_key, label=label)

    def fscale(self, a: int, freqs: tuple[float, ...]) -> int:
        ca = self.cval(a)
        if ca is not None:
            return self._fold([v * f for f in freqs for v in ca])
        return self.g.add("fscale", (a,), freqs=tuple(freqs))

    def posenc(self, a: int, freqs: tuple[float, ...], include_input: bool) -> int:
        return self.g.add("posenc", (a,), freqs=tuple(freqs), include_input=bool(include_input))

    def linear(self, a: int, param: str, cols: tuple[int, int] | None = None, bias: bool = True) -> int:
        info: ParamInfo = self.g.graph["params"][param]
        cols = cols or (0, info.inp)
        ca = self.cval(a)
        if ca is not None and not bias and len(ca) == 1 and ca[0] == 1.0:
            # W[:, c] @ [1] is the weight column itself: a parameter view, no compute
            self.folded += 1
            return self.g.add("wcol", (), param=param, col=cols[0], out=info.out)
        return self.g.add("linear", (a,), param=param, cols=tuple(cols), bias=bool(bias and info.bias), out=info.out)

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


def _num(v: float) -> str:
    return repr(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(v)


def describe(g: IRGraph, nid: int) -> str:
    """``op[attrs](inputs)`` for one node."""
    d = g.nodes[nid]
    op, a = d["op"], d["attrs"]
    args = ", ".join(f"%{i}" for i in d["inputs"])
    if op == "input":
        return f"input[{a['name']}](x[:, {a['start']}:{a['stop']}])"
    if op == "constant":
        vals = a["value"]
        body = ", ".join(_num(v) for v in vals[:6]) + (f", ... ({len(vals)} values)" if len(vals) > 6 else "")
        return f"constant({body})"
    if op == "linear":
        extra = "" if a["bias"] else ", no bias"
        p = g.graph["params"][a["param"]]
        cols = "" if tuple(a["cols"]) == (0, p.inp) else f", cols={a['cols'][0]}:{a['cols'][1]}"
        return f"linear[{a['param']}{cols}{extra}]({args})"
    if op == "wcol":
        return f"wcol[{a['param']}, col={a['col']}]()"
    if op == "pointwise":
        return f"{a['label']}({args})"
    if op == "scale":
        return f"scale[{_num(a['value'])}]({args})"
    if op == "slice":
        return f"slice[{a['start']}:{a['stop']}]({args})"
    if op == "expand":
        return f"expand[{a['out']}]({args})"
    if op in ("fscale", "posenc"):
        fr = ", ".join(_num(f) for f in a["freqs"][:4]) + (", ..." if len(a["freqs"]) > 4 else "")
        inc = f", include_input={a['include_input']}" if op == "posenc" else ""
        return f"{op}[freqs=({fr}){inc}]({args})"
    return f"{op}({args})"


def format_graph(g: IRGraph) -> str:
    """Deterministic text: one line per node, ``%id : [N|1, width] = op[attrs](inputs)``."""
    lines = [f"graph {g.graph.get('name', '?')}  # {g.graph.get('title', '')}".rstrip()]
    ins = ", ".join(f"{n}=x[:, {a}:{b}]" for n, (a, b) in g.graph["inputs"].items())
    lines.append(f"  inputs: {ins}")
    for name, p in sorted(g.graph["params"].items()):
        b = f" + bias[{p.out}]" if p.bias else ""
        lines.append(f"  param {name}: weight[{p.out}, {p.inp}]{b}")
    for nid in g.order():
        d = g.nodes[nid]
        rows = "N" if d["batched"] else "1"
        lines.append(f"  %{nid} : [{rows}, {d['width']}] = {describe(g, nid)}")
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


def pointwise_expr(g: IRGraph, nid: int):
    """The sympy expression (of ``primitives.x``) that a ``pointwise`` node applies elementwise.
    Backends read pointwise meaning only through this function."""
    from .activations import lookup

    return lookup(g.attrs(nid)["fn"]).expr
