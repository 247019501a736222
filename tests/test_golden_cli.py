"""Golden IR text for the bundled examples, and the CLI's contract (files, exit codes, formats)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert text == path.read_text(), f"IR of {name} changed; if intended, regenerate with AUTOINT_UPDATE_GOLDEN=1"


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
    from autoint_compiler.core.activations import ACTIVATIONS

    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for name in ACTIVATIONS:
        assert f"  {name}" in out
    assert "f' = (x*(1 - sigmoid(x)) + 1)*sigmoid(x)" in out or "sigmoid(x)" in out
