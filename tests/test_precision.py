"""Mixed precision (``precision: fp32 | tf32 | bf16 | fp16``), one row per (backend, precision): the
error of both networks against a float64 truth with the same weights is bounded, parameters,
accumulation and outputs stay float32, training reaches every parameter in float32, and bad values
are clear errors. On the CPU tf32 equals fp32; the Triton interpreter runs fp16 (its tl.dot mishandles
bfloat16, which is refused there with a message; the GPU check covers bf16)."""

from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

import autoint_compiler as ac  # noqa: E402

SPEC = {
    "name": "mixed",
    "inputs": {"t": 1, "s": 1, "y": 2},
    "integrate": ["t", "s"],
    "output": 1,
    "mlp": {"hidden": [32, 32], "activation": "swish", "encoding": {"inputs": ["y"], "frequencies": 2}},
}

#: (backend, precision, bound on max error / max |truth|); measured on this CPU: torch bf16 ~1e-2,
#: fp16 ~1e-3, Triton fp16 ~5e-4 (activations stay float32 there); a broken cast is off by O(1)
ROWS = [
    ("torch", "fp32", 1e-5),
    ("torch", "tf32", 1e-5),
    ("torch", "bf16", 5e-2),
    ("torch", "fp16", 1e-2),
    ("triton", "fp32", 1e-5),
    ("triton", "tf32", 1e-5),
    ("triton", "fp16", 1e-2),
]


def _truth_and_net(backend, precision, **spec):
    if backend == "triton":
        pytest.importorskip("triton", reason="triton is not installed (make setup installs it)")
    net = ac.compile({**SPEC, **spec}, backend=backend, seed=0, precision=precision)
    ref = ac.compile({**SPEC, **spec}, dtype=torch.float64)
    ref.integral.load_state_dict({k: v.double() for k, v in net.integral.state_dict().items()})
    return net, ref


def _err(a, b):
    return ((a.double() - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("backend,precision,bound", ROWS, ids=[f"{b}-{p}" for b, p, _ in ROWS])
def test_error_against_float64_is_bounded(backend, precision, bound):
    net, ref = _truth_and_net(backend, precision)
    assert net.program.precision == precision
    x = torch.rand(48, net.in_features) * 2 - 1
    with torch.no_grad():
        for mine, truth in ((net.integral, ref.integral), (net.grad, ref.grad)):
            y = mine(x)
            assert y.dtype == torch.float32
            assert _err(y, truth(x.double())) <= bound
    loss = (net.grad(x) ** 2).mean()
    loss.backward()
    params = list(net.grad.parameters())
    assert params and all(p.dtype == torch.float32 and p.grad is not None for p in params)
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in params)


def test_reduced_precision_really_rounds():
    """bf16 must differ from fp32 (a precision switch that does nothing would pass the bounds above)."""
    x = torch.rand(48, 4) * 2 - 1
    outs = {}
    for precision in ("fp32", "bf16"):
        net, ref = _truth_and_net("torch", precision)
        with torch.no_grad():
            outs[precision] = _err(net.grad(x), ref.grad(x.double()))
    assert outs["bf16"] > 10 * outs["fp32"]


def test_spec_key_and_keyword_agree_and_hash_ignores_precision():
    a = ac.compile({**SPEC, "precision": "fp16"}, seed=0)
    b = ac.compile(SPEC, seed=0, precision="fp16")
    c = ac.compile(SPEC, seed=0)
    assert a.source == b.source and a.program.precision == "fp16"
    assert a.spec_hash == c.spec_hash  # checkpoints load across precisions, like across dtypes
    assert "PRECISION" not in c.source  # fp32 modules are unchanged


def test_repeated_integration_keeps_the_precision():
    net = ac.compile({**SPEC, "integrate": {"t": 2}}, seed=0, precision="fp16")
    assert net.module.PRECISION == "fp16"
    lower, upper = torch.zeros(4, 1), torch.ones(4, 1)
    x = torch.rand(4, net.in_features)
    assert net.integrate(lower, upper, x).dtype == torch.float32
    lower_order = net.derivative({"t": 1})
    assert sys.modules[type(lower_order).__module__].PRECISION == "fp16"


def test_bad_precisions_are_clear_errors():
    with pytest.raises(ac.CompileError, match="precision must be one of fp32, tf32, bf16, fp16"):
        ac.compile(SPEC, precision="int8")
    with pytest.raises(ac.SpecError, match="precision"):
        ac.compile({**SPEC, "precision": "fp8"})
    with pytest.raises(ac.SpecError, match="needs dtype float32"):
        ac.compile({**SPEC, "dtype": "float64", "precision": "bf16"})


def test_bf16_under_the_triton_interpreter_is_refused_with_a_reason():
    pytest.importorskip("triton", reason="triton is not installed (make setup installs it)")
    net = ac.compile(SPEC, backend="triton", seed=0, precision="bf16")
    with pytest.raises(RuntimeError, match="bfloat16 needs a GPU"):
        net.grad(torch.rand(3, net.in_features))
