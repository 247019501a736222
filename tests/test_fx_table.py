"""The fx frontend's table of accepted calls, keyword by keyword: every keyword a row accepts is either
handled (the compiled networks equal the module and nested ``torch.func.jvp`` in float64) or refused with a
``CompileError`` naming it. The test fails when a row gains a keyword without a case here."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from fx_corpus import detach_is_identity
from torch import nn

import autoint_compiler as ac
from autoint_compiler.frontends.fx_calls import CALLS, MODULES

OK = "ok"


def _out(fn):
    """``fn(h, out=buffer)``: writing into ``out=`` is refused (the result is what the networks use)."""
    return lambda m, h: fn(h, out=torch.empty(8, 4, dtype=torch.float64)), "out="


def _out_method(name, *extra):
    return lambda m, h: getattr(torch, name)(h, *extra, out=torch.empty(8, 4, dtype=torch.float64)), "out="


#: (row name, keyword) -> (forward body f(module, h) with h [N, 4], OK or a text the CompileError must contain)
CASES = {
    ("torch.sin", "out"): _out(torch.sin),
    ("torch.cos", "out"): _out(torch.cos),
    ("torch.exp", "out"): _out(torch.exp),
    ("torch.log", "out"): _out(torch.log),
    ("torch.tanh", "out"): _out(torch.tanh),
    ("torch.sigmoid", "out"): _out(torch.sigmoid),
    ("torch.abs", "out"): _out(torch.abs),
    ("torch.absolute", "out"): _out(torch.absolute),
    ("F.tanh", "out"): _out(torch.tanh),
    ("F.sigmoid", "out"): _out(torch.sigmoid),
    ("torch.sqrt", "out"): _out(torch.sqrt),
    ("torch.square", "out"): _out(torch.square),
    ("torch.neg", "out"): _out(torch.neg),
    ("torch.mul", "out"): _out_method("mul", 2.0),
    ("torch.pow", "out"): _out_method("pow", 2),
    ("torch.add", "out"): _out_method("add", 1.0),
    ("torch.sub", "out"): _out_method("sub", 1.0),
    ("torch.div", "out"): _out_method("div", 2.0),
    ("torch.clamp", "out"): (lambda m, h: torch.clamp(h, 0.0, 1.0, out=torch.empty(8, 4, dtype=torch.float64)), "out="),
    ("torch.sum", "out"): (lambda m, h: torch.sum(h, -1, True, out=torch.empty(8, 1, dtype=torch.float64)), "out="),
    ("torch.mean", "out"): (lambda m, h: torch.mean(h, -1, True, out=torch.empty(8, 1, dtype=torch.float64)), "out="),
    ("torch.cat", "out"): (lambda m, h: torch.cat([h, h], -1, out=torch.empty(8, 8, dtype=torch.float64)), "out="),
    ("torch.stack", "out"): (lambda m, h: torch.stack([h[:, 0], h[:, 1]], -1, out=torch.empty(8, 2)), "out="),
    ("@", "out"): (lambda m, h: torch.matmul(h, m.M, out=torch.empty(8, 3, dtype=torch.float64)), "out="),
    ("F.relu", "inplace"): (lambda m, h: F.relu(h * 1.0, inplace=True), OK),
    ("F.relu6", "inplace"): (lambda m, h: F.relu6(4 * h, inplace=True), OK),
    ("F.mish", "inplace"): (lambda m, h: F.mish(h * 1.0, inplace=True), OK),
    ("F.leaky_relu", "negative_slope"): (lambda m, h: F.leaky_relu(h, negative_slope=0.3), OK),
    ("F.leaky_relu", "inplace"): (lambda m, h: F.leaky_relu(h * 1.0, 0.2, inplace=True), OK),
    ("F.elu", "alpha"): (lambda m, h: F.elu(h, alpha=0.4), OK),
    ("F.elu", "inplace"): (lambda m, h: F.elu(h * 1.0, inplace=True), OK),
    ("F.selu", "inplace"): (lambda m, h: F.selu(h * 1.0, inplace=True), OK),
    ("F.silu", "inplace"): (lambda m, h: F.silu(h * 1.0, inplace=True), OK),
    ("F.gelu", "approximate"): (lambda m, h: F.gelu(h, approximate="tanh") + F.gelu(2 * h, approximate="none"), OK),
    ("F.celu", "alpha"): (lambda m, h: F.celu(h, alpha=0.5) + torch.celu(h, 2.0), OK),
    ("F.celu", "inplace"): (lambda m, h: F.celu(h * 1.0, 0.7, inplace=True), OK),
    ("F.softplus", "beta"): (lambda m, h: F.softplus(h, beta=3.0), OK),
    ("F.softplus", "threshold"): (lambda m, h: F.softplus(h, beta=2.0, threshold=1.0), OK),
    ("F.hardtanh", "min_val"): (lambda m, h: F.hardtanh(h, min_val=-0.3), OK),
    ("F.hardtanh", "max_val"): (lambda m, h: F.hardtanh(h, max_val=0.4), OK),
    ("F.hardtanh", "inplace"): (lambda m, h: F.hardtanh(h * 1.0, inplace=True), OK),
    ("torch.clamp", "min"): (lambda m, h: torch.clamp(h, min=-0.2), OK),
    ("torch.clamp", "max"): (lambda m, h: h.clamp(max=0.3), OK),
    ("Tensor.clamp_", "min"): (lambda m, h: (h * 1.0).clamp_(min=-0.1), OK),
    ("Tensor.clamp_", "max"): (lambda m, h: (h * 1.0).clamp_(max=0.2), OK),
    ("F.dropout", "p"): (lambda m, h: F.dropout(h, p=0.3, training=False), OK),
    ("F.dropout", "training"): (lambda m, h: F.dropout(h, p=0.3, training=True), "training"),
    ("F.dropout", "inplace"): (lambda m, h: F.dropout(h * 1.0, 0.5, False, inplace=True), OK),
    ("torch.add", "alpha"): (lambda m, h: torch.add(h, h.sin(), alpha=3), OK),
    ("Tensor.add_", "alpha"): (lambda m, h: (h * 1.0).add_(h.cos(), alpha=-2), OK),
    ("torch.sub", "alpha"): (lambda m, h: h.sub(h.sin(), alpha=0.5), OK),
    ("Tensor.sub_", "alpha"): (lambda m, h: (h * 1.0).sub_(h.sin(), alpha=4), OK),
    ("torch.rsub", "alpha"): (lambda m, h: torch.rsub(h, h.tanh(), alpha=2), OK),
    ("torch.div", "rounding_mode"): (lambda m, h: torch.div(h, 2.0, rounding_mode="floor"), "rounding_mode"),
    ("Tensor.div_", "rounding_mode"): (lambda m, h: (h * 1.0).div_(2.0, rounding_mode="trunc"), "rounding_mode"),
    ("F.linear", "bias"): (lambda m, h: F.linear(h, m.W, bias=m.b), OK),
    ("torch.cat", "dim"): (lambda m, h: torch.cat([h, h], dim=0), "dim=0"),
    ("torch.stack", "dim"): (lambda m, h: torch.stack(h.unbind(-1), dim=-1), OK),
    ("torch.split", "dim"): (lambda m, h: torch.split(h, 2, dim=0)[0], "dim=0"),
    ("torch.chunk", "dim"): (lambda m, h: h.chunk(2, dim=-1)[1], OK),
    ("torch.unbind", "dim"): (lambda m, h: torch.unbind(h, dim=0)[0], "dim=0"),
    ("Tensor.clone", "memory_format"): (lambda m, h: h.clone(memory_format=torch.contiguous_format), OK),
    ("Tensor.requires_grad_", "requires_grad"): (lambda m, h: h.detach().requires_grad_(requires_grad=False), OK),
    ("Tensor.contiguous", "memory_format"): (lambda m, h: h.contiguous(memory_format=torch.contiguous_format), OK),
    ("Tensor.float", "memory_format"): (lambda m, h: h.float(memory_format=torch.preserve_format), "float32"),
    ("Tensor.double", "memory_format"): (lambda m, h: h.double(memory_format=torch.preserve_format), OK),
    ("torch.flatten", "start_dim"): (lambda m, h: h.flatten(start_dim=1), OK),
    ("torch.flatten", "end_dim"): (lambda m, h: torch.flatten(h, 0, end_dim=-1), "start_dim=0"),
    ("Tensor.squeeze", "dim"): (lambda m, h: h[:, :1].squeeze(dim=-1)[:, None] * h, OK),
    ("torch.sum", "dim"): (lambda m, h: h.sum(dim=-1, keepdim=True), OK),
    ("torch.sum", "keepdim"): (lambda m, h: h.sum(-1, keepdim=False)[:, None], OK),
    ("torch.sum", "dtype"): (lambda m, h: h.sum(-1, dtype=torch.float32), "dtype"),
    ("torch.mean", "dim"): (lambda m, h: h.mean(dim=1, keepdim=True), OK),
    ("torch.mean", "keepdim"): (lambda m, h: h.mean(-1, keepdim=False).unsqueeze(-1), OK),
    ("torch.mean", "dtype"): (lambda m, h: h.mean(-1, dtype=torch.float64), "dtype"),
    ("Tensor.size", "dim"): (lambda m, h: h.view(-1, h.size(dim=-1)), OK),
    ("torch.norm", "p"): (lambda m, h: h.norm(p=1, dim=-1, keepdim=True), "norm(p=1"),
    ("torch.norm", "dim"): (lambda m, h: h.norm(dim=-1, keepdim=True), OK),
    ("torch.norm", "keepdim"): (lambda m, h: torch.norm(h, dim=1, keepdim=False)[:, None], OK),
    ("torch.norm", "dtype"): (lambda m, h: torch.norm(h, dim=-1, dtype=torch.float64), "dtype"),
    ("torch.norm", "out"): (lambda m, h: torch.norm(h, dim=-1, out=torch.empty(8, dtype=torch.float64)), "out="),
    ("F.normalize", "p"): (lambda m, h: F.normalize(h, p=1.0, dim=-1), "norm(p=1"),
    ("F.normalize", "dim"): (lambda m, h: F.normalize(h, dim=-1), OK),
    ("F.normalize", "eps"): (lambda m, h: F.normalize(h, dim=1, eps=1e-3), OK),
    ("F.normalize", "out"): (lambda m, h: F.normalize(h, dim=1, out=torch.empty(8, 4, dtype=torch.float64)), "out="),
    ("torch.tan", "out"): _out(torch.tan),
    ("torch.atan", "out"): _out(torch.atan),
    ("torch.sinh", "out"): _out(torch.sinh),
    ("torch.cosh", "out"): _out(torch.cosh),
    ("torch.erf", "out"): _out(torch.erf),
    ("torch.special.erf", "out"): _out(torch.special.erf),
    ("torch.rsqrt", "out"): _out(torch.rsqrt),
    ("torch.reciprocal", "out"): _out(torch.reciprocal),
    ("torch.expm1", "out"): _out(torch.expm1),
    ("torch.log1p", "out"): _out(torch.log1p),
    ("torch.exp2", "out"): _out(torch.exp2),
    ("torch.log2", "out"): _out(torch.log2),
    ("torch.log10", "out"): _out(torch.log10),
    ("F.layer_norm", "weight"): (lambda m, h: F.layer_norm(h, (4,), weight=m.M[:, 0]), OK),
    ("F.layer_norm", "bias"): (lambda m, h: F.layer_norm(h, [4], m.M[:, 1], bias=m.M[:, 2]), OK),
    ("F.layer_norm", "eps"): (lambda m, h: F.layer_norm(h, (4,), eps=0.5), OK),
    ("F.hardsigmoid", "inplace"): (lambda m, h: F.hardsigmoid(4 * h, inplace=True), OK),
    ("F.hardswish", "inplace"): (lambda m, h: F.hardswish(4 * h, inplace=True), OK),
    ("torch.special.expit", "out"): _out(torch.special.expit),
    ("torch.addcmul", "value"): (lambda m, h: torch.addcmul(h, h, h.sin(), value=-0.7), OK),
    ("torch.addcmul", "out"): (lambda m, h: torch.addcmul(h, h, h, out=torch.empty(8, 4, dtype=torch.float64)), "out="),
    ("torch.addmm", "beta"): (lambda m, h: torch.addmm(m.b, h, m.W.t(), beta=0.5), OK),
    ("torch.addmm", "alpha"): (lambda m, h: m.b.addmm(h, m.M, alpha=2.0)[:, :3] + torch.addmm(m.b, h, m.W.t()), OK),
    ("torch.addmm", "out"): (lambda m, h: torch.addmm(m.b, h, m.M, out=torch.empty(8, 3, dtype=torch.float64)), "out="),
    ("torch.lerp", "out"): (
        lambda m, h: torch.lerp(h, h.sin(), 0.3, out=torch.empty(8, 4, dtype=torch.float64)),
        "out=",
    ),
    ("torch.linalg.vector_norm", "ord"): (lambda m, h: torch.linalg.vector_norm(h, ord=1, dim=-1), "vector_norm(ord=1"),
    ("torch.linalg.vector_norm", "dim"): (lambda m, h: h * torch.linalg.vector_norm(h, dim=-1, keepdim=True), OK),
    ("torch.linalg.vector_norm", "keepdim"): (
        lambda m, h: torch.linalg.vector_norm(h, 2, -1, keepdim=False)[:, None],
        OK,
    ),
    ("torch.linalg.vector_norm", "dtype"): (
        lambda m, h: torch.linalg.vector_norm(h, dim=-1, dtype=torch.float64),
        "dtype",
    ),
    ("torch.linalg.vector_norm", "out"): (
        lambda m, h: torch.linalg.vector_norm(h, dim=-1, out=torch.empty(8, dtype=torch.float64)),
        "out=",
    ),
    ("torch.linalg.norm", "ord"): (lambda m, h: torch.linalg.norm(h, ord=1, dim=-1), "linalg.norm(ord=1"),
    ("torch.linalg.norm", "dim"): (lambda m, h: h - torch.linalg.norm(h, dim=-1, keepdim=True), OK),
    ("torch.linalg.norm", "keepdim"): (lambda m, h: torch.linalg.norm(h, None, -1, keepdim=False)[:, None], OK),
    ("torch.linalg.norm", "dtype"): (lambda m, h: torch.linalg.norm(h, dim=-1, dtype=torch.float64), "dtype"),
    ("torch.linalg.norm", "out"): (
        lambda m, h: torch.linalg.norm(h, dim=-1, out=torch.empty(8, dtype=torch.float64)),
        "out=",
    ),
    ("F.rms_norm", "weight"): (lambda m, h: F.rms_norm(h, (4,), weight=m.M[:, 0]), OK),
    ("F.rms_norm", "eps"): (lambda m, h: F.rms_norm(h, [4], m.M[:, 1], eps=0.3) + F.rms_norm(h, (4,)), OK),
}

#: the new pointwise rows on arguments inside their domains (exact against the module and nested jvp)
POINTWISE = {
    "tan": lambda m, h: torch.tan(0.4 * h),
    "atan": lambda m, h: h.arctan() + torch.atan(h * 2),
    "sinh-cosh": lambda m, h: h.sinh() * torch.cosh(h),
    "erf": lambda m, h: torch.erf(h) + torch.special.erf(2 * h),
    "rsqrt-reciprocal": lambda m, h: (h * h + 1).rsqrt() + torch.reciprocal(h + 3),
    "expm1-log1p": lambda m, h: h.expm1() + torch.log1p(h + 2),
    "exp2-log2-log10": lambda m, h: torch.exp2(h) + (h + 3).log2() + torch.log10(h + 3),
    "expit-tanhshrink": lambda m, h: torch.special.expit(h) + F.tanhshrink(2 * h),
    "hardswish-hardsigmoid": lambda m, h: F.hardswish(4 * h) + F.hardsigmoid(5 * h),
    "torch.rms_norm": lambda m, h: torch.rms_norm(h, (4,), m.M[:, 0], 1e-3),
    "prelu-one-slope": lambda m, h: F.prelu(h, m.M[:1, 0]) + nn.functional.prelu(2 * h, m.M[:, 1]),
    "lerp-tensor-weight": lambda m, h: torch.lerp(h, h.cos(), torch.sigmoid(h)) + h.lerp(h.sin(), 0.25),
}


def _batch_norm(**kw):
    bn = nn.BatchNorm1d(4, **kw)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.3, -0.5, 1.0, 0.0]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.5, 0.8]))
        if bn.affine:
            bn.weight.copy_(torch.tensor([1.5, 0.7, -1.0, 2.0]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    return bn.eval()


def _prelu(per_feature: bool = True):
    p = nn.PReLU(4 if per_feature else 1)
    with torch.no_grad():
        p.weight.copy_(torch.tensor([0.1, -0.3, 0.5, 0.25])[: p.weight.numel()])
    return p


def _layer_norm(cls=nn.LayerNorm, **kw):
    ln = cls(4, **kw)
    with torch.no_grad():
        for p in ln.parameters():
            p.uniform_(0.5, 1.5)
    return ln


MODULE_CASES = {
    (nn.LayerNorm, "normalized_shape"): (_layer_norm(), OK),
    (nn.LayerNorm, "eps"): (_layer_norm(eps=0.3), OK),
    (nn.LayerNorm, "elementwise_affine"): (_layer_norm(elementwise_affine=False), OK),
    (nn.LayerNorm, "weight"): (_layer_norm(), OK),
    (nn.LayerNorm, "bias"): (_layer_norm(bias=False), OK),
    (nn.Hardsigmoid, "inplace"): (nn.Hardsigmoid(inplace=True), OK),
    (nn.Hardswish, "inplace"): (nn.Hardswish(inplace=True), OK),
    (nn.RMSNorm, "normalized_shape"): (_layer_norm(cls=nn.RMSNorm), OK),
    (nn.RMSNorm, "eps"): (_layer_norm(cls=nn.RMSNorm, eps=0.2), OK),
    (nn.RMSNorm, "elementwise_affine"): (_layer_norm(cls=nn.RMSNorm, elementwise_affine=False), OK),
    (nn.RMSNorm, "weight"): (_layer_norm(cls=nn.RMSNorm), OK),
    (nn.BatchNorm1d, "num_features"): (nn.BatchNorm1d(3).eval(), "of 3 features on 4 features"),
    (nn.BatchNorm1d, "eps"): (_batch_norm(eps=0.25), OK),
    (nn.BatchNorm1d, "affine"): (_batch_norm(affine=False), OK),
    (nn.BatchNorm1d, "track_running_stats"): (nn.BatchNorm1d(4, track_running_stats=False).eval(), "batch statistics"),
    (nn.BatchNorm1d, "training"): (_batch_norm().train(), "batch statistics"),
    (nn.BatchNorm1d, "running_mean"): (_batch_norm(), OK),
    (nn.BatchNorm1d, "running_var"): (_batch_norm(), OK),
    (nn.BatchNorm1d, "weight"): (_batch_norm(), OK),
    (nn.BatchNorm1d, "bias"): (_batch_norm(), OK),
    (nn.ReLU, "inplace"): (nn.ReLU(inplace=True), OK),
    (nn.LeakyReLU, "negative_slope"): (nn.LeakyReLU(0.25), OK),
    (nn.LeakyReLU, "inplace"): (nn.LeakyReLU(inplace=True), OK),
    (nn.ELU, "alpha"): (nn.ELU(alpha=0.3), OK),
    (nn.ELU, "inplace"): (nn.ELU(inplace=True), OK),
    (nn.SELU, "inplace"): (nn.SELU(inplace=True), OK),
    (nn.SiLU, "inplace"): (nn.SiLU(inplace=True), OK),
    (nn.GELU, "approximate"): (nn.GELU(approximate="tanh"), OK),
    (nn.PReLU, "weight"): (_prelu(), OK),
    (nn.CELU, "alpha"): (nn.CELU(alpha=0.6), OK),
    (nn.CELU, "inplace"): (nn.CELU(inplace=True), OK),
    (nn.Softplus, "beta"): (nn.Softplus(beta=100), OK),
    (nn.Softplus, "threshold"): (nn.Softplus(beta=2, threshold=0.5), OK),
    (nn.Hardtanh, "min_val"): (nn.Hardtanh(min_val=-0.2), OK),
    (nn.Hardtanh, "max_val"): (nn.Hardtanh(max_val=0.1), OK),
    (nn.Hardtanh, "inplace"): (nn.Hardtanh(inplace=True), OK),
    (nn.ReLU6, "inplace"): (nn.ReLU6(inplace=True), OK),
    (nn.Mish, "inplace"): (nn.Mish(inplace=True), OK),
    (nn.Dropout, "p"): (nn.Dropout(0.4).eval(), OK),
    (nn.Dropout, "training"): (nn.Dropout(0.4).train(), "training"),
    (nn.Dropout, "inplace"): (nn.Dropout(0.4, inplace=True).eval(), OK),
    (nn.Flatten, "start_dim"): (nn.Flatten(start_dim=1), OK),
    (nn.Flatten, "end_dim"): (nn.Flatten(0, end_dim=-1), "start_dim=0"),
    (nn.Linear, "weight"): (nn.Linear(4, 3), OK),
    (nn.Linear, "bias"): (nn.Linear(4, 3, bias=False), OK),
}


class Body(nn.Module):
    """h = tanh(lin(x)) with pre-activations spread over the kinks; then the case's body; then a sum."""

    def __init__(self, body, inner=None):
        super().__init__()
        self.lin = nn.Linear(2, 4)
        self.W, self.b = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(3))
        self.M = nn.Parameter(torch.randn(4, 3))
        self.inner = inner
        self.__dict__["body"] = body

    def forward(self, x):
        h = torch.tanh(self.lin(x)) + 1.5 * x[:, :1] - 0.2
        out = self.inner(h) if self.inner is not None else self.body(self, h)
        return out.sum(-1, keepdim=True)


def _nested_jvp(f, x, col):
    e = torch.zeros_like(x)
    e[:, col] = 1.0
    return torch.func.jvp(f, (x,), (e,))[1]


def _check(module, expect):
    torch.manual_seed(0)
    module = module.double()
    x = torch.rand(8, 2, dtype=torch.float64) * 2 - 1
    if expect != OK:
        with pytest.raises(ac.CompileError, match=expect.replace("(", r"\(")) as info:
            ac.compile_module(module, 2, [0])
        assert "test_fx_table.py" in str(info.value) or "instead" in str(info.value)
        return
    net = ac.compile_module(module, 2, [0])
    with torch.no_grad():
        ref_phi = module(x)
    assert torch.allclose(net.integral(x).detach(), ref_phi, rtol=1e-12, atol=1e-12)
    with detach_is_identity(), documented_activations():
        # (functorch refuses requires_grad_ inside jvp; as a function it is the identity)
        ref = _nested_jvp(module, x, 0).detach()
    assert torch.allclose(net.grad(x).detach(), ref, rtol=1e-9, atol=1e-11)


@contextlib.contextmanager
def documented_activations():
    """torch's float64 derivatives of hardsigmoid / hardswish and of celu with an alpha that float32 does
    not hold exactly are float32-accurate (1.7e-8 off the exact 1/6; 4e-8 off exp(x/0.6), against a hand
    derivative): the oracle uses their documented definitions, whose torch derivatives are exact."""
    original = F.hardsigmoid, F.hardswish, F.celu

    def hardsigmoid(x, inplace=False):
        return torch.clamp(x / 6 + 0.5, 0.0, 1.0)

    def celu(x, alpha=1.0, inplace=False):
        return torch.clamp(x, min=0) + torch.clamp(alpha * (torch.exp(x / alpha) - 1), max=0)

    F.hardsigmoid, F.hardswish, F.celu = hardsigmoid, lambda x, inplace=False: x * hardsigmoid(x), celu
    try:
        yield
    finally:
        F.hardsigmoid, F.hardswish, F.celu = original


@pytest.mark.parametrize("key", sorted(CASES), ids=[f"{a}-{b}" for a, b in sorted(CASES)])
def test_call_keyword_is_handled_or_refused_by_name(key):
    body, expect = CASES[key]
    _check(Body(body), expect)


@pytest.mark.parametrize("key", list(MODULE_CASES), ids=[f"{t.__name__}-{a}" for t, a in MODULE_CASES])
def test_module_attribute_is_handled_or_refused_by_name(key):
    mod, expect = MODULE_CASES[key]
    _check(Body(None, inner=mod), expect)


@pytest.mark.parametrize("kind", [t for t, row in MODULES.items() if not row.attributes], ids=lambda t: t.__name__)
def test_module_without_attributes_is_exact(kind):
    _check(Body(None, inner=kind()), OK)


@pytest.mark.parametrize("name", list(POINTWISE))
def test_formula_rows_are_exact(name):
    _check(Body(POINTWISE[name]), OK)


def test_norm_layers_read_their_state_live():
    """LayerNorm's weight and BatchNorm's running statistics are read on every call, and a changed eps or
    mode after compile_module is an error naming the attribute (not a silent mismatch)."""
    x = torch.rand(8, 2, dtype=torch.float64) * 2 - 1
    for inner, tensor, attr, value in (
        (_layer_norm(), "weight", "eps", 0.5),
        (_layer_norm(cls=nn.RMSNorm), "weight", "eps", 0.5),  # None at compile time: guarded too
        (_batch_norm(), "running_var", "eps", 0.5),
        (_batch_norm(), "running_mean", "training", True),
    ):
        module = Body(None, inner=inner).double()
        net = ac.compile_module(module, 2, [0])
        with torch.no_grad():
            getattr(inner, tensor).mul_(1.7)
        assert torch.allclose(net.integral(x), module(x), rtol=1e-12, atol=1e-12)
        setattr(inner, attr, value)
        with pytest.raises(ac.CompileError, match=f"{attr} was"):
            net.integral(x)


def test_every_keyword_of_the_table_has_a_case():
    rows = {(call.name, kw) for call in CALLS.values() for kw in call.keywords}
    assert rows - set(CASES) == set(), "add a case for each new keyword of fx_calls.CALLS"
    attrs = {(t, a) for t, row in MODULES.items() for a in row.attributes}
    assert attrs - set(MODULE_CASES) == set(), "add a case for each module attribute of fx_calls.MODULES"


@pytest.mark.parametrize(
    "body",
    [
        lambda m, h: F.softsign(h) + F.logsigmoid(h),
        lambda m, h: h[:, :1].expand(-1, 4) * h + h[:, 1:2].expand_as(h) + h[:, 2:3].expand(h.shape[0], 4),
        lambda m, h: torch.sin(input=h),
        lambda m, h: torch.cat(tensors=[h, h.cos()], dim=-1),
        lambda m, h: torch.add(input=h, other=h.exp(), alpha=0.5),
        lambda m, h: F.linear(input=h, weight=m.W, bias=m.b),
    ],
    ids=[
        "softsign-logsigmoid",
        "expand",
        "sin(input=)",
        "cat(tensors=)",
        "add(input=, other=)",
        "linear(input=, weight=)",
    ],
)
def test_keyword_only_calls_bind_like_torch(body):
    _check(Body(body), OK)


def test_unknown_keyword_is_named():
    with pytest.raises(ac.CompileError, match="foo"):
        ac.compile_module(Body(lambda m, h: torch.sin(h, foo=1)).double(), 2, [0])


@pytest.mark.parametrize(
    "body,match",
    [
        (lambda m, h: F.layer_norm(h, (4,), h), "layer_norm with a weight computed from x"),
        (lambda m, h: F.layer_norm(h, (4,), m.b), r"layer_norm with a weight of shape \(3,\)"),
        (lambda m, h: F.rms_norm(h, (4,), eps=-1.0), "rms_norm with eps=-1.0"),
        (lambda m, h: F.layer_norm(h, (2, 2)), r"normalized_shape=\(2, 2\)"),
        (lambda m, h: torch.lerp(h, h.sin(), float("nan")), "weight=nan"),
        (lambda m, h: F.celu(h, 0.0), "celu with alpha=0"),
        (lambda m, h: F.prelu(h, h[:, :1]), "prelu with a slope computed from x"),
    ],
    ids=["ln-weight-from-x", "ln-weight-shape", "rms-eps", "ln-2d-shape", "lerp-nan", "celu-alpha-0", "prelu-x"],
)
def test_malformed_uses_of_the_new_rows_are_refused_by_name(body, match):
    """Inputs met while probing the rows: each is a one-line CompileError naming the call, never a module
    that compiles where torch itself would fail."""
    with pytest.raises(ac.CompileError, match=match) as info:
        ac.compile_module(Body(body).double(), 2, [0])
    assert "\n" not in str(info.value) and "test_fx_table.py" in str(info.value)
