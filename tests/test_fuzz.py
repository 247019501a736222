"""Fuzzing the spec loader and the compiler with hypothesis (derandomized: the same examples on every
run, so a failure reproduces).

* random text, and random YAML-shaped text, through ``load_spec``;
* random dict specs (MLP form) and random graphs (every graph op, attributes of every type and range)
  through ``compile_source`` (no torch: the IR, derivation and code generation);
* small random graphs that compile through ``compile``: the generated module imports, and the grad
  network matches nested ``torch.func.jvp`` of the integral network.

Only the library's errors (``SpecError``, ``CompileError``) may escape. The whole file is bounded
to roughly half a minute on one core (``max_examples`` below).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autoint_compiler as ac
from autoint_compiler.frontends.spec import GRAPH_OPS, load_spec


def fuzz(max_examples):
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


ALLOWED = (ac.SpecError, ac.CompileError)
COUNTS: dict[str, int] = {}


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


# ----------------------------------------------------------------------------- text

YAML_BITS = [
    "name: ",
    "inputs: ",
    "integrate: ",
    "output: ",
    "mlp: ",
    "graph: ",
    "hidden: ",
    "activation: ",
    "seed: ",
    "{",
    "}",
    "[",
    "]",
    ", ",
    ": ",
    "\n",
    "  ",
    "- ",
    "&a ",
    "*a",
    "<<: ",
    "!!python/object ",
    "!!binary ",
    "? ",
    "t",
    "y",
    "1",
    "-1",
    "3e1",
    ".inf",
    ".nan",
    "9" * 50,
    "~",
    "true",
    "'x'",
    '"',
    "#",
    "|",
    ">",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "sine",
    "{formula: 'sin(x)'}",
    "w0",
    "0x1F",
    "1_000",
    "2001-01-01",
    "\t",
    "\x00",
    "é",
]


@fuzz(500)
@given(st.one_of(st.text(max_size=300), st.lists(st.sampled_from(YAML_BITS), max_size=60).map("".join)))
def test_fuzz_yaml_text(text):
    _count("yaml text")
    try:
        load_spec(text if "\n" in text or not text.strip().lower().endswith((".yaml", ".yml")) else text + "\n")
    except ALLOWED:
        pass


# ----------------------------------------------------------------------------- values

NUMBERS = st.one_of(
    st.integers(-5, 70),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 64, 65536, 65537, 2**63, -(2**63) - 1, 10**400, 1e300, -0.0, 3.5, 1e-300]),
)
NAMES = st.one_of(
    st.sampled_from(["t", "y", "s", "h", "a", "b", "o", "x", "_", "__x", "class", "import", "a" * 67, "A1"]),
    st.text(max_size=12),
)
SCALARS = st.one_of(NUMBERS, NAMES, st.booleans(), st.none())
ANY = st.recursive(
    SCALARS, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(NAMES, c, max_size=4)), max_leaves=12
)
ACTIVATIONS = st.one_of(
    st.sampled_from(["swish", "tanh", "sine", "relu", "softplus", "gelu", "elu", "log", "bogus", ""]),
    st.fixed_dictionaries(
        {"name": st.sampled_from(["sine", "elu", "tanh"])}, optional={"w0": NUMBERS, "alpha": NUMBERS}
    ),
    st.fixed_dictionaries(
        {
            "formula": st.sampled_from(
                [
                    "x*tanh(x)",
                    "sin(x)",
                    "x**x",
                    "x*log(0)",
                    "sqrt(-1)",
                    "x/0",
                    "exp(exp(exp(x)))",
                    "__import__('os')",
                    "sin(" * 13 + "x" + ")" * 13,
                    "x" * 500,
                    "x**70",
                    "erf(x)*x",
                    "abs(x)",
                    "relu(x)**2",
                ]
            )
        }
    ),
    ANY,
)


@st.composite
def mlp_specs(draw):
    inputs = draw(st.dictionaries(NAMES, st.one_of(st.integers(-1, 4), NUMBERS), min_size=0, max_size=4))
    names = list(inputs) or ["t"]
    spec = {
        "name": draw(NAMES),
        "inputs": inputs,
        "integrate": draw(st.one_of(st.lists(st.sampled_from(names + ["zz"]), max_size=4), ANY)),
        "output": draw(st.one_of(st.integers(-1, 4), NUMBERS)),
        "mlp": {
            "hidden": draw(st.one_of(st.lists(st.one_of(st.integers(-2, 16), NUMBERS), max_size=4), ANY)),
            "activation": draw(st.one_of(ACTIVATIONS, st.lists(ACTIVATIONS, max_size=4))),
        },
    }
    if draw(st.booleans()):
        spec["mlp"]["encoding"] = draw(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "inputs": st.lists(st.sampled_from(names), max_size=3),
                        "frequencies": st.one_of(st.integers(-1, 40), NUMBERS),
                    },
                    optional={"include_input": st.one_of(st.booleans(), ANY)},
                ),
                ANY,
            )
        )
    if draw(st.booleans()):
        spec["mlp"]["skips"] = draw(st.one_of(st.lists(st.integers(-1, 5), max_size=3), ANY))
    for key in ("seed", "dtype", "init", "backend"):
        if draw(st.booleans()):
            spec[key] = draw(st.one_of(st.sampled_from(["float64", "siren", "torch", "xavier"]), SCALARS))
    if draw(st.integers(0, 9)) == 0:
        spec[draw(NAMES)] = draw(ANY)
    return spec


ATTR_VALUES = {
    "out": st.one_of(st.integers(-1, 9), NUMBERS),
    "bias": st.one_of(st.booleans(), SCALARS),
    "frequencies": st.one_of(st.integers(-1, 40), NUMBERS),
    "include_input": st.one_of(st.booleans(), SCALARS),
    "value": NUMBERS,
    "start": st.one_of(st.integers(-1, 5), NUMBERS),
    "stop": st.one_of(st.integers(-1, 6), NUMBERS),
    "formula": st.sampled_from(["x*tanh(x)", "sin(x)+x", "x*log(0)", "exp(x)", "x**3", "bad(", "x**x"]),
    "w0": NUMBERS,
    "alpha": NUMBERS,
}


@st.composite
def graph_specs(draw):
    """Anything graph-shaped: unknown ops, dangling references, attributes of any type or range."""
    inputs = {"t": 1, "y": draw(st.integers(1, 3))}
    if draw(st.booleans()):
        inputs = draw(st.dictionaries(NAMES, st.one_of(st.integers(-1, 3), NUMBERS), max_size=3))
    nodes, known = [], list(inputs)
    for i in range(draw(st.integers(0, 7))):
        op = draw(st.one_of(st.sampled_from(sorted(GRAPH_OPS)), NAMES))
        required, optional = GRAPH_OPS.get(op, ({}, {}))
        node = {
            "name": draw(st.one_of(st.just(f"n{i}"), NAMES)),
            "op": op,
            "in": [draw(st.sampled_from([*known, "ghost"])) for _ in range(draw(st.integers(0, 3)))],
        }
        for key in [*required, *(k for k in optional if draw(st.booleans()))]:
            node[key] = draw(ATTR_VALUES.get(key, SCALARS))
        if draw(st.integers(0, 9)) == 0:
            node[draw(NAMES)] = draw(ANY)
        nodes.append(node)
        known.append(node["name"])
    integrate = ["t"] if draw(st.booleans()) else draw(ANY)
    return {"name": draw(NAMES), "inputs": inputs, "integrate": integrate, "graph": nodes}


ELEMENTWISE = sorted(
    k
    for k in GRAPH_OPS
    if k not in ("linear", "posenc", "add", "sub", "mul", "constant", "concat", "slice", "sum", "formula", "log")
)


@st.composite
def valid_graphs(draw):
    """Well-formed graphs (widths consistent), so that they reach code generation: every op, names up
    to 80 characters, one to three integration variables, with or without parameters."""
    n_vars = draw(st.integers(1, 3))
    inputs = {f"t{k}": 1 for k in range(n_vars)}
    inputs["y"] = draw(st.integers(1, 2))
    widths = dict(inputs)
    nodes = []
    for i in range(draw(st.integers(1, 6))):
        name = draw(
            st.one_of(st.just(f"n{i}"), st.text("abcdefghij_", min_size=1, max_size=80).map(lambda s, i=i: f"v{i}_{s}"))
        )
        op = draw(
            st.sampled_from(
                [
                    "linear",
                    "posenc",
                    "add",
                    "sub",
                    "mul",
                    "constant",
                    "concat",
                    "slice",
                    "sum",
                    "scale",
                    "neg",
                    "formula",
                    *ELEMENTWISE,
                ]
            )
        )
        src = draw(st.sampled_from(sorted(widths)))
        w = widths[src]
        node = {"name": name, "op": op, "in": [src]}
        if op == "linear":
            node.update(out=draw(st.integers(1, 5)), bias=draw(st.booleans()))
            node["in"] = draw(st.lists(st.sampled_from(sorted(widths)), min_size=1, max_size=3))
            w = node["out"]
        elif op == "posenc":
            node.update(frequencies=draw(st.integers(1, 3)), include_input=draw(st.booleans()))
            w = w * (2 * node["frequencies"] + node["include_input"])
        elif op in ("add", "sub", "mul"):
            same = sorted(k for k, v in widths.items() if v == w)
            node["in"] = [src, draw(st.sampled_from(same))]
        elif op == "constant":
            node = {"name": name, "op": op, "value": draw(st.floats(-2, 2)), "out": draw(st.integers(1, 3))}
            w = node["out"]
        elif op == "concat":
            node["in"] = draw(st.lists(st.sampled_from(sorted(widths)), min_size=1, max_size=3))
            w = sum(widths[k] for k in node["in"])
        elif op == "slice":
            start = draw(st.integers(0, w - 1))
            node.update(start=start, stop=draw(st.integers(start + 1, w)))
            w = node["stop"] - start
        elif op == "sum":
            w = 1
        elif op == "scale":
            node["value"] = draw(st.floats(-3, 3))
        elif op == "formula":
            node["formula"] = draw(st.sampled_from(["x*tanh(x)", "sin(x)+x**2", "x*sigmoid(x)", "exp(-x*x)"]))
        elif op == "sine":
            node["w0"] = draw(st.floats(0.5, 3))
        elif op == "elu":
            node["alpha"] = draw(st.floats(0.1, 2))
        if node["name"] in widths:
            continue
        nodes.append(node)
        widths[node["name"]] = w
    used = {r for n in nodes for r in n.get("in", [])}
    sinks = [n["name"] for n in nodes if n["name"] not in used]
    if draw(st.booleans()):  # usually a readout layer; sometimes a graph without parameters
        nodes.append({"name": "out", "op": "linear", "in": [*sinks, *inputs], "out": draw(st.integers(1, 2))})
    else:
        nodes.append({"name": "out", "op": "concat", "in": [*sinks, *(k for k in inputs if k != "y")]})
    return {
        "name": draw(st.sampled_from(["fz", "f" * 70])),
        "inputs": inputs,
        "integrate": [f"t{k}" for k in range(n_vars)],
        "graph": nodes,
        "dtype": "float64",
        "seed": 0,
    }


@st.composite
def valid_mlps(draw):
    """Well-formed MLP specs: every activation (with parameters and formulas), encodings, skips."""
    n_vars = draw(st.integers(1, 3))
    inputs = {f"t{k}": 1 for k in range(n_vars)}
    inputs["y"] = draw(st.integers(1, 2))
    hidden = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    act = st.one_of(
        st.sampled_from(sorted(k for k in GRAPH_OPS if k in ELEMENTWISE or k == "log")),
        st.builds(lambda w: {"name": "sine", "w0": w}, st.floats(0.5, 3)),
        st.builds(lambda a: {"name": "elu", "alpha": a}, st.floats(0.1, 2)),
        st.sampled_from([{"formula": "x*tanh(softplus(x))"}, {"formula": "sin(x)*x"}, {"formula": "x**3/3"}]),
    )
    mlp = {
        "hidden": hidden,
        "activation": draw(st.one_of(act, st.lists(act, min_size=len(hidden), max_size=len(hidden)))),
    }
    if draw(st.booleans()):
        mlp["encoding"] = {
            "inputs": draw(st.lists(st.sampled_from(sorted(inputs)), min_size=1, max_size=2, unique=True)),
            "frequencies": draw(st.integers(1, 3)),
            "include_input": draw(st.booleans()),
        }
    if len(hidden) > 1 and draw(st.booleans()):
        mlp["skips"] = [draw(st.integers(1, len(hidden) - 1))]
    return {
        "name": "fm",
        "inputs": inputs,
        "integrate": [f"t{k}" for k in range(n_vars)],
        "output": draw(st.integers(1, 2)),
        "mlp": mlp,
        "dtype": "float64",
        "seed": 0,
        "init": draw(st.sampled_from(["default", "siren", "xavier"])),
    }


def _paths(obj, prefix=()):
    """Every (path, value) in a nested dict/list spec."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


HOSTILE = st.one_of(
    NUMBERS,
    SCALARS,
    ANY,
    st.sampled_from(
        [10**400, -(10**400), float("nan"), float("inf"), 2**64, {"formula": "x*log(0)"}, "x" * 300, [], {}]
    ),
)


@st.composite
def mutated_specs(draw):
    """A well-formed spec (an example, or a generated MLP or graph) with one to three parts replaced
    by hostile values, deleted, or joined by an unknown key: most of it stays valid, so the hostile
    part reaches the deeper checks."""
    import copy

    import yaml
    from conftest import REPO_ROOT

    base = draw(
        st.one_of(
            st.sampled_from(sorted((REPO_ROOT / "examples").glob("*.yaml"))).map(
                lambda p: yaml.safe_load(p.read_text())
            ),
            valid_mlps(),
            valid_graphs(),
        )
    )
    spec = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(spec) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = spec
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.integers(0, 5))
        if action == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == 1 and isinstance(parent, dict):
            parent[draw(NAMES)] = draw(HOSTILE)
        else:
            parent[path[-1]] = draw(HOSTILE)
    return spec


@fuzz(600)
@given(st.one_of(mutated_specs(), mlp_specs(), graph_specs(), ANY))
def test_fuzz_dict_specs_through_the_compiler(spec):
    _count("dict specs")
    try:
        ac.compile_source(spec)
    except ALLOWED:
        return
    _count("dict specs compiled")


@fuzz(50)
@given(st.one_of(valid_graphs(), valid_mlps()))
def test_fuzz_compiled_graphs_import_and_match_nested_jvp(spec):
    """Graphs that compile must import and give the derivative torch itself computes."""
    import torch
    from conftest import ac_inputs, jvp_reference

    _count("graphs tried")
    try:
        net = ac.compile(spec)
    except ALLOWED:
        return
    _count("graphs compiled and imported")
    x = ac_inputs(net, n=8)
    g = net.grad(x)
    ref = jvp_reference(net, x)
    assert g.shape == ref.shape
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(g), finite)
    scale = max(1.0, ref[finite].abs().max().item()) if finite.any() else 1.0
    assert torch.allclose(g[finite], ref[finite], rtol=1e-8, atol=1e-9 * scale), spec


def test_zz_fuzz_report(capsys):
    """Prints how many examples ran (pytest -s shows it); runs last in this file."""
    with capsys.disabled():
        print(f"\nfuzz examples: {COUNTS}")
    # where a fuzz test ran, some of its inputs made it all the way (not only rejections)
    for tried, done in (("dict specs", "dict specs compiled"), ("graphs tried", "graphs compiled and imported")):
        if COUNTS.get(tried):
            assert COUNTS.get(done, 0) > 0, f"{COUNTS[tried]} {tried}, not one {done}"


pytestmark = pytest.mark.filterwarnings("ignore")
