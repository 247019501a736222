"""IR -> grad IR: forward-mode differentiation of a whole graph along input variables.

``derive(g, [t1, t2])`` is ∂²Φ/∂t1∂t2 and ``derive(g, [t, t])`` is ∂²Φ/∂t²: the graph is derived along
t1, the result along t2, and so on. Each pass keeps the primal nodes (the tangents refer to them:
shared, not duplicated), adds one tangent node per node whose tangent is not identically zero, and
makes the tangents of the outputs the new outputs; dead code is then dropped. Pure: the input graph
is not changed.
"""

from __future__ import annotations

from .errors import CompileError
from .ir import Builder, IRGraph
from .ops import rule_for
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


def title(wrt: list[str]) -> str:
    """``d Phi / dt``, ``d^2 Phi / dt dy``, ``d^3 Phi / dt^2 dy``."""
    counts: dict[str, int] = {}
    for v in wrt:
        counts[v] = counts.get(v, 0) + 1
    den = " ".join(f"d{v}" + (f"^{k}" if k > 1 else "") for v, k in counts.items())
    return "d" + (f"^{len(wrt)}" if len(wrt) > 1 else "") + " Phi / " + den


def derive(g: IRGraph, wrt: list[str]) -> IRGraph:
    """∂^k Φ / ∂wrt[0] ... ∂wrt[k-1]: a variable listed twice is differentiated twice."""
    wrt = list(wrt)
    if not wrt:
        raise CompileError("derive needs at least one integration variable")
    for var in wrt:
        g = derive_once(g, var)
    return g
