"""Issue 8's seams: one definition per op (and a row per op in every consumer), self-contained IR
values (pickle, fresh-process derive, copy/subgraph cannot corrupt interning, CSE across labels),
the reference IR interpreter against the generated networks, generated-code structure and the
torch-free CLI."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import networkx as nx
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, ac_compile, ac_inputs, ac_subprocess_env
from hypothesis import HealthCheck, given, settings
from test_networks import random_specs
from test_rules import OP_ROWS

import autoint_compiler as ac
from autoint_compiler.backends import BACKENDS, get_backend, torch_backend, triton_backend
from autoint_compiler.compiler import compile_source
from autoint_compiler.core import interpret, ops, rules
from autoint_compiler.core.activations import activation, formula
from autoint_compiler.core.differentiate import derive
from autoint_compiler.core.ir import Builder, IRGraph, ParamInfo, format_graph
from autoint_compiler.core.program import Program

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))

# ---------------------------------------------------------------------------------------------------
# One definition per op, one row per consumer
# ---------------------------------------------------------------------------------------------------

#: every table that must have a row per op: (what, table, how to add it)
CONSUMERS = [
    ("torch backend lowering", torch_backend.LOWER, "a row in backends/torch_backend.py: LOWER"),
    ("IR interpreter", interpret.EVAL, "a row in interpret.py: EVAL"),
    ("triton backend lowering", triton_backend.LOWERINGS, "a row in backends/triton_backend.py: LOWERINGS"),
]


@pytest.mark.parametrize("op", sorted(ops.OPS))
def test_every_op_is_complete(op):
    """Each op has its definition pieces and a row in every consumer; a gap names the op and the piece."""
    d = ops.OPS[op]
    missing = []
    if d.jvp is None:
        missing.append("a JVP rule (@defjvp in ops.py)")
    if not d.linear and d.jet is None:
        missing.append("a Taylor-mode rule for a nonlinear op (@defjet in ops.py)")
    if d.show is None and d.printed is None and d.attrs:
        missing.append("a printed form for its attributes (show= in ops.py)")
    for what, table, how in CONSUMERS:
        if op not in table:
            missing.append(f"{what}: {how}")
    assert not missing, f"op {op!r} lacks: " + "; ".join(missing)


def test_consumer_tables_have_no_stale_rows():
    for what, table, _ in CONSUMERS:
        assert set(table) <= set(ops.OPS), f"{what} has rows for unknown ops {sorted(set(table) - set(ops.OPS))}"
    assert set(rules.RULES) == set(ops.OPS)


def test_backend_registry_names_modules():
    assert {"torch", "triton"} <= set(BACKENDS)
    assert hasattr(get_backend("torch"), "generate")
    with pytest.raises(ac.CompileError, match="unknown backend 'cuda'"):
        get_backend("cuda")


def test_missing_lowering_is_a_compile_error_naming_the_op(monkeypatch):
    monkeypatch.delitem(torch_backend.LOWER, "posenc")
    with pytest.raises(ac.CompileError, match="no lowering for op 'posenc'"):
        compile_source(REPO_ROOT / "examples" / "field3d.yaml")


# ---------------------------------------------------------------------------------------------------
# Self-contained IR values
# ---------------------------------------------------------------------------------------------------


def test_pickled_phi_derives_in_a_fresh_process(tmp_path):
    """Pickle Φ, derive and generate in a new interpreter: identical to the in-process result."""
    cs = compile_source(REPO_ROOT / "examples" / "field3d.yaml")
    blob = tmp_path / "phi.pkl"
    blob.write_bytes(pickle.dumps(cs.integral_ir))
    script = textwrap.dedent(
        """
        import pickle, sys
        from autoint_compiler.core.differentiate import derive
        from autoint_compiler.core.ir import format_graph
        from autoint_compiler.core.program import make_program
        from autoint_compiler.compiler import generate_source
        g = pickle.loads(open(sys.argv[1], 'rb').read())
        p = make_program(g, name='field3d', dtype='float32', wrt=['t'])
        sys.stdout.write(format_graph(p.grad) + '\\n===\\n' + generate_source(p).source)
        """
    )
    out = subprocess.run([sys.executable, "-c", script, str(blob)], capture_output=True, text=True,
                         env=ac_subprocess_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    grad_text, source = out.stdout.split("\n===\n")
    assert grad_text == format_graph(cs.grad_ir)
    assert source == cs.source


def test_pickle_round_trip_keeps_meaning_and_interning():
    cs = compile_source(REPO_ROOT / "examples" / "graph_mix.yaml")
    g = pickle.loads(pickle.dumps(cs.grad_ir))
    assert isinstance(g, nx.DiGraph) and format_graph(g) == format_graph(cs.grad_ir)
    g.lint()
    n = g.number_of_nodes()
    some = g.order()[3]
    assert Builder(g).g.add(g.op(some), g.inputs_of(some), **g.attrs(some)) == some  # found, not re-added
    assert g.number_of_nodes() == n


def _small_graph():
    g = IRGraph()
    g.graph["params"]["l0"] = ParamInfo(out=4, inp=1, bias=True, weight_bound=0.5, bias_bound=0.5)
    g.graph["inputs"]["t"] = (0, 1)
    b = Builder(g)
    t = b.input("t", 0, 1)
    h = b.pointwise(b.linear(t, "l0"), activation("swish"))
    g.graph["outputs"] = [b.sum(h)]
    return g, b


@pytest.mark.parametrize("make", ["copy", "subgraph_copy", "relabel_identity", "to_directed"])
def test_networkx_copies_cannot_corrupt_interning(make):
    g, _ = _small_graph()
    h = {
        "copy": lambda: g.copy(),
        "subgraph_copy": lambda: g.subgraph(list(g.nodes)).copy(),
        "relabel_identity": lambda: nx.relabel_nodes(g, {n: n for n in g.nodes}, copy=True),
        "to_directed": lambda: g.to_directed(),
    }[make]()
    before = {n: dict(h.nodes[n]) for n in h.nodes}
    b = Builder(h)
    new = b.g.add("neg", (max(h.nodes),))
    assert new not in before, f"add() reused id {new}"
    for n, data in before.items():  # no existing node was overwritten
        assert h.nodes[n]["op"] == data["op"] and h.nodes[n]["inputs"] == data["inputs"]
    same = b.g.add("input", (), name="t", start=0, stop=1)
    assert h.nodes[same]["op"] == "input"  # hash-consing still finds existing nodes
    h.graph["outputs"] = [new]
    h.lint(allow_dead=True)


def test_copies_do_not_share_parameter_tables():
    g, _ = _small_graph()
    h = g.copy()
    h.graph["params"]["extra"] = ParamInfo(1, 1, False, 1.0, 0.0)
    assert "extra" not in g.graph["params"]


def test_lint_catches_a_corrupted_interning_table():
    g, _ = _small_graph()
    g._keys[next(iter(g._keys))] = 99
    with pytest.raises(ac.CompileError, match="interning table"):
        g.lint()
    g._reindex()
    g.lint()


def test_equal_functions_are_one_node_whatever_their_label():
    g, b = _small_graph()
    z = g.inputs_of(g.graph["outputs"][0])[0]  # the swish node
    lin = g.inputs_of(z)[0]
    assert b.pointwise(lin, activation("silu")) == z
    assert b.pointwise(lin, formula("x/(1+exp(-x))")) == z
    assert b.pointwise(lin, activation("tanh")) != z


def test_derive_is_a_pure_public_function():
    cs = compile_source(REPO_ROOT / "examples" / "box2d.yaml")
    text = format_graph(cs.integral_ir)
    g1 = ac.derive(cs.integral_ir, ["u"])
    g2 = derive(cs.integral_ir, ["u"])
    assert format_graph(g1) == format_graph(g2)
    assert format_graph(cs.integral_ir) == text  # the input graph is unchanged
    assert format_graph(ac.derive(g1, ["v"])) == format_graph(cs.grad_ir)
    twice = ac.derive(cs.integral_ir, ["u", "u"])  # repeated variable: second derivative
    assert twice.graph["title"] == "d^2 Phi / du^2"


def test_program_is_the_backend_input():
    cs = compile_source(REPO_ROOT / "examples" / "field3d.yaml")
    p = cs.program
    assert isinstance(p, Program)
    assert (p.in_features, p.out_features, p.integration_columns, p.wrt) == (3, 1, (0,), ("t",))
    assert p.hash == ac.compile(REPO_ROOT / "examples" / "field3d.yaml").spec_hash
    assert pickle.loads(pickle.dumps(p)).hash == p.hash


# ---------------------------------------------------------------------------------------------------
# The IR interpreter: an independent oracle for the generated Φ and grad networks
# ---------------------------------------------------------------------------------------------------


def _interpreter_check(net, x, tol=1e-10):
    params = {k: v.detach().double().numpy() for k, v in net.integral.state_dict().items()}
    for graph, module in ((net.integral_ir, net.integral), (net.grad_ir, net.grad)):
        want = interpret.run(graph, x.double().numpy(), params)
        got = module(x).detach().double().numpy()
        scale = max(1e-3, float(np.abs(want).max()))
        assert np.abs(got - want).max() <= tol * scale, f"{graph.graph['name']}: generated != interpreter"


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_interpreter_agrees_with_generated_networks_on_examples(spec):
    net = ac.compile(spec, dtype=torch.float64, seed=3)
    _interpreter_check(net, ac_inputs(net, 24, seed=5))


@pytest.mark.parametrize("row", sorted(OP_ROWS))
def test_interpreter_agrees_on_every_op_row(row):
    from conftest import ac_graph_spec

    for integrate in (["t"], ["t", "s"]):
        net = ac_compile(ac_graph_spec(OP_ROWS[row], integrate=integrate))
        _interpreter_check(net, ac_inputs(net, 8, seed=2, low=0.1, high=1.0))


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_specs())
def test_interpreter_agrees_on_random_architectures(spec):
    net = ac_compile(spec)
    _interpreter_check(net, ac_inputs(net, 8, seed=1))


def test_interpreter_catches_an_emitter_bug_in_phi(monkeypatch):
    """The oracle is independent of the emitter: a wrong posenc ordering in Φ is caught."""
    bad = dict(torch_backend.LOWER)

    def swapped(e, nid, a, r):
        torch_backend._lower_posenc(e, nid, {**a, "freqs": tuple(reversed(a["freqs"]))}, r)

    bad["posenc"] = swapped
    monkeypatch.setattr(torch_backend, "LOWER", bad)
    net = ac.compile(REPO_ROOT / "examples" / "field3d.yaml", dtype=torch.float64, seed=0)
    with pytest.raises(AssertionError, match="generated != interpreter"):
        _interpreter_check(net, ac_inputs(net, 8))


# ---------------------------------------------------------------------------------------------------
# Generated code from structure
# ---------------------------------------------------------------------------------------------------


def test_field3d_module_is_what_a_person_would_write():
    src = compile_source(REPO_ROOT / "examples" / "field3d.yaml").source
    # constants by value: the frequency row (in each class) and its negation (the -sin block's factor)
    assert src.count("register_buffer(") == 3 and src.count('"c0"') == 2 and src.count('"c1"') == 1
    assert "torch.ones" not in src and ".repeat(" not in src
    assert "self.layer0_weight[:, 0].unsqueeze(0)" in src  # unit column of the first tangent layer
    assert "z0 = F.linear(enc, self.layer0_weight, self.layer0_bias)" in src  # node names kept
    assert "grad_uses" not in src and "m = self.integral" not in src


def test_graph_node_names_survive_and_never_shadow():
    spec = {
        "name": "shadow",
        "inputs": {"t": 1},
        "integrate": ["t"],
        "dtype": "float64",
        "seed": 0,
        "graph": [
            {"name": "torch", "op": "linear", "in": ["t"], "out": 4},
            {"name": "F", "op": "swish", "in": ["torch"]},
            {"name": "m", "op": "tanh", "in": ["F"]},
            {"name": "self_", "op": "linear", "in": ["m"], "out": 1},
        ],
    }
    net = ac_compile(spec)
    assert "torch_1 = F.linear(" in net.source or "torch_1 = " in net.source
    x = ac_inputs(net, 4)
    _interpreter_check(net, x)


def test_generated_module_compiles_or_the_compiler_says_so(monkeypatch):
    original = torch_backend.generate

    def broken(program, **kw):
        return original(program, **kw) + "\n    def oops(:\n"

    monkeypatch.setattr(torch_backend, "generate", broken)
    with pytest.raises(ac.CompileError, match="invalid Python"):
        compile_source(REPO_ROOT / "examples" / "box2d.yaml")


def test_graph_without_parameters_compiles():
    spec = {"name": "sinonly", "inputs": {"t": 1}, "integrate": ["t"], "dtype": "float64",
            "graph": [{"name": "s", "op": "sin", "in": ["t"]}]}
    net = ac_compile(spec)
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)[:, None]
    assert torch.allclose(net.grad(x), torch.cos(x))
    assert list(net.grad.parameters()) == []


# ---------------------------------------------------------------------------------------------------
# A light CLI: compiling and inspecting import no torch
# ---------------------------------------------------------------------------------------------------

_NO_TORCH = textwrap.dedent(
    """
    import sys, json
    from autoint_compiler.cli import main
    rc = main(sys.argv[1:])
    print(json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
    """
)


@pytest.mark.parametrize("args", [["{spec}", "-o", "{out}"], ["inspect", "{spec}", "--graph", "grad"], ["rules"]],
                         ids=["compile", "inspect", "rules"])
def test_cli_compile_and_inspect_import_no_torch(args, tmp_path):
    spec = str(REPO_ROOT / "examples" / "field3d.yaml")
    argv = [a.format(spec=spec, out=tmp_path) for a in args]
    out = subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True,
                         env=ac_subprocess_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"rc": 0, "torch": False}


def test_long_node_names_give_short_valid_lines():
    long_a, long_b = "a" * 60, "b" * 60
    spec = {"name": "long", "inputs": {"t": 1, "y": 3}, "integrate": ["t"], "dtype": "float64", "seed": 0,
            "graph": [{"name": long_a, "op": "linear", "in": ["t", "y"], "out": 4},
                      {"name": long_b, "op": "swish", "in": [long_a]},
                      {"name": "o", "op": "linear", "in": [long_b], "out": 1}]}
    net = ac_compile(spec)
    assert max(len(line) for line in net.source.splitlines()) <= 110
    _interpreter_check(net, ac_inputs(net, 6))


@pytest.mark.parametrize("shape", [(4, 2), (4, 4), (3,), (2, 3, 3)])
def test_generated_networks_refuse_inputs_of_the_wrong_width(shape):
    net = ac.compile(REPO_ROOT / "examples" / "field3d.yaml")
    x = torch.rand(*shape)
    for module in (net.integral, net.grad):
        with pytest.raises(ValueError, match=r"x must be \[N, 3\]"):
            module(x)


def test_log_grad_is_nan_exactly_where_phi_is():
    """log's derivative 1/u is finite for u < 0; the grad network must not be, where Φ is NaN."""
    spec = {"name": "lg", "inputs": {"t": 1}, "integrate": ["t"], "dtype": "float64", "seed": 0,
            "graph": [{"name": "l", "op": "linear", "in": ["t"], "out": 3},
                      {"name": "g", "op": "log", "in": ["l"]},
                      {"name": "o", "op": "linear", "in": ["g"], "out": 1}]}
    net = ac_compile(spec)
    x = torch.linspace(-1, 1, 41, dtype=torch.float64)[:, None]
    phi, grad = net.integral(x).detach(), net.grad(x).detach()
    assert torch.isnan(phi).any() and torch.isfinite(phi).any()  # the test covers both regimes
    assert torch.equal(torch.isnan(grad), torch.isnan(phi))
    params = {k: v.numpy() for k, v in net.integral.state_dict().items()}
    assert np.array_equal(np.isnan(interpret.run(net.grad_ir, x.numpy(), params)), torch.isnan(grad).numpy())


def test_integrate_handles_empty_batches_and_dtype_mixes():
    net = ac.compile(REPO_ROOT / "examples" / "box2d.yaml", seed=0)
    z = torch.zeros(0, 2)
    assert net.integrate(z, z, torch.zeros(0, 3)).shape == (0, 1)
    lo, hi = torch.zeros(3, 2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)
    mixed = net.integrate(lo, hi, torch.zeros(3, 3))  # float64 bounds, float32 x and network
    same = net.integrate(lo.float(), hi.float(), torch.zeros(3, 3))
    assert mixed.dtype == torch.float32 and torch.equal(mixed, same)
    with pytest.raises(TypeError, match="floating-point"):
        net.integrate(lo.long(), hi.long())
