"""Stacked chains: the ``linear`` nodes of a graph that multiply the same weight columns and can run as
ONE GEMM over stacked rows ``[h; ḣ₁; ḣ₂; ḣ₁₂] Wᵀ`` (bias on the blocks whose node has one).

In a grad network every layer multiplies its weight into the primal chain and into each tangent chain
(2ⁿ chains for n integration variables); the forward-mode rules build one ``linear`` node per chain.
``find_stacks`` groups them: same ``param`` and ``cols``, all batched, and pairwise independent (no
path from one to another), so contracting a group to one node keeps the graph acyclic. An analysis
pass, torch-free: the Triton backend runs each stack as one kernel that loads every weight tile once
for all chains; ``benchmarks/triton_bench.py --cpu-stacking`` applies the same grouping to the torch
backend's source (one ``F.linear`` on ``torch.cat`` of the chains) to measure it on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from .ir import IRGraph


@dataclass(frozen=True)
class Stack:
    param: str
    cols: tuple[int, int]
    members: tuple[int, ...]  # linear node ids, in schedule order (the primal chain first in a grad graph)
    bias: tuple[bool, ...]  # per member


def find_stacks(g: IRGraph, min_size: int = 2, among=None) -> list[Stack]:
    """Groups of at least ``min_size`` independent batched ``linear`` nodes on the same weight columns
    (only nodes in ``among``, when given), in the order of their first member. Greedy in schedule order:
    a node joins the first group of its weight none of whose members reaches it."""
    groups: dict[tuple, list[list[int]]] = {}
    for nid in g.order():
        d = g.nodes[nid]
        if d["op"] != "linear" or not d["batched"] or (among is not None and nid not in among):
            continue
        key = (d["attrs"]["param"], tuple(d["attrs"]["cols"]))
        for members in groups.setdefault(key, []):
            if not any(nx.has_path(g, m, nid) for m in members):
                members.append(nid)
                break
        else:
            groups[key].append([nid])
    stacks = []
    for (param, cols), lists in groups.items():
        for members in lists:
            if len(members) >= min_size:
                bias = tuple(bool(g.attrs(m)["bias"]) for m in members)
                stacks.append(Stack(param, cols, tuple(members), bias))
    return sorted(stacks, key=lambda s: s.members[0])
