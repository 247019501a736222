"""The IR on its own: hash-consing (CSE), constant folding, dead-code elimination, lint messages,
printer determinism, and the torch-free core."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autoint_compiler.core.differentiate import derive
from autoint_compiler.core.ir import Builder, IRGraph, ParamInfo, format_graph
from autoint_compiler.core.passes import cse, dce
from autoint_compiler.errors import CompileError


def _graph() -> tuple[IRGraph, Builder]:
    g = IRGraph(name="t", title="test")
    g.graph["inputs"] = {"t": (0, 1), "y": (1, 3)}
    g.graph["params"]["l0"] = ParamInfo(out=4, inp=3, bias=True, weight_bound=0.5, bias_bound=0.5)
    return g, Builder(g)


def test_hash_consing_builds_identical_subgraphs_once():
    g, b = _graph()
    t, y = b.input("t", 0, 1), b.input("y", 1, 3)
    h1 = b.linear(b.concat([t, y]), "l0")
    h2 = b.linear(b.concat([t, y]), "l0")
    assert h1 == h2
    assert b.mul(h1, h2) == b.mul(h2, h1)  # commutative ops are canonicalised
    assert g.number_of_nodes() == 5  # t, y, concat, linear, mul


def test_constant_folding_and_identities():
    g, b = _graph()
    t = b.input("t", 0, 1)
    one = b.const([1.0])
    assert b.mul(t, one) == t
    c = b.fscale(b.const([1.0]), (2.0, 3.0))
    assert g.attrs(c)["value"] == (2.0, 3.0)
    assert g.attrs(b.neg(c))["value"] == (-2.0, -3.0)
    assert b.neg(b.neg(t)) == t
    assert b.slice(b.concat([t, t]), 1, 2) == t  # a slice inside one concat part is that part
    w = b.linear(one, "l0", cols=(0, 1), bias=False)  # W[:, 0] @ [1] is the weight column
    assert g.op(w) == "wcol" and g.attrs(w)["col"] == 0 and not g.nodes[w]["batched"]


def test_dce_drops_unreachable_nodes_and_renumbers():
    g, b = _graph()
    t, y = b.input("t", 0, 1), b.input("y", 1, 3)
    b.linear(b.concat([t, y]), "l0")  # dead
    out = b.sum(y)
    g.graph["outputs"] = [out]
    with pytest.raises(CompileError, match=r"do not reach an output: run passes.dce\(\)"):
        g.lint()
    h = dce(g)
    h.lint()
    assert sorted(h.nodes) == [0, 1] and h.graph["outputs"] == [1]
    assert [h.op(n) for n in h.order()] == ["input", "sum"]


def test_cse_pass_merges_nodes_built_apart():
    g, b = _graph()
    t = b.input("t", 0, 1)
    a = g.add("neg", (t,))
    dup = g._next  # a duplicate added by hand, bypassing hash-consing
    g._next += 1
    g.add_node(dup, op="neg", inputs=(t,), attrs={}, width=1, batched=True)
    g.add_edge(t, dup, port=0)
    g.graph["outputs"] = [b.add(a, dup)]
    merged = cse(g)
    assert merged.number_of_nodes() == g.number_of_nodes() - 1


def test_lint_reports_actionable_problems():
    g, b = _graph()
    t = b.input("t", 0, 1)
    n = b.neg(t)
    g.graph["outputs"] = [n]
    g.nodes[n]["width"] = 7
    g.add_node(99, op="frobnicate", inputs=(), attrs={}, width=1, batched=True)
    g.graph["outputs"].append(99)
    with pytest.raises(CompileError) as err:
        g.lint()
    text = str(err.value)
    assert f"%{n} (neg): width 7 but its inputs give 1" in text
    assert "%99 (frobnicate): unknown op; define it in ops.py (defop + defjvp)" in text


def test_linear_lint_checks_parameter_shapes():
    g, b = _graph()
    t = b.input("t", 0, 1)
    g.graph["params"]["bad"] = ParamInfo(out=2, inp=5, bias=False, weight_bound=1.0, bias_bound=0.0)
    n = g.add("linear", (t,), param="bad", cols=(0, 5), bias=False, out=2)
    g.graph["outputs"] = [n]
    with pytest.raises(CompileError, match=r"columns 0:5 of a \[2, 5\] weight do not fit an input of width 1"):
        g.lint()


def test_unknown_op_is_a_compile_error_naming_it():
    g, _ = _graph()
    with pytest.raises(CompileError, match="unknown op 'warp'"):
        g.add("warp", ())


def test_derive_shares_primal_nodes_and_prunes_the_last_activation():
    from autoint_compiler.frontends.spec import load_spec
    from autoint_compiler.frontends.spec_build import build_integral

    spec = load_spec(
        {"name": "s", "inputs": {"t": 1, "y": 2}, "integrate": ["t"], "output": 1, "mlp": {"hidden": [8, 8]}}
    )
    phi = build_integral(spec)
    grad = derive(phi, ["t"])
    grad.lint()
    ops = [grad.op(n) for n in grad.order()]
    # primal linears appear once each (shared by the tangent chain); the output layer's primal is dead
    # layer0, layer1 primal; layer1 and out tangent; layer0's tangent is its weight column (wcol)
    assert ops.count("linear") == 4 and ops.count("wcol") == 1
    assert sum(1 for n in grad.order() if grad.op(n) == "linear" and grad.attrs(n)["param"] == "out") == 1
    assert grad.number_of_nodes() <= 3 * phi.number_of_nodes()
    assert format_graph(grad) == format_graph(derive(build_integral(spec), ["t"]))


def test_core_does_not_import_torch():
    code = (
        "import sys, autoint_compiler as ac\n"
        "cs = ac.compile_source({'name': 'n', 'inputs': {'t': 1}, 'integrate': ['t'], 'output': 1,"
        " 'mlp': {'hidden': [4]}})\n"
        "assert 'torch' not in sys.modules, 'the compiler core imported torch'\n"
        "print(len(cs.source))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) > 1000
