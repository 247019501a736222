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


def test_regions_that_wait_on_each_other_are_not_both_fused():
    """Issue 18 item 7: mixed partials of two branches reading one hidden layer made two regions wait
    on each other through nodes outside both (NetworkXUnfeasible in ``schedule``); now the later one
    of such a cycle stays plain ops and the fused network equals nested torch.func.jvp."""
    import networkx as nx
    from torch import nn

    from autoint_compiler.core.fusion import contract, schedule

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a1, self.a2, self.b2 = nn.Linear(2, 4), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            h = torch.sin(self.a1(x))
            return torch.cos(self.a2(h)) * torch.exp(self.b2(h))

    torch.manual_seed(0)
    module = TwoHeads().double()
    net = ac.compile_module(module, 2, integrate=[0, 1])
    regions = find_regions(net.grad_ir)
    assert regions, "the grad network should still fuse some regions"
    owner = {n: ("r", k) for k, r in enumerate(regions) for n in r.nodes}
    assert nx.is_directed_acyclic_graph(contract(net.grad_ir, owner)[0])
    assert len(schedule(net.grad_ir, regions)) > 0
    x = torch.rand(16, 2, dtype=torch.float64)

    def d(f, col):
        e = torch.zeros(16, 2, dtype=torch.float64)
        e[:, col] = 1.0
        return lambda y: torch.func.jvp(f, (y,), (e,))[1]

    ref = d(d(module, 0), 1)(x).detach()
    assert torch.allclose(net.grad(x).detach(), ref, rtol=1e-10, atol=1e-12)
