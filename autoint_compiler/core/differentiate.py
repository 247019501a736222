"""IR -> grad IR: forward-mode differentiation of a whole graph along input variables.

``derive(g, [t1, t2])`` is ∂²Φ/∂t1∂t2 and ``derive(g, [t, t])`` is ∂²Φ/∂t²: the graph is derived along
t1, the result along t2, and so on. Each pass keeps the primal nodes (the tangents refer to them:
shared, not duplicated), adds one tangent node per node whose tangent is not identically zero, and
makes the tangents of the outputs the new outputs; dead code is then dropped. Pure: the input graph
is not changed. A named node's tangent takes the name with the variable appended (``h2`` -> ``h2_dt``,
then ``h2_dt_ds``; Taylor mode: ``h2_dt2``), so generated code reads as the chain rule it computes.
"""

from __future__ import annotations

from ..errors import CompileError
from .ir import Builder, IRGraph
from .ops import OPS, rule_for
from .passes import dce, rebuild


def derive_once(g: IRGraph, var: str) -> IRGraph:
    if var not in g.graph["inputs"]:
        raise CompileError(f"cannot differentiate along {var!r}: not an input of graph {g.graph.get('name')}")
    out = rebuild(g)  # a copy we can grow; ids of g map 1:1 as g is already compact
    b = Builder(out)
    T: dict[int, int | None] = {}
    for nid in out.order():
        d = out.nodes[nid]
        if d["op"] == "input" and d["attrs"]["name"] == var:
            T[nid] = b.const([1.0])
            continue
        T[nid] = rule_for(d["op"])(b, nid, T)
        t = T[nid]
        if t is not None and out.width(t) != d["width"]:
            T[nid] = b.expand(t, d["width"])
    _name_tangents(out, g, {n: {f"_d{var}": t} for n, t in T.items()})
    outputs = []
    for o in out.graph["outputs"]:
        t = T[o]
        outputs.append(t if t is not None else b.const([0.0] * out.width(o)))
    out.graph["outputs"] = outputs
    wrt = list(g.graph.get("wrt", [])) + [var]
    out.graph["wrt"] = wrt
    base = g.graph.get("base_name", g.graph.get("name", "graph"))
    out.graph["base_name"] = base
    out.graph["name"] = f"{base}.grad"
    out.graph["title"] = title(wrt)
    return dce(out)


def _name_tangents(out: IRGraph, primal: IRGraph, tangents: dict[int, dict[str, int | None]]) -> None:
    """Name the new tangent nodes of ``out`` after their primal node: ``name + suffix`` (the first name
    a node gets wins; constants and nodes of the primal graph keep theirs)."""
    names = out.graph["names"]
    for nid in sorted(tangents):
        if nid not in names:
            continue
        for suffix, t in tangents[nid].items():
            if t is not None and t not in primal and out.op(t) != "constant":
                names.setdefault(t, names[nid] + suffix)


def title(wrt: list[str]) -> str:
    """``d Phi / dt``, ``d^2 Phi / dt dy``, ``d^3 Phi / dt^2 dy``."""
    counts: dict[str, int] = {}
    for v in wrt:
        counts[v] = counts.get(v, 0) + 1
    den = " ".join(f"d{v}" + (f"^{k}" if k > 1 else "") for v, k in counts.items())
    return "d" + (f"^{len(wrt)}" if len(wrt) > 1 else "") + " Phi / " + den


#: the largest grad graph the compiler builds (nodes); over it, a CompileError says what to reduce
MAX_GRAD_NODES = 60_000
#: the highest total derivative order Σ kᵢ (3 variables of order 3: the peer workloads' ∂⁹Φ/∂x³∂y³∂z³)
#: and the most distinct integration variables the frontends accept; within them the node budget
#: above decides (a 5 × 256 swish MLP with posenc at order 3 in x, y, z: about 10,400 nodes)
MAX_TOTAL_ORDER = 9
MAX_INTEGRATION_VARIABLES = 6


def orders_problem(orders) -> str | None:
    """Why the derivative orders ``{variable: k}`` are refused before anything is derived (the one
    check both frontends share), or None."""
    if len(orders) > MAX_INTEGRATION_VARIABLES:
        return f"{len(orders)} integration variables is more than {MAX_INTEGRATION_VARIABLES}"
    total = sum(orders.values())
    if total > MAX_TOTAL_ORDER:
        return f"total order {total} is more than {MAX_TOTAL_ORDER}"
    return None


class _Coefficients:
    """``T[n]`` = the j-th derivative coefficient of node n: the tangent map a JVP rule expects."""

    def __init__(self, D: dict[int, list], j: int):
        self.D, self.j = D, j

    def __getitem__(self, n: int):
        return self.D[n][self.j]


def derive_jet(g: IRGraph, var: str, k: int) -> IRGraph:
    """∂^k Φ / ∂var^k in one Taylor-mode pass: every node carries its derivatives of orders 1..k.
    Ops linear in their inputs map each order through their own JVP rule; ``mul`` uses Leibniz and
    pointwise functions and ``posenc`` Faà di Bruno (``ops.defjet``). The graph grows with the number
    of integer partitions of k per nonlinear node, not exponentially as k nested passes would."""
    if var not in g.graph["inputs"]:
        raise CompileError(f"cannot differentiate along {var!r}: not an input of graph {g.graph.get('name')}")
    out = rebuild(g)
    b = Builder(out)
    D: dict[int, list] = {}
    for nid in list(out.order()):
        d = out.nodes[nid]
        op = OPS[d["op"]]
        row: list = [nid] + [None] * k
        if d["op"] == "input":
            if d["attrs"]["name"] == var:
                row[1] = b.const([1.0])
        else:
            for j in range(1, k + 1):
                if op.linear:
                    t = rule_for(d["op"])(b, nid, _Coefficients(D, j))
                elif op.jet is not None:
                    t = op.jet(b, nid, D, j)
                else:
                    raise CompileError(f"no Taylor-mode rule for op {d['op']!r}: add one with @defjet in ops.py")
                if t is not None and out.width(t) != d["width"]:
                    t = b.expand(t, d["width"])
                row[j] = t
        D[nid] = row
    suffixes = [f"_d{var}" + (str(j) if j > 1 else "") for j in range(k + 1)]
    _name_tangents(out, g, {n: {suffixes[j]: row[j] for j in range(1, k + 1)} for n, row in D.items()})
    out.graph["outputs"] = [D[o][k] if D[o][k] is not None else b.const([0.0] * out.width(o))
                            for o in out.graph["outputs"]]
    wrt = list(g.graph.get("wrt", [])) + [var] * k
    base = g.graph.get("base_name", g.graph.get("name", "graph"))
    out.graph.update(wrt=wrt, base_name=base, name=f"{base}.grad", title=title(wrt))
    return dce(out)


def orders_of(wrt) -> dict[str, int]:
    """``[t, t, y]`` -> ``{t: 2, y: 1}`` (first-appearance order)."""
    out: dict[str, int] = {}
    for v in wrt:
        out[v] = out.get(v, 0) + 1
    return out


def derive(g: IRGraph, wrt: list[str]) -> IRGraph:
    """∂^k Φ / ∂wrt[0] ... ∂wrt[k-1]: a variable listed twice is differentiated twice. Each variable's
    derivatives are taken together (order 1: one forward-mode pass; higher: one Taylor-mode pass)."""
    wrt = list(wrt)
    if not wrt:
        raise CompileError("derive needs at least one integration variable")
    for var, k in orders_of(wrt).items():
        g = derive_once(g, var) if k == 1 else derive_jet(g, var, k)
        if g.number_of_nodes() > MAX_GRAD_NODES:
            raise CompileError(
                f"the grad graph of {g.graph.get('base_name', 'the network')} along {wrt} has "
                f"{g.number_of_nodes()} nodes after differentiating along {var!r}, over the budget of "
                f"{MAX_GRAD_NODES} (compile time and memory grow with it): use fewer layers, fewer "
                "integration variables or a lower order"
            )
    return g
