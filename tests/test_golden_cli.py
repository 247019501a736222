"""Golden IR text for the bundled examples, and the CLI's contract (files, exit codes, formats)."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp

from autoint_compiler.cli import main
from autoint_compiler.compiler import compile_source
from autoint_compiler.core.ir import format_graph

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parent / "golden"
CORE_EXAMPLES = ["field3d", "box2d", "graph_mix"]


@pytest.mark.parametrize("name", CORE_EXAMPLES)
@pytest.mark.parametrize("graph", ["integral", "grad"])
def test_golden_ir(name, graph):
    cs = compile_source(ROOT / "examples" / f"{name}.yaml")
    text = format_graph(cs.integral_ir if graph == "integral" else cs.grad_ir)
    path = GOLDEN / f"{name}.{graph}.ir"
    if os.environ.get("AUTOINT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path}; run with AUTOINT_UPDATE_GOLDEN=1 and review the diff"
    # Φ's IR text is what Program.hash (SPEC_HASH, checked when a checkpoint loads) is made of: a change to
    # an integral .ir file makes every saved checkpoint of that architecture refuse to load
    assert text == path.read_text(), f"IR of {name} changed; if intended, regenerate with AUTOINT_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", CORE_EXAMPLES)
def test_golden_torch_module(name):
    """The generated torch module, byte for byte: a change to generated code shows in the diff of
    tests/golden/<name>.torch.py (regenerate: make golden, i.e. AUTOINT_UPDATE_GOLDEN=1)."""
    text = compile_source(ROOT / "examples" / f"{name}.yaml").source
    path = GOLDEN / f"{name}.torch.py"
    if os.environ.get("AUTOINT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path}; run make golden and review the diff"
    assert text == path.read_text(), f"generated module of {name} changed; if intended, run make golden"


def _ruff() -> str:
    exe = Path(sys.executable).with_name("ruff")
    ruff = str(exe) if exe.exists() else shutil.which("ruff")
    assert ruff, "ruff is not installed (make setup installs it with the test extras)"
    return ruff


#: the project's own lint and format settings, applied to the generated files
RUFF = ["--isolated", "--no-cache", "--line-length", "120"]


def test_generated_torch_modules_are_lint_and_format_clean(tmp_path):
    """Every example's torch module passes ``ruff check`` (the project's rules) and ``ruff format
    --check`` unchanged: generated code is reviewed like code."""
    paths = []
    for spec in EXAMPLES:
        cs = compile_source(spec)
        paths.append(tmp_path / f"{cs.name}.py")
        paths[-1].write_text(cs.source, encoding="utf-8")
    ruff = _ruff()
    check = subprocess.run([ruff, "check", *RUFF, "--select", "E,F,W,I,B", *map(str, paths)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run([ruff, "format", "--check", "--diff", *RUFF, *map(str, paths)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert fmt.returncode == 0, fmt.stdout[-3000:] + fmt.stderr
    for p in paths:  # no private aten ops, no c1 = -c0 buffers, no t6 = -t3 lines
        text = p.read_text()
        assert "torch.ops." not in text, f"{p.name}: calls a private aten op"
        assert not re.search(r"^\s*\w+ = -\w+$", text, re.M), p.name


def test_examples_exist():
    names = {p.stem for p in EXAMPLES}
    assert set(CORE_EXAMPLES) <= names


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.stem)
def test_cli_compile_writes_module_and_ir(spec, tmp_path, capsys):
    assert main([str(spec), "-o", str(tmp_path)]) == 0
    cs = compile_source(spec)
    for fname, text in cs.files().items():
        assert (tmp_path / fname).read_text() == text
    out = capsys.readouterr().out
    assert f"{cs.name}: integral graph {cs.integral_ir.number_of_nodes()} nodes" in out


def test_cli_compile_is_byte_identical(tmp_path):
    spec = ROOT / "examples" / "field3d.yaml"
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([str(spec), "-o", str(a)]) == 0
    assert main(["compile", str(spec), "-o", str(b)]) == 0
    files = sorted(p.name for p in a.iterdir())
    assert files == ["field3d.grad.ir", "field3d.integral.ir", "field3d.py"]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_cli_inspect_text_and_dot(capsys):
    spec = str(ROOT / "examples" / "graph_mix.yaml")
    assert main(["inspect", spec, "--graph", "integral", "--format", "text"]) == 0
    text = capsys.readouterr().out
    assert text == format_graph(compile_source(spec).integral_ir)
    assert main(["inspect", spec, "--graph", "grad", "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "graph_mix.grad"') and "->" in dot and dot.rstrip().endswith("}")


def test_cli_inspect_svg_without_dot_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["inspect", str(ROOT / "examples" / "box2d.yaml"), "--format", "svg"]) == 2
    err = capsys.readouterr().err
    assert "Graphviz" in err and "apt-get install graphviz" in err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz not installed")
def test_cli_inspect_svg(tmp_path):
    target = tmp_path / "g.svg"
    assert main(["inspect", str(ROOT / "examples" / "box2d.yaml"), "--format", "svg", "-o", str(target)]) == 0
    assert target.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_cli_errors_exit_2_with_short_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninputs: {t: 1}\nintegrate: [s]\noutput: 1\nmlp: {hidden: [4]}\n")
    res = subprocess.run(
        [sys.executable, "-m", "autoint_compiler.cli", str(bad), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2
    assert lines[0] == f"error: {bad}: integrate[0]: unknown input 's'; expected one of: t"
    assert "Traceback" not in res.stderr


def test_cli_rules_lists_every_activation(capsys):
    from autoint_compiler.core.activations import ACTIVATIONS, activation, derivative, sigmoid, x

    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for name in ACTIVATIONS:  # each activation and the derivative the compiler uses, by name
        fn = activation(name)
        assert f"  {name:16s} f = {fn.key}\n  {'':16s} f' = {derivative(fn).key}" in out, name
    # and the printed derivative is the derivative: swish' = σ(x) (1 + x (1 - σ(x))) at a few points
    line = out.split(f"  {'swish':16s} f = ")[1].splitlines()[1]
    d = sp.sympify(line.split("f' = ")[1].split("   (")[0], locals={"sigmoid": sigmoid, "x": x})
    for v in (-2.0, 0.3, 1.7):
        s = 1.0 / (1.0 + math.exp(-v))
        assert abs(float(d.subs(x, v).evalf()) - s * (1 + v * (1 - s))) < 1e-12
