"""Hostile specs: strings that try to get into the generated code, formulas that try to run code,
YAML tags that construct Python objects, resource bombs. Each must either compile to safe identifiers
(the generated source holds none of the injected text and imports cleanly) or raise SpecError, and no
side effect may ever happen."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO_ROOT, ac_compile, ac_inputs, ac_subprocess_env

import autoint_compiler as ac
from autoint_compiler.core.names import is_identifier


def _mlp(name="sec", inputs=None, activation="tanh", integrate=("t",)):
    return {
        "name": name,
        "inputs": inputs or {"t": 1, "y": 2},
        "integrate": list(integrate),
        "output": 1,
        "dtype": "float64",
        "seed": 0,
        "mlp": {"hidden": [4], "activation": activation},
    }


#: names (module/class prefix) that try to break out of an identifier, a string or a comment
HOSTILE_NAMES = [
    "x; import os",
    "a\nimport os\nos.system('touch {pwned}')\n",
    'q"; __import__("os").system("touch {pwned}"); "',
    "q'''; __import__('os').system('touch {pwned}'); '''",
    'q"""\n__import__("os").system("touch {pwned}")\n"""',
    "# comment\r\n__import__('os').system('touch {pwned}')",
    "{{ spec }}{% raw %}{{ 7*7 }}",  # jinja2 template syntax
    "class",
    "1abc",
    "!!!",
    "../../../tmp/evil",
    "naïve-名前",
    "\\\\x00\x00nul",
]

#: names in generated code that would mean injected code
FORBIDDEN_NAMES = {"os", "system", "__import__", "eval", "exec", "subprocess", "open", "compile", "getattr"}


def _check_generated_source(source: str):
    tree = ast.parse(source)  # it is valid Python
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    # torch.compile (compile_pointwise) is the one legitimate 'compile'; the builtin stays forbidden
    attrs = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and not (n.attr == "compile" and isinstance(n.value, ast.Name) and n.value.id == "torch")
    }
    imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not (names | attrs) & FORBIDDEN_NAMES, sorted((names | attrs) & FORBIDDEN_NAMES)
    assert imports <= {"itertools", "torch", "torch.nn.functional", "nn", "math"}, imports
    assert modules <= {"torch", None}, modules
    for bad in ("touch ", "system(", "import os", "{%", "7*7", "../"):
        assert bad not in source, f"injected text {bad!r} reached the generated source"


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_spec_names_become_safe_identifiers(name, tmp_path):
    pwned = tmp_path / "pwned"
    spec = _mlp(name=name.replace("{pwned}", str(pwned)))
    try:
        cs = ac.compile_source(spec)
    except ac.SpecError:
        assert not pwned.exists()
        return
    assert is_identifier(cs.name), cs.name
    for fname in cs.files():  # the CLI writes these names into DIR: no path separators, no '..'
        assert "/" not in fname and "\\" not in fname and not fname.startswith("."), fname
    _check_generated_source(cs.source)
    for text in cs.files().values():
        assert "touch" not in text or "touch_" in text  # only ever as part of an identifier
    net = ac_compile(spec)  # imports and runs the generated module
    x = ac_inputs(net, 3)
    assert torch.isfinite(net.grad(x)).all()
    assert not pwned.exists()


@pytest.mark.parametrize(
    "inputs",
    [
        {"t": 1, "y; import os": 1},
        {"t": 1, "y\nimport os": 1},
        {"t": 1, "class": 1},
        {"t": 1, "__import__('os')": 1},
        {"t": 1, "": 1},
    ],
    ids=["semicolon", "newline", "keyword", "call", "empty"],
)
def test_hostile_input_names_are_spec_errors(inputs):
    with pytest.raises(ac.SpecError) as info:
        ac.compile_source(_mlp(inputs=inputs))
    assert str(info.value).startswith("<dict>: inputs.")


@pytest.mark.parametrize(
    "node_name",
    ["h; import os", "h\nimport os", "h'", "for", "h.weight", "h[0]", "x y"],
)
def test_hostile_graph_node_names_are_spec_errors(node_name):
    spec = _mlp()
    del spec["mlp"], spec["output"]
    spec["graph"] = [
        {"name": node_name, "op": "linear", "in": ["t", "y"], "out": 3},
        {"name": "a", "op": "tanh", "in": [node_name]},
        {"name": "o", "op": "linear", "in": ["a"], "out": 1},
    ]
    with pytest.raises(ac.SpecError) as info:
        ac.compile_source(spec)
    assert str(info.value).startswith("<dict>: graph[0].name: ")


@pytest.mark.parametrize(
    "node_name",
    ["_h", "self", "torch", "F", "nn", "m", "x", "kw", "super", "v1", "ci0", "cg0", "u2"],
)
def test_graph_node_names_that_shadow_generated_names(node_name):
    """Identifiers that are also names in the generated code (or private/mangled names) must not
    break the networks."""
    spec = _mlp()
    del spec["mlp"], spec["output"]
    spec["graph"] = [
        {"name": node_name, "op": "linear", "in": ["t", "y"], "out": 3},
        {"name": "a", "op": "tanh", "in": [node_name]},
        {"name": "o", "op": "linear", "in": ["a", "y"], "out": 1},
    ]
    net = ac_compile(spec)
    x = ac_inputs(net, 4)
    from conftest import assert_rel_close, jvp_reference

    assert_rel_close(net.grad(x).detach(), jvp_reference(net, x), 1e-10, node_name)


HOSTILE_FORMULAS = [
    "__import__('os').system('touch {pwned}')",
    "x.__class__",
    "x.__class__.__mro__[1].__subclasses__()",
    "(lambda: 1)()",
    "(lambda y: y)(x)",
    "x if x else 1",
    "x**10**10",
    "x**(10**10)",
    "2**2**2**2**2*x",
    "x*1e309",
    "x*10000000.0",
    "[x for x in ()]",
    "exec('import os')",
    "eval('x')",
    "open('{pwned}', 'w')",
    "globals()",
    "x; import os",
    "x\nimport os",
    "sin.__globals__",
    "__builtins__",
    "x*'a'",
    "{x}",
    "x := 1",
    "x" * 500,
]


@pytest.mark.parametrize("formula", HOSTILE_FORMULAS, ids=range(len(HOSTILE_FORMULAS)))
def test_hostile_formulas_are_spec_errors(formula, tmp_path):
    pwned = tmp_path / "pwned"
    spec = _mlp(activation={"formula": formula.replace("{pwned}", str(pwned))})
    with pytest.raises(ac.SpecError) as info:
        ac.compile_source(spec)
    assert str(info.value).startswith("<dict>: mlp.activation: bad formula: ")
    assert "\n" not in str(info.value)
    assert not pwned.exists()
    # the graph form validates the same way
    spec = _mlp()
    del spec["mlp"], spec["output"]
    spec["graph"] = [
        {"name": "h", "op": "linear", "in": ["t", "y"], "out": 3},
        {"name": "f", "op": "formula", "in": ["h"], "formula": formula.replace("{pwned}", str(pwned))},
        {"name": "o", "op": "linear", "in": ["f"], "out": 1},
    ]
    with pytest.raises(ac.SpecError) as info:
        ac.compile_source(spec)
    assert str(info.value).startswith("<dict>: graph[1].formula: bad formula: ")
    assert not pwned.exists()


@pytest.mark.parametrize("formula", ["x*((9**64)**64)", "x*((9**64)**64)**64", "x*999999**64"])
def test_huge_constant_from_powers_is_a_spec_error(formula):
    with pytest.raises(ac.SpecError):
        ac.compile_source(_mlp(activation={"formula": formula}))


@pytest.mark.parametrize("node_name", ["__h", "__h__"])
def test_graph_node_names_that_python_mangles_are_spec_errors(node_name):
    """A parameter attribute 'self.__h_weight' would be name-mangled per class (IntegralNet vs GradNet),
    so such names are refused with a message that says why."""
    spec = _mlp()
    del spec["mlp"], spec["output"]
    spec["graph"] = [
        {"name": node_name, "op": "linear", "in": ["t", "y"], "out": 3},
        {"name": "o", "op": "linear", "in": [node_name], "out": 1},
    ]
    with pytest.raises(ac.SpecError) as info:
        ac.compile_source(spec)
    assert str(info.value) == (
        f"<dict>: graph[0].name: expected a name not starting with '__' (Python mangles those), got {node_name!r}"
    )


def test_finite_formula_constants_compile():
    """The limits are not too strict: moderate constants and powers are accepted and compile."""
    net = ac_compile(_mlp(activation={"formula": "1e6*x - 999999*x + x**64/1e6 + 0x10*x - 1_000*x/1e3"}))
    x = ac_inputs(net, 3, low=-0.5, high=0.5)
    assert torch.isfinite(net.grad(x)).all()


YAML_TAGS = [
    "!!python/object/apply:os.system ['touch {pwned}']",
    "!!python/object/new:os.system ['touch {pwned}']",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:builtins.object {}",
]


@pytest.mark.parametrize("tag", YAML_TAGS, ids=["apply", "new", "name", "module", "object"])
@pytest.mark.parametrize("where", ["seed", "name", "hidden"])
def test_python_yaml_tags_are_rejected(tag, where, tmp_path):
    """``yaml.safe_load`` semantics: a tag that would construct a Python object is a SpecError."""
    pwned = tmp_path / "pwned"
    value = tag.replace("{pwned}", str(pwned))
    text = {
        "seed": f"name: a\ninputs: {{t: 1}}\nintegrate: [t]\noutput: 1\nmlp: {{hidden: [4]}}\nseed: {value}\n",
        "name": f"name: {value}\ninputs: {{t: 1}}\nintegrate: [t]\noutput: 1\nmlp: {{hidden: [4]}}\n",
        "hidden": f"name: a\ninputs: {{t: 1}}\nintegrate: [t]\noutput: 1\nmlp:\n  hidden:\n    - {value}\n",
    }[where]
    with pytest.raises(ac.SpecError) as info:
        ac.compile_source(text)
    assert str(info.value).startswith("<string>: invalid YAML: line ")
    path = tmp_path / "tagged.yaml"
    path.write_text(text)
    with pytest.raises(ac.SpecError) as info:
        ac.compile(path)
    assert str(info.value).startswith(f"{path}: invalid YAML: ")
    assert not pwned.exists()


_BOMB_SCRIPT = textwrap.dedent(
    """
    import resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))  # load_spec itself runs in 300 MB
    resource.setrlimit(resource.RLIMIT_CPU, (4, 5))  # and in < 1 s of CPU (import included)
    import autoint_compiler as ac
    levels = 9
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = ("name: bomb\\ninputs: {t: 1}\\nintegrate: [t]\\noutput: 1\\nmlp: {hidden: [4]}\\n"
            + "seed:\\n  " + "\\n  ".join(lines) + "\\n")
    t0 = time.time()
    try:
        ac.load_spec(text)
    except ac.SpecError as exc:
        print("SpecError", len(str(exc)), round(time.time() - t0, 2))
    """
)


def test_yaml_alias_bomb_is_rejected_cheaply():
    out = subprocess.run(
        [sys.executable, "-c", _BOMB_SCRIPT], capture_output=True, text=True, cwd=REPO_ROOT,
        env=ac_subprocess_env(), timeout=30,
    )
    assert out.returncode == 0 and out.stdout.startswith("SpecError"), out.stderr[-500:]
    assert float(out.stdout.split()[-1]) < 5.0


def test_spec_values_never_reach_generated_code_raw():
    """Numbers from the spec (posenc frequencies, scale values, constants) are emitted via repr of a
    float, and strings only as identifiers: a graph full of odd but valid values compiles to a module
    with only the expected imports and names."""
    spec = {
        "name": "values",
        "inputs": {"t": 1, "y": 2},
        "integrate": ["t"],
        "dtype": "float64",
        "seed": 0,
        "graph": [
            {"name": "e", "op": "posenc", "in": ["t"], "frequencies": 2},
            {"name": "h", "op": "linear", "in": ["e", "y"], "out": 3},
            {"name": "k", "op": "constant", "value": -1e-300, "out": 3},
            {"name": "a", "op": "add", "in": ["h", "k"]},
            {"name": "s", "op": "scale", "in": ["a"], "value": 1e300},
            {"name": "s2", "op": "scale", "in": ["s"], "value": 1e-300},
            {"name": "f", "op": "sine", "in": ["s2"], "w0": 0.1},
            {"name": "o", "op": "linear", "in": ["f"], "out": 1},
        ],
    }
    cs = ac.compile_source(spec)
    _check_generated_source(cs.source)
    json.dumps(cs.report)  # the report is plain data
