"""Leftovers of the earlier adversarial corpus (issue 19), each fixed as a class: spec messages name
the field (huge integers in YAML, pydantic unions without type tags), ``compile`` checks its keyword
arguments up front, ``integrate`` takes Python numbers, and generated code keeps to the project's
line length for wide and deep networks (checked with ruff, and the modules still compute)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ac_inputs, jvp_reference

import autoint_compiler as ac
from autoint_compiler import CompileError, SpecError
from autoint_compiler.compiler import compile_source

BASE = {"name": "n", "inputs": {"t": 1, "y": 2}, "integrate": ["t"], "output": 1,
        "mlp": {"hidden": [4], "activation": "tanh"}}  # fmt: skip


def _yaml(**lines) -> str:
    text = "name: n\ninputs: {t: 1}\nintegrate: [t]\noutput: 1\n"
    return text + "".join(f"{k}: {v}\n" for k, v in lines.items())


# --------------------------------------------------------------------------- spec messages

HUGE = "9" * 400


@pytest.mark.parametrize(
    "text,path",
    [
        (_yaml(mlp="{hidden: [4], activation: {name: sine, w0: %s}}" % HUGE), "mlp.activation.w0"),
        (_yaml(mlp="{hidden: [%s]}" % HUGE), "mlp.hidden[0]"),
        (_yaml(seed=HUGE, mlp="{hidden: [4]}"), "seed"),
        (_yaml(seed="-" + HUGE, mlp="{hidden: [4]}"), "seed"),
        (_yaml(graph="[{name: o, op: linear, in: [t], out: %s}]" % HUGE), "graph[0].out"),
        (_yaml(mlp="{hidden: [4], encoding: {inputs: [t], frequencies: %s}}" % HUGE), "mlp.encoding.frequencies"),
    ],
)
def test_huge_yaml_integer_names_its_field(text, path):
    with pytest.raises(SpecError) as info:
        ac.compile(text)
    assert str(info.value) == f"<string>: {path}: integer of 400 digits is out of range"


BAD_UNIONS = [3.0, "a", [3], None, True, {"t": 3.5}, {"t": "x"}, {"t": [1]}]


@pytest.mark.parametrize("value", BAD_UNIONS, ids=[repr(v) for v in BAD_UNIONS])
def test_union_errors_carry_no_type_tags(value):
    spec = {**BASE, "mlp": {**BASE["mlp"], "encoding": {"inputs": ["t"], "frequencies": value}}}
    with pytest.raises(SpecError) as info:
        ac.compile(spec)
    msg = str(info.value)
    assert "\n" not in msg, msg  # one problem, not one per union member
    for tag in (".int", "dict[", "list[", "str,", "function-", ".bool"):
        assert tag not in msg, msg
    assert msg.startswith("<dict>: mlp.encoding.frequencies")
    if isinstance(value, dict):
        assert msg.startswith("<dict>: mlp.encoding.frequencies.t: expected an integer"), msg
    else:
        assert "expected an integer or a mapping" in msg, msg


# --------------------------------------------------------------------------- compile() arguments


@pytest.mark.parametrize("dtype", ["float64", "torch.float64", torch.float64])
def test_compile_dtype_as_name_or_torch_dtype(dtype):
    net = ac.compile(BASE, dtype=dtype)
    assert all(p.dtype == torch.float64 for p in net.integral.parameters())
    x = torch.rand(5, 3, dtype=torch.float64)
    torch.testing.assert_close(net.grad(x), jvp_reference(net, x))  # the module computes in float64


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"dtype": "float16x"}, "dtype must be one of"),
        ({"dtype": torch.int64}, "dtype must be one of"),
        ({"dtype": 64}, "dtype must be one of"),
        ({"seed": "1"}, "seed must be an integer"),
        ({"seed": True}, "seed must be an integer"),
        ({"seed": 2**64}, "seed must be between"),
        ({"device": "gpu0"}, "device 'gpu0'"),
        ({"device": 1.5}, "device must be"),
        ({"fuse": "yes"}, "fuse must be True or False"),
    ],
)
def test_compile_arguments_are_checked_up_front(kw, match):
    with pytest.raises(CompileError, match=match) as info:
        ac.compile(BASE, **kw)
    assert str(info.value).startswith("compile(): ") and "\n" not in str(info.value)


def test_integrate_takes_python_numbers():
    net = ac.compile({**BASE, "dtype": "float64", "seed": 3})
    ref = net.integrate(torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64))
    for lo, hi in [(0.0, 1.0), (0, 1), ([0.0], [1.0]), ([[0.0]], [[1.0]])]:
        assert torch.equal(net.integrate(lo, hi), ref)
    x = torch.rand(4, 3, dtype=torch.float64)
    rows = net.integrate(0.0, 1.0, x)
    full = net.integrate(torch.zeros(4, 1, dtype=torch.float64), torch.ones(4, 1, dtype=torch.float64), x)
    assert rows.shape == (4, 1) and torch.equal(rows, full)
    two = ac.compile({**BASE, "inputs": {"t": 1, "s": 1}, "integrate": ["t", "s"], "dtype": "float64"})
    box = two.integrate([0.0, -1.0], [1.0, 2.0])
    ref2 = two.integrate(
        torch.tensor([[0.0, -1.0]], dtype=torch.float64), torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    )
    assert torch.equal(box, ref2)
    with pytest.raises(ValueError, match="lower must be a number"):
        net.integrate("zero", 1.0)


# --------------------------------------------------------------------------- line length of generated code

XYZ = ["x", "y", "z"]
CASES = [("swish", XYZ), ("elu", XYZ), ({"formula": "x*tanh(log(1+exp(x)))"}, XYZ), ("requ", {"x": 2, "y": 1})]


def _ruff(path: Path, limit: int):
    exe = Path(sys.executable).with_name("ruff")
    if not exe.exists():
        pytest.skip("ruff is not installed next to the interpreter")
    cmd = [str(exe), "check", "--isolated", "--no-cache", "--select", "E,F,W", "--line-length", str(limit), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("act,integ", CASES, ids=[f"{str(a)[:12]}-{len(i)}" for a, i in CASES])
def test_three_variable_mlp_code_fits_the_line_length(act, integ, tmp_path):
    """A 3-layer, 3-variable MLP (the case that broke it): torch (fused and not) and Triton modules within
    the project's 120 columns; ruff finds nothing else either."""
    spec = {"name": "m3", "inputs": {"x": 1, "y": 1, "z": 1}, "integrate": integ, "output": 1,
            "mlp": {"hidden": [16, 16, 16], "activation": act}}  # fmt: skip
    for backend, fuse, limit in (("torch", True, 120), ("torch", False, 120), ("triton", True, 120)):
        cs = compile_source(spec, backend, fuse=fuse) if backend == "torch" else compile_source(spec, backend)
        path = tmp_path / f"{backend}_{fuse}.py"
        path.write_text(cs.source, encoding="utf-8")
        out = _ruff(path, limit)
        assert out.returncode == 0, f"{backend} fuse={fuse}:\n{out.stdout[-3000:]}"
        assert max(map(len, cs.source.splitlines())) <= limit


@pytest.mark.parametrize("act", ["elu", "requ"])
def test_wrapped_fused_functions_still_compute(act):
    spec = {"name": "m3w", "inputs": {"x": 1, "y": 1, "z": 1}, "integrate": ["x", "y", "z"], "output": 1,
            "dtype": "float64", "seed": 0, "mlp": {"hidden": [16, 16, 16], "activation": act}}  # fmt: skip
    fused = ac.compile(spec)
    plain = ac.compile(spec, fuse=False)
    assert max(map(len, fused.source.splitlines())) <= 120
    x = ac_inputs(fused, 8).requires_grad_(False)
    torch.testing.assert_close(fused.grad(x), plain.grad(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused.grad(x), jvp_reference(fused, x), rtol=1e-8, atol=1e-8)
    # the wrapped backward: parameter gradients of a loss on the grad network agree too
    fused.grad(x).square().sum().backward()
    plain.grad(x).square().sum().backward()
    for p, q in zip(fused.integral.parameters(), plain.integral.parameters()):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10)
