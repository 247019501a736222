"""Spec -> integral IR (Φ). The MLP shorthand and the explicit graph form both lower to IR nodes here;
parameters are declared with their initialisation bounds (default, siren, xavier)."""

from __future__ import annotations

import math
from typing import Any

import networkx as nx

from ..core import activations
from ..core.ir import Builder, IRGraph, ParamInfo
from ..core.passes import dce
from ..errors import CompileError, SpecError
from .spec import FormulaActivation, NetworkSpec, node_attrs


def posenc_freqs(n: int) -> tuple[float, ...]:
    """Log-spaced frequencies 2^k·π, k = 0..n-1 (NeRF/AutoInt positional encoding)."""
    return tuple(float(2.0**k * math.pi) for k in range(n))


def pointwise_fn(act: Any) -> activations.PointwiseFn:
    if isinstance(act, FormulaActivation):
        return activations.formula(act.formula)
    params = {k: v for k, v in (("w0", act.w0), ("alpha", act.alpha)) if v is not None}
    return activations.activation(act.name, **params)


def _declare(g: IRGraph, name: str, out: int, inp: int, bias: bool, init: str, first: bool, w0: float | None):
    if init == "xavier":
        wb, bb = math.sqrt(6.0 / (inp + out)), 0.0
    elif init == "siren":
        w0 = w0 or 30.0
        wb = 1.0 / inp if first else math.sqrt(6.0 / inp) / w0
        bb = 1.0 / math.sqrt(inp)
    else:  # torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
        wb = bb = 1.0 / math.sqrt(inp)
    g.graph["params"][name] = ParamInfo(out=out, inp=inp, bias=bias, weight_bound=wb, bias_bound=bb)


def _new_graph(spec: NetworkSpec) -> tuple[IRGraph, Builder, dict[str, int]]:
    g = IRGraph()
    g.graph["name"] = f"{spec.ident}.integral"
    g.graph["base_name"] = spec.ident
    g.graph["title"] = "Phi"
    b = Builder(g)
    nodes = {}
    for name in spec.inputs:
        start, stop = spec.column_of(name)
        g.graph["inputs"][name] = (start, stop)
        nodes[name] = b.input(name, start, stop)
    return g, b, nodes


def build_integral(spec: NetworkSpec) -> IRGraph:
    g = dce(_build_mlp(spec) if spec.mlp is not None else _build_graph(spec))  # folded constants leave dead nodes
    g.lint()
    return g


def _build_mlp(spec: NetworkSpec) -> IRGraph:
    g, b, inputs = _new_graph(spec)
    mlp = spec.mlp
    enc = mlp.encoding
    features = []
    for name in spec.inputs:
        if enc is not None and name in enc.inputs:
            features.append(b.posenc(inputs[name], posenc_freqs(enc.octaves(name)), enc.include_input))
        else:
            features.append(inputs[name])
    encoded = b.concat(features)
    if enc is not None:
        b.name(encoded, "enc")
    acts = mlp.activation if isinstance(mlp.activation, list) else [mlp.activation] * len(mlp.hidden)
    h = encoded
    for i, (width, act) in enumerate(zip(mlp.hidden, acts)):
        if i in mlp.skips:
            h = b.concat([h, encoded])
        fn = pointwise_fn(act)
        w0 = getattr(act, "w0", None) or (30.0 if getattr(act, "name", None) == "sine" else None)
        _declare(g, f"layer{i}", width, g.width(h), mlp.bias, spec.init, first=(i == 0), w0=w0)
        z = b.linear(h, f"layer{i}")
        b.name(z, f"z{i}")
        h = b.name(b.pointwise(z, fn), f"h{i}")
    last_w0 = getattr(acts[-1], "w0", None) or (30.0 if getattr(acts[-1], "name", None) == "sine" else None)
    _declare(g, "out", spec.output, g.width(h), mlp.bias, spec.init, first=False, w0=last_w0)
    g.graph["outputs"] = [b.linear(h, "out")]
    return g


def _build_graph(spec: NetworkSpec) -> IRGraph:
    g, b, env = _new_graph(spec)
    deps = nx.DiGraph()
    for node in spec.graph:
        deps.add_node(node.name)
        for ref in node.inputs:
            if ref not in spec.inputs:
                deps.add_edge(ref, node.name)
    by_name = {n.name: n for n in spec.graph}
    position = {m.name: k for k, m in enumerate(spec.graph)}
    order = list(nx.lexicographical_topological_sort(deps, key=position.__getitem__))
    first_linear = _first_linears(spec)
    sine_w0 = _sine_w0_of_linears(spec)
    last = None
    for name in order:
        node = by_name[name]
        a = node_attrs(node)
        ins = [env[r] for r in node.inputs]
        try:
            env[name] = last = _lower(g, b, spec, node.name, node.op, ins, a, first_linear, sine_w0)
            b.name(last, node.name)
        except CompileError as exc:
            raise CompileError(f"graph node {node.name!r} (op {node.op}): {exc}") from None
    g.graph["outputs"] = [env[spec.graph[-1].name] if last is not None else last]
    width = g.width(g.graph["outputs"][0])
    if spec.output is not None and spec.output != width:  # `output` may state the width, and must match
        last = spec.graph[-1].name
        msg = f"expected {width}, the width of the last graph node {last!r} (or leave 'output' out), got {spec.output}"
        raise SpecError(spec.source, [("output", msg)])
    return g


def _first_linears(spec: NetworkSpec) -> set[str]:
    """Linear nodes with no linear node upstream (SIREN initialises them differently). One pass in
    dependency order, no recursion (graphs may be thousands of nodes deep)."""
    by_name = {n.name: n for n in spec.graph}
    deps = nx.DiGraph()
    for n in spec.graph:
        deps.add_node(n.name)
        deps.add_edges_from((r, n.name) for r in n.inputs if r in by_name)
    upstream: dict[str, bool] = {}  # has a linear node upstream
    for name in nx.topological_sort(deps):
        upstream[name] = any(by_name[r].op == "linear" or upstream[r] for r in by_name[name].inputs if r in by_name)
    return {n.name for n in spec.graph if n.op == "linear" and not upstream[n.name]}


def _sine_w0_of_linears(spec: NetworkSpec) -> dict[str, float]:
    """For SIREN init: the w0 of the sine that reads a linear node (else of the sine it reads)."""
    out: dict[str, float] = {}
    by_name = {n.name: n for n in spec.graph}
    for n in spec.graph:
        if n.op == "sine":
            w0 = float(node_attrs(n)["w0"])
            for ref in n.inputs:
                if ref in by_name and by_name[ref].op == "linear":
                    out[ref] = w0
    for n in spec.graph:
        if n.op == "linear" and n.name not in out:
            for ref in n.inputs:
                if ref in by_name and by_name[ref].op == "sine":
                    out[n.name] = float(node_attrs(by_name[ref])["w0"])
    return out


def _lower(g, b: Builder, spec, name, op, ins, a, first_linear, sine_w0) -> int:
    if op == "constant":
        return b.const([a["value"]] * a["out"])
    if op in ("add", "sub", "mul"):
        return getattr(b, op)(ins[0], ins[1])
    x = b.concat(ins)
    if op == "linear":
        w0 = sine_w0.get(name)
        _declare(g, name, a["out"], g.width(x), a["bias"], spec.init, first=name in first_linear, w0=w0)
        return b.linear(x, name)
    if op == "posenc":
        return b.posenc(x, posenc_freqs(a["frequencies"]), a["include_input"])
    if op == "scale":
        return b.scale(x, a["value"])
    if op == "neg":
        return b.neg(x)
    if op == "sum":
        return b.sum(x)
    if op == "concat":
        return x
    if op == "slice":
        if not 0 <= a["start"] < a["stop"] <= g.width(x):
            raise CompileError(f"slice {a['start']}:{a['stop']} is outside an input of width {g.width(x)}")
        return b.slice(x, a["start"], a["stop"])
    if op == "formula":
        fn = activations.formula(a["formula"])
    else:
        fn = activations.activation(op, **a)
    return b.pointwise(x, fn)
