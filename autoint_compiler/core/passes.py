"""Graph-to-graph passes: dead-code elimination with compaction, and structural CSE.

Constant folding and the algebraic peepholes happen as nodes are built (``ir.Builder``), so every
graph is already folded; CSE is hash-consing (``IRGraph.add``). ``rebuild`` replays a graph through
``IRGraph.add``, which merges any structurally equal nodes that were built apart (CSE for graphs
that came from elsewhere) and renumbers the survivors 0..n-1 in schedule order; frontend names
follow their nodes.
"""

from __future__ import annotations

from .ir import IRGraph


def live_nodes(g: IRGraph) -> set[int]:
    """The outputs and everything they read (one backward sweep over the schedule: linear time)."""
    live = set(g.graph["outputs"])
    for nid in sorted(g.nodes, reverse=True):
        if nid in live:
            live.update(g.nodes[nid]["inputs"])
    return live


def rebuild(g: IRGraph, keep: set[int] | None = None) -> IRGraph:
    """A fresh graph holding the nodes in ``keep`` (default: all), hash-consed and renumbered."""
    out = IRGraph()
    out.graph.update({k: v for k, v in g.graph.items() if k not in ("outputs", "params", "inputs", "names")})
    out.graph["params"] = dict(g.graph["params"])
    out.graph["inputs"] = dict(g.graph["inputs"])
    mapping: dict[int, int] = {}
    names = g.graph.get("names", {})
    for nid in g.order():
        if keep is not None and nid not in keep:
            continue
        d = g.nodes[nid]
        mapping[nid] = new = out.add(d["op"], tuple(mapping[i] for i in d["inputs"]), **d["attrs"])
        if nid in names:
            out.graph["names"].setdefault(new, names[nid])
    out.graph["outputs"] = [mapping[o] for o in g.graph["outputs"]]
    return out


def dce(g: IRGraph) -> IRGraph:
    """Drop every node that does not reach an output; renumber the rest."""
    return rebuild(g, live_nodes(g))


def cse(g: IRGraph) -> IRGraph:
    """Merge structurally equal nodes (and renumber)."""
    return rebuild(g)
