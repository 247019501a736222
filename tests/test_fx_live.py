"""The fx frontend reads the module's state live and refuses, by name, what it cannot compile exactly:
replaced buffers and in-place edits are seen; Python attributes compiled in are reported and guarded;
hooks, complex-valued (WIRE) and hash-grid code, dtype mixes and bad arguments are clear CompileErrors;
the module is left exactly as it was; a grad network that is identically zero warns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fx_corpus import AnnealedEncoding, FourierFeatures
from torch import nn

import autoint_compiler as ac
from autoint_compiler.frontends.fx import ZeroGradWarning
from autoint_compiler.frontends.spec import MAX_TOTAL_ORDER


def _x(d=2, n=16):
    return torch.rand(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 - 1


def _mlp(act=None):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), act or nn.Tanh(), nn.Linear(8, 1)).double()


def test_replaced_buffer_and_in_place_edits_are_seen():
    torch.manual_seed(0)
    module = FourierFeatures().double()
    net = ac.compile_module(module, 2, [0])
    x = _x()
    module.B = torch.randn_like(module.B) * 3  # a new tensor object for the buffer
    with torch.no_grad():
        module.mlp[0].weight.mul_(1.5)  # an in-place edit of a parameter
        assert torch.allclose(net.integral(x), module(x), rtol=1e-12, atol=1e-12)
    e = torch.zeros_like(x)
    e[:, 0] = 1
    ref = torch.func.jvp(module, (x,), (e,))[1]
    assert torch.allclose(net.grad(x).detach(), ref, rtol=1e-10, atol=1e-12)
    assert "B_weight" not in dict(net.grad.named_parameters())  # a buffer is read, never trained


def test_lower_order_networks_read_state_live():
    """``net.derivative`` (used by ``net.integrate`` for higher orders) builds networks that follow the module too."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(2, 6)), nn.SiLU(), nn.Linear(6, 1))
    module = module.double()
    net = ac.compile_module(module, 2, {0: 2})
    d1 = net.derivative({"x0": 1})
    with torch.no_grad():
        module[0].parametrizations.weight.original1.mul_(1.7)  # v of g·v/‖v‖: the direction changes
        module[0].parametrizations.weight.original0.add_(0.3)  # g: the norm changes
    x = _x()
    e = torch.zeros_like(x)
    e[:, 0] = 1
    ref = torch.func.jvp(module, (x,), (e,))[1]
    assert torch.allclose(d1(x).detach(), ref, rtol=1e-10, atol=1e-12)
    lower, upper = torch.full((16, 1), -0.5, dtype=torch.float64), torch.full((16, 1), 0.5, dtype=torch.float64)
    xs = x.clone()
    hi, lo = xs.clone(), xs.clone()
    hi[:, 0], lo[:, 0] = 0.5, -0.5
    e_hi = torch.func.jvp(module, (hi,), (e,))[1]
    e_lo = torch.func.jvp(module, (lo,), (e,))[1]
    assert torch.allclose(net.integrate(lower, upper, x).detach(), e_hi - e_lo, rtol=1e-9, atol=1e-11)


def test_python_attributes_are_reported_and_guarded():
    torch.manual_seed(0)
    module = AnnealedEncoding().double()
    net = ac.compile_module(module, 2, [0])
    assert net.report["constants"]["alpha"] == 1.5 and net.report["constants"]["freqs"] == 3
    x = _x()
    net.integral(x)
    module.alpha = 2.5  # annealed after compiling: the compiled networks would silently use 1.5
    with pytest.raises(ac.CompileError, match=r"module attribute alpha was 1\.5 .* now 2\.5"):
        net.integral(x)
    with pytest.raises(ac.CompileError, match="alpha"):
        net.grad(x)
    module.alpha = 1.5
    assert torch.allclose(net.integral(x).detach(), module(x).detach(), rtol=1e-12)


def test_leaf_module_attributes_are_guarded():
    """nn.Softplus(beta) is compiled with its beta: changing it afterwards raises, never silently differs."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(2, 4), nn.Softplus(beta=100), nn.Linear(4, 1)).double()
    net = ac.compile_module(module, 2, [0])
    assert net.report["constants"]["1.beta"] == 100
    module[1].beta = 50
    with pytest.raises(ac.CompileError, match="1.beta was 100"):
        net.grad(_x())


class Aliases(nn.Module):
    """In-place ops after a detach (an alias: it changes too) and after a clone (a copy: it does not)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 4)

    def forward(self, x):
        h = self.a(x)
        same, copy = h.detach(), h.clone()
        skip = h
        h.mul_(3.0)
        F.relu(h, inplace=True)
        return torch.cat([h, same, copy, skip], -1)


def test_in_place_ops_follow_aliases_not_copies():
    torch.manual_seed(0)
    module = Aliases().double()
    net = ac.compile_module(module, 2, [0])
    x = _x()
    with torch.no_grad():
        assert torch.allclose(net.integral(x), module(x), rtol=1e-12)


OMEGA = 3.0  # a module-level constant the module below reads in forward


class ReadsGlobal(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 4)

    def forward(self, x):
        return torch.sin(OMEGA * self.a(x))


def test_numeric_globals_are_recorded_and_guarded():
    global OMEGA
    torch.manual_seed(0)
    module = ReadsGlobal().double()
    net = ac.compile_module(module, 2, [0])
    assert net.report["constants"]["global OMEGA (test_fx_live.py)"] == 3.0
    try:
        OMEGA = 4.0
        with pytest.raises(ac.CompileError, match="global OMEGA"):
            net.integral(_x())
    finally:
        OMEGA = 3.0
    with torch.no_grad():
        assert torch.allclose(net.integral(_x()), module(_x()), rtol=1e-12)


class MakesConstants(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)

    def forward(self, x):
        return self.a(x) * torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)


def test_module_is_left_exactly_as_it_was():
    torch.manual_seed(0)
    module = MakesConstants().double()
    before = dict(vars(module)), {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    net = ac.compile_module(module, 2, [1])
    assert torch.equal(torch.get_rng_state(), rng)  # tracing draws nothing from the user's generator
    assert not any(k.startswith("_tensor_constant") for k in vars(module))
    assert dict(vars(module)).keys() == before[0].keys() and type(module) is MakesConstants
    assert all(torch.equal(v, before[1][k]) for k, v in module.state_dict().items())
    x = _x()
    with torch.no_grad():
        assert torch.allclose(net.integral(x), module(x), rtol=1e-12)


def test_identically_zero_grad_network_warns():
    with pytest.warns(ZeroGradWarning, match="identically zero"):
        net = ac.compile_module(_mlp(nn.ReLU()), 2, [0, 1])
    assert net.report["grad_identically_zero"]


def test_first_order_relu_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroGradWarning)
        ac.compile_module(_mlp(nn.ReLU()), 2, [0])


@pytest.mark.parametrize("where", ["root-forward-hook", "sub-forward-hook", "sub-pre-hook"])
def test_hooks_are_refused_by_name(where):
    module = _mlp()
    target = module if where.startswith("root") else module[1]
    if where.endswith("pre-hook"):
        handle = target.register_forward_pre_hook(lambda m, a: None)
    else:
        handle = target.register_forward_hook(lambda m, a, out: out * 2)
    try:
        with pytest.raises(ac.CompileError, match="hook") as info:
            ac.compile_module(module, 2, [0])
        assert ("Sequential.1" in str(info.value)) == where.startswith("sub")
    finally:
        handle.remove()
    ac.compile_module(module, 2, [0])  # without the hook it compiles


class WireLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 8)
        self.omega, self.scale = 5.0, 3.0

    def forward(self, x):
        lin = self.lin(x)
        return torch.exp(1j * self.omega * lin - (self.scale * lin).abs().square()).real


class ComplexParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 4, dtype=torch.complex64))

    def forward(self, x):
        return (x.to(torch.complex64) @ self.w).real


class HashGrid(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(64, 2)
        self.mlp = nn.Linear(2, 1)

    def forward(self, x):
        idx = torch.floor(x * 16).long()
        h = (idx[:, 0] * 73856093) ^ (idx[:, 1] * 19349663)
        return self.mlp(self.table(h % 64))


@pytest.mark.parametrize(
    "factory,match",
    [
        (WireLike, "complex"),
        (ComplexParam, "complex"),
        (HashGrid, "hash"),
    ],
    ids=["wire-complex-exp", "complex-parameter", "hash-grid"],
)
def test_complex_and_hash_grid_networks_are_clear_refusals(factory, match):
    module = factory()
    with pytest.raises(ac.CompileError, match=match) as info:
        ac.compile_module(module, 2, [0])
    msg = str(info.value)
    assert "\n" not in msg and "_tensor_constant" not in msg


class PlainB(nn.Module):
    def __init__(self):
        super().__init__()
        self.B = torch.randn(4, 2, dtype=torch.float64)  # a plain attribute, not a buffer

    def forward(self, x):
        return torch.sin(x @ self.B.T).sum(-1, keepdim=True)


def test_plain_tensor_attribute_is_read_live():
    """``self.B.T`` on a plain (non-buffer) tensor attribute: recorded as a computation on B, not frozen."""
    torch.manual_seed(0)
    module = PlainB()
    net = ac.compile_module(module, 2, [0])
    x = _x()
    module.B.mul_(2.0)
    with torch.no_grad():
        assert torch.allclose(net.integral(x), module(x), rtol=1e-12)
    module.B = torch.randn(4, 2, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(net.integral(x), module(x), rtol=1e-12)


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2)

    def forward(self, x, scale):
        return self.a(x) * scale


class SliceInplace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 4)

    def forward(self, x):
        h = self.a(x)
        h[:, :2].relu_()
        return h


class EluNan(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 4)

    def forward(self, x):
        return F.elu(self.a(x), float("nan"))


class DivZero(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 4)

    def forward(self, x):
        return self.a(x) / 0.0


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 4)
        self.mode = "noise"  # a string attribute read in forward: recorded like numbers

    def forward(self, x):
        h = self.a(x)
        return h + 0.01 * torch.randn_like(h) if self.mode == "noise" else h


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 4)

    def forward(self, x):
        return self.a(x), {"h": torch.tanh(self.a(x))}


@pytest.mark.parametrize(
    "make,kwargs,match",
    [
        (lambda: Branches().double(), {}, r"forward_kwargs=\{'scale'"),
        (lambda: Branches().double(), {"forward_kwargs": {"scal": 2.0}}, "does not take"),
        (lambda: SliceInplace().double(), {}, "in-place op on a slice"),
        (lambda: EluNan().double(), {}, "alpha=nan"),
        (lambda: DivZero().double(), {}, "division by zero"),
        (lambda: Noisy().double(), {}, r"random numbers drawn in forward \(torch.randn_like\) at .*test_fx_live"),
        (lambda: Pair().double(), {}, r"output=<index> \(0\.\.1\)"),
        (lambda: Pair().double(), {"output": 2}, "not an index"),
        (lambda: _mlp(nn.Dropout(0.5).train()), {}, "dropout in training mode"),
        (lambda: _mlp(), {"dtype": torch.float32}, "module's tensors are torch.float64"),
        (lambda: _mlp(), {"dtype": "float16"}, "dtype must be"),
        (lambda: _mlp(), {"dtype": torch.float16}, "dtype must be"),
        (lambda: _mlp(), {"precision": "bf16"}, "precision 'bf16' needs dtype float32"),
        (lambda: _mlp(), {"precision": "fp8"}, "precision must be one of"),
        (lambda: _mlp(), {"backend": "jax"}, "backend must be"),
    ],
    ids=[
        "missing-forward-arg",
        "unknown-forward-kwarg",
        "inplace-slice",
        "elu-nan",
        "div-zero",
        "random-in-forward",
        "tuple-output",
        "bad-output-index",
        "dropout-train",
        "dtype-mismatch",
        "dtype-float16-str",
        "dtype-float16",
        "precision-bf16-on-float64",
        "precision-unknown",
        "backend",
    ],
)
def test_refusals_are_one_line_compile_errors(make, kwargs, match):
    with pytest.raises(ac.CompileError, match=match) as info:
        ac.compile_module(make(), 2, [0], **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("integrate", [None, 0, "x0", [], {0: 0}, {0: MAX_TOTAL_ORDER + 1}, {0: 2.0}])
def test_bad_integrate_is_a_compile_error(integrate):
    with pytest.raises(ac.CompileError, match="integrate|order"):
        ac.compile_module(_mlp(), 2, integrate)


def test_accepted_arguments():
    module = _mlp()
    assert ac.compile_module(module, 2, [0], dtype="float64", precision=None).program.dtype == "float64"
    assert ac.compile_module(module, 2, (1,), dtype=torch.float64, precision="fp32").integration_columns == [1]


def test_compile_shares_the_dtype_check():
    spec = {"name": "shared", "inputs": {"t": 1}, "integrate": ["t"], "output": 1, "mlp": {"hidden": [4]}}
    with pytest.raises(ac.CompileError, match="dtype must be"):
        ac.compile(spec, dtype="int32")
    assert ac.compile(spec, dtype="float64").integral(torch.zeros(2, 1, dtype=torch.float64)).dtype == torch.float64


def test_data_dependent_control_flow_names_the_line():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(1, 1)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else -self.a(x)

    with pytest.raises(ac.CompileError, match=r"test_fx_live.py, line \d+: return self.a\(x\) if x.sum\(\) > 0"):
        ac.compile_module(Branchy(), 1, [0])


def test_a_float32_module_compiles_at_reduced_precision():
    """precision= reaches the generated module: bf16 rounds (error against the float32 module's own
    output well above float32's, well below O(1)), parameters stay the module's float32 tensors."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    x = torch.rand(32, 2)
    exact = ac.compile_module(module, 2, [0])
    mixed = ac.compile_module(module, 2, [0], precision="bf16")
    assert mixed.program.precision == "bf16" and mixed.module.PRECISION == "bf16"
    with torch.no_grad():
        want, got = exact.grad(x), mixed.grad(x)
    err = ((got - want).abs().max() / want.abs().max()).item()
    assert got.dtype == torch.float32 and 1e-5 < err < 5e-2
    assert all(p.dtype == torch.float32 for p in mixed.grad.parameters())
