"""Fused regions: same values and parameter gradients as the one-op-per-node code, with the eager
kernels and with torch.compile'd kernels (aot_eager here: the plumbing, without inductor's build time)."""

from __future__ import annotations

import pytest
import torch

import autoint_compiler as ac
from autoint_compiler.core.fusion import find_regions

SPECS = {
    "swish-rows": {
        "name": "fz1",
        "inputs": {"t": 1, "y": 2},
        "integrate": ["t"],
        "output": 2,
        "mlp": {"hidden": [8, 8, 8], "activation": "swish"},
    },
    "gelu-softplus-2var": {
        "name": "fz2",
        "inputs": {"a": 1, "b": 1},
        "integrate": ["a", "b"],
        "output": 1,
        "mlp": {"hidden": [8, 8], "activation": ["gelu", "softplus"]},
    },
    "sine-posenc": {
        "name": "fz3",
        "inputs": {"t": 1, "y": 1},
        "integrate": ["t"],
        "output": 1,
        "mlp": {
            "hidden": [8, 8],
            "activation": {"name": "sine", "w0": 3},
            "encoding": {"inputs": ["t"], "frequencies": 2},
        },
    },
}


def _pair(spec):
    fused = ac.compile(spec, dtype=torch.float64, seed=0)
    plain = ac.compile(spec, dtype=torch.float64, seed=0, fuse=False)
    assert "autograd.Function" in fused.source and "autograd.Function" not in plain.source
    return fused, plain


def _grads(net, x, w):
    net.integral.zero_grad(set_to_none=True)
    y = net.grad(x)
    (y * w).sum().backward()
    return y.detach(), {k: p.grad for k, p in net.integral.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("kernels", ["eager", "compiled"])
def test_fused_matches_unfused(name, kernels):
    fused, plain = _pair(SPECS[name])
    assert find_regions(fused.grad_ir), "the spec should produce fusion regions"
    x = torch.randn(33, fused.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(33, fused.out_features, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    if kernels == "compiled":
        fused.compile_pointwise(backend="aot_eager")
    try:
        y1, g1 = _grads(fused, x, w)
    finally:
        fused.module.eager_pointwise()
    y2, g2 = _grads(plain, x, w)
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-12)
    assert g1.keys() == g2.keys() and g1
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-9, atol=1e-11, msg=k)


def test_library_primal_and_no_private_aten_ops_for_swish():
    """A fused region computes swish with torch's library call and its derivatives from the printed
    expression: public torch functions only (no aten *_backward kernel used as a forward tangent)."""
    fused, _ = _pair(SPECS["swish-rows"])
    assert "o0 = F.silu(u0)" in fused.source
    assert "torch.ops." not in fused.source and "_backward(u1" not in fused.source
