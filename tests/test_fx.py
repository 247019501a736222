"""The torch.fx frontend: user-style modules written in plain PyTorch compile to the same
CompiledNetwork; Φ is exactly the module, the grad network equals nested torch.func.jvp of the
module in float64, it trains the module's own tensors, and unsupported code gets a named error
with the user's source line."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autoint_compiler as ac
from autoint_compiler.core import interpret


class NeRFLike(nn.Module):
    """Hand-written positional encoding, a skip connection, relu-free swish trunk."""

    def __init__(self, L=3, W=16):
        super().__init__()
        self.L = L
        d = 3 + 3 * 2 * L
        self.l0, self.l1 = nn.Linear(d, W), nn.Linear(W, W)
        self.l2, self.out = nn.Linear(W + d, W), nn.Linear(W, 2)

    def encode(self, x):
        feats = [x] + [torch.sin(2.0**k * math.pi * x) for k in range(self.L)]
        return torch.cat(feats + [torch.cos(2.0**k * math.pi * x) for k in range(self.L)], -1)

    def forward(self, x):
        e = self.encode(x)
        h = F.silu(self.l0(e))
        h = F.silu(self.l1(h))
        h = F.silu(self.l2(torch.cat([h, e], -1)))
        return self.out(h)


class Siren(nn.Module):
    def __init__(self, w0=3.0):
        super().__init__()
        self.w0 = w0
        self.a, self.b, self.c = nn.Linear(2, 12), nn.Linear(12, 12), nn.Linear(12, 1)

    def forward(self, x):
        h = torch.sin(self.w0 * self.a(x))
        h = torch.sin(self.w0 * self.b(h))
        return self.c(h)


def sequential():
    return nn.Sequential(nn.Linear(2, 10), nn.SiLU(), nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, 1))


class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.p, self.q, self.o = nn.Linear(3, 8), nn.Linear(3, 8), nn.Linear(8, 1)

    def forward(self, x):
        a = F.gelu(self.p(x))
        b = torch.sigmoid(self.q(x)) * 2.0 - 0.5
        return self.o(a * b + (a - b) ** 2)


class CatMidNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.o = nn.Linear(1, 8), nn.Linear(8 + 2, 8), nn.Linear(8, 1)

    def forward(self, x):
        h = F.softplus(self.a(x[:, 0:1]))
        h = torch.cat([h, x[:, 1:3]], dim=1)
        h = F.elu(self.b(h), alpha=0.7)
        return -self.o(h) / 4.0


class TwoColumns(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 10), nn.SiLU(), nn.Linear(10, 10), nn.GELU(), nn.Linear(10, 1))

    def forward(self, x):
        return self.net(x) + x[:, 2:3].exp() * 0.1


#: (name, factory, in_features, integrate columns)
MODULES = [
    ("nerf-skip-posenc", NeRFLike, 3, [0]),
    ("siren", Siren, 2, [1]),
    ("sequential", sequential, 2, [0]),
    ("two-branches", TwoBranches, 3, [2]),
    ("cat-mid-network", CatMidNetwork, 3, [0]),
    ("two-columns", TwoColumns, 3, [0, 2]),
]


def nested_jvp(module, x, cols):
    """∂^k module / ∂x[:, c1] ... ∂x[:, ck] by nested torch.func.jvp (the independent reference)."""

    def along(f, col):
        def g(y):
            e = torch.zeros_like(y)
            e[:, col] = 1.0
            return torch.func.jvp(f, (y,), (e,))[1]

        return g

    f = module
    for c in cols:
        f = along(f, c)
    return f(x)


def _build(factory, seed=0):
    torch.manual_seed(seed)
    return factory().double()


@pytest.mark.parametrize("name,factory,d,cols", MODULES, ids=[m[0] for m in MODULES])
def test_fx_grad_equals_nested_jvp(name, factory, d, cols):
    module = _build(factory)
    net = ac.compile_module(module, d, integrate=cols)
    assert net.in_features == d and net.integration_columns == cols
    x = torch.rand(32, d, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net.integral(x), module(x))  # Φ is exactly the user's module
    ref = nested_jvp(module, x, cols).detach()
    got = net.grad(x).detach()
    scale = ref.abs().max().clamp_min(1e-3)
    assert (got - ref).abs().max() <= 1e-9 * scale, f"{name}: {(got - ref).abs().max()}"
    # and the independent IR interpreter agrees with both generated networks
    params = {k: v.detach().numpy() for k, v in net.integral.state_dict().items()}
    assert abs(interpret.run(net.grad_ir, x.numpy(), params) - got.numpy()).max() <= 1e-9 * float(scale)


@pytest.mark.parametrize("name,factory,d,cols", MODULES[:3], ids=[m[0] for m in MODULES[:3]])
def test_fx_grad_matches_finite_differences(name, factory, d, cols):
    module = _build(factory, seed=1)
    net = ac.compile_module(module, d, integrate=cols)
    x = torch.rand(16, d, dtype=torch.float64) * 2 - 1
    h = 1e-5
    xp, xm = x.clone(), x.clone()
    xp[:, cols[0]] += h
    xm[:, cols[0]] -= h
    with torch.no_grad():
        fd = (module(xp) - module(xm)) / (2 * h)
        assert (net.grad(x) - fd).abs().max() <= 1e-6 * fd.abs().max().clamp_min(1.0)


def test_fx_step_on_grad_changes_the_users_module():
    module = _build(sequential)
    net = ac.compile_module(module, 2, integrate=[0])
    user = dict(module.named_parameters())
    assert all(any(p is q for q in user.values()) for p in net.grad.parameters())
    x = torch.rand(64, 2, dtype=torch.float64)
    before = module(x).detach().clone()
    opt = torch.optim.SGD(net.grad.parameters(), lr=0.1)
    loss = (net.grad(x) - 1.0).pow(2).mean()
    loss.backward()
    opt.step()
    after = module(x).detach()
    assert (after - before).abs().max() > 1e-6  # the user's module changed...
    assert torch.equal(net.integral(x).detach(), after)  # ...and the compiled Φ is still exactly it
    ref = nested_jvp(module, x, [0]).detach()
    assert torch.allclose(net.grad(x).detach(), ref, rtol=1e-10, atol=1e-12)


def test_fx_float32_module_keeps_its_dtype():
    torch.manual_seed(0)
    module = sequential()
    net = ac.compile_module(module, 2, integrate=[1])
    x = torch.rand(8, 2)
    assert net.grad(x).dtype == torch.float32
    assert torch.allclose(net.grad(x), nested_jvp(module, x, [1]), atol=1e-5)


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 4)

    def forward(self, x):
        return torch.sinc(self.a(x)).sum(1, keepdim=True)  # torch.sinc has no row in the table


def test_fx_unsupported_op_names_op_and_source_line():
    with pytest.raises(ac.CompileError) as info:
        ac.compile_module(Unsupported(), 2, integrate=[0])
    msg = str(info.value)
    assert "torch.sinc" in msg and "instead:" in msg
    assert "test_fx.py" in msg and "return torch.sinc(self.a(x))" in msg


@pytest.mark.parametrize("bad,match", [
    ({"module": "not a module", "d": 2, "cols": [0]}, "expected an nn.Module"),
    ({"d": 2, "cols": [5]}, "integrate names column 5"),
    ({"d": 0, "cols": [0]}, "in_features must be a positive integer"),
    ({"d": 2, "cols": []}, "at least one input column"),
])
def test_fx_bad_arguments_are_compile_errors(bad, match):
    module = bad.get("module", sequential())
    with pytest.raises(ac.CompileError, match=match):
        ac.compile_module(module, bad["d"], integrate=bad["cols"])


def test_fx_data_dependent_control_flow_is_a_compile_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(1, 1)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else -self.a(x)

    with pytest.raises(ac.CompileError, match="could not trace Branchy"):
        ac.compile_module(Branchy(), 1, integrate=[0])
