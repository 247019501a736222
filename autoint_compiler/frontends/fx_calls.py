"""The table of calls the torch.fx frontend accepts: one row per torch function, Tensor method and leaf
module, each with the signature it accepts (every keyword is handled by the rule or refused by name).

A rule receives the lowering ``L`` (``fx_lower.Lowering``), the fx node and the call's arguments bound to
its own signature, exactly as torch would bind them (``torch.sin(input=x)`` works, an unknown keyword is a
``CompileError`` naming it). Values are ``Ref`` (an IR node: a tensor [N, w] of x), ``Col`` (a column
[N] of x, from ``unbind``), ``State`` (a module tensor, read live), Python numbers and containers.

``KNOWN_REFUSALS`` names calls that are refused on purpose, with what to write instead.
"""

from __future__ import annotations

import builtins
import inspect
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core import activations as A
from . import fx_state as S
from .fx_state import State
from .fx_trace import EXAMPLE_BATCH


class Ref(int):
    """An IR node id: a tensor [N, width] computed from x (distinct from a Python number)."""


class Col(Ref):
    """A column [N] of a tensor computed from x (``unbind``, ``x[:, 0]``): an IR node of width 1."""


class Grid(Ref):
    """A tensor [N, a, b] computed from x (``x[..., None, :] * freqs[:, None]``, positional encodings of
    mip-NeRF / nerfstudio): an IR node of width a·b holding it row-major, so ``reshape(N, -1)`` is free."""

    dims: tuple[int, int]

    @staticmethod
    def make(nid: int, a: int, b: int) -> "Grid":
        g = Grid(nid)
        g.dims = (a, b)
        return g


def like(v, nid: int):
    """``nid`` as the same kind of value as ``v`` (a column stays a column, a grid keeps its shape)."""
    if isinstance(v, Grid):
        return Grid.make(nid, *v.dims)
    return Col(nid) if isinstance(v, Col) else Ref(nid)


class Batch:
    """The batch size N in ``x.shape[0]``: only usable where it means 'every row' (``view(N, -1)``)."""

    def __repr__(self) -> str:
        return "N"


BATCH = Batch()


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, (Ref, bool))


@dataclass(frozen=True)
class Call:
    name: str  # as the user writes it: torch.add, Tensor.clamp, nn.Softplus
    rule: Callable
    inplace: bool = False  # the call writes its first argument (relu_, add_, +=, inplace=True)

    @property
    def keywords(self) -> tuple[str, ...]:
        """The keywords this row accepts, besides its tensor inputs (each handled or refused by value)."""
        sig = inspect.signature(self.rule)
        return tuple(p.name for p in list(sig.parameters.values())[2:] if p.default is not inspect.Parameter.empty)


# ---------------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------------


def _no_out(L, node, out):
    if out is not None:
        L.refuse(node, "the out= keyword", "assign the result instead of out=")


def _pw(fname: str, **params):
    def rule(L, node, input, *, out=None):
        _no_out(L, node, out)
        return L.pointwise(node, input, A.activation(fname, **params))

    return rule


def _relu(L, node, input, inplace=False):
    return L.pointwise(node, input, A.activation("relu"))


def _leaky_relu(L, node, input, negative_slope=0.01, inplace=False):
    s = L.finite(node, negative_slope, "negative_slope")
    return L.pointwise(node, input, A.activation("leaky_relu", negative_slope=s))


def _elu(L, node, input, alpha=1.0, inplace=False):
    return L.pointwise(node, input, A.activation("elu", alpha=L.finite(node, alpha, "alpha")))


def _selu(L, node, input, inplace=False):
    return L.pointwise(node, input, A.activation("selu"))


def _silu(L, node, input, inplace=False):
    return L.pointwise(node, input, A.activation("swish"))


#: torch's tanh approximation of GELU, as its documentation writes it (sqrt(2/pi) to double precision)
_GELU_TANH = "0.5*x*(1 + tanh(0.7978845608028654*(x + 0.044715*x**3)))"


def _gelu(L, node, input, approximate="none"):
    if approximate == "tanh":
        return L.pointwise(node, input, A.formula(_GELU_TANH))
    if approximate != "none":
        L.refuse(node, f"gelu(approximate={approximate!r})", "approximate='none' or 'tanh'")
    return L.pointwise(node, input, A.activation("gelu"))


def _prelu(L, node, input, weight):
    """relu(x) − a·relu(−x), ``a`` (one slope, or one per feature) read live."""
    if not isinstance(weight, State):
        L.refuse(node, "prelu with a slope computed from x", "a slope that is a parameter of the module")
    relu = A.activation("relu")
    neg = L.pointwise(node, L.arith(node, "mul", input, -1.0), relu)
    return L.arith(node, "sub", L.pointwise(node, input, relu), L.arith(node, "mul", neg, weight))


def _celu(L, node, input, alpha=1.0, inplace=False):
    """alpha · elu(x / alpha)."""
    alpha = L.finite(node, alpha, "alpha")
    if alpha == 0:
        L.refuse(node, "celu with alpha=0", "alpha != 0 (torch divides by it)")
    return L.arith(node, "mul", _elu(L, node, L.arith(node, "mul", input, 1.0 / alpha)), alpha)


def _softplus(L, node, input, beta=1.0, threshold=20.0):
    beta = L.finite(node, beta, "beta")
    threshold = L.finite(node, threshold, "threshold")
    if beta <= 0:
        L.refuse(node, f"softplus with beta={beta}", "use beta > 0")
    return L.pointwise(node, input, A.activation("softplus_beta", beta=beta, threshold=threshold))


def _clamp(L, node, input, min=None, max=None, *, out=None):  # noqa: A002 - torch's own names
    _no_out(L, node, out)
    for v, what in ((min, "min"), (max, "max")):
        if v is not None and not is_number(v):
            L.refuse(node, f"clamp with a tensor {what}=", "clamp to a number, or write torch.maximum as a formula")
    lo = None if min is None else L.finite(node, min, "min")
    hi = None if max is None else L.finite(node, max, "max")
    if lo is None and hi is None:
        L.refuse(node, "clamp without min or max", "pass min= and/or max=")
    if lo is not None and hi is not None:
        if not lo < hi:
            L.refuse(node, f"clamp(min={lo}, max={hi})", "use min < max")
        return L.pointwise(node, input, A.activation("clamp", min=lo, max=hi))
    relu = A.activation("relu")
    if hi is None:  # max(x, lo) = relu(x - lo) + lo
        return L.arith(node, "add", L.pointwise(node, L.arith(node, "sub", input, lo), relu), lo)
    return L.arith(node, "sub", hi, L.pointwise(node, L.arith(node, "sub", hi, input), relu))  # hi - relu(hi - x)


def _clamp_min(L, node, input, min):  # noqa: A002
    return _clamp(L, node, input, min=min)


def _clamp_max(L, node, input, max):  # noqa: A002
    return _clamp(L, node, input, max=max)


def _hardtanh(L, node, input, min_val=-1.0, max_val=1.0, inplace=False):
    return _clamp(L, node, input, min_val, max_val)


def _formula(text: str):
    """Activations torch has and the table writes as a formula of x (parsed, stabilized: ``formula.py``)."""

    def rule(L, node, input, inplace=False):
        return L.pointwise(node, input, A.formula(text))

    return rule


def _pwf(text: str):
    """A torch function of one tensor (with ``out=``) that the table writes as a formula of x."""

    def rule(L, node, input, *, out=None):
        _no_out(L, node, out)
        return L.pointwise(node, input, A.formula(text))

    return rule


def _feature_norm(L, node, what: str, input, normalized_shape, weight, bias, eps, centre: bool):
    """(x − mean) / sqrt(var + eps) (``centre``: layer norm; else x / sqrt(mean(x²) + eps), RMS norm) over
    the features, · weight + bias: a sum, a scale and a pointwise 1/sqrt in the IR; weight and bias are
    read live."""
    if isinstance(input, (Col, Grid)) or not isinstance(input, Ref):
        L.refuse(node, f"{what} of a {type(input).__name__}", f"{what} of a tensor [N, features] of x")
    a = L.ref(node, input)
    w = L.g.width(a)
    shape = tuple(normalized_shape) if isinstance(normalized_shape, (list, tuple, torch.Size)) else (normalized_shape,)
    if shape != (w,):
        L.refuse(node, f"{what} over normalized_shape={shape}", f"normalise the {w} features: ({w},)")
    eps = L.finite(node, eps, "eps")
    if eps < 0:
        L.refuse(node, f"{what} with eps={eps}", "eps >= 0")
    centred = L.arith(node, "sub", a, Ref(L.b.scale(L.b.sum(a), 1.0 / w))) if centre else a
    var = Ref(L.b.scale(L.b.sum(L.b.mul(int(centred), int(centred))), 1.0 / w))
    out = L.arith(node, "mul", centred, L.pointwise(node, L.arith(node, "add", var, eps), A.formula("1/sqrt(x)")))
    for v, op, name in ((weight, "mul", "weight"), (bias, "add", "bias")):
        if v is None:
            continue
        if not isinstance(v, State) or tuple(v.value.shape) != (w,):
            got = f"of shape {tuple(v.value.shape)}" if isinstance(v, State) else "computed from x"
            L.refuse(node, f"{what} with a {name} {got}", f"a parameter or buffer of shape ({w},), as torch requires")
        out = L.arith(node, op, out, v)
    return out


def _layer_norm(L, node, input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """torch's layer norm (biased variance)."""
    return _feature_norm(L, node, "layer_norm", input, normalized_shape, weight, bias, eps, centre=True)


def _rms_norm(L, node, input, normalized_shape, weight=None, eps=None):
    """torch's RMS norm; ``eps=None`` is the machine epsilon of the network's dtype, as in torch."""
    eps = torch.finfo(L.dtype).eps if eps is None else eps
    return _feature_norm(L, node, "rms_norm", input, normalized_shape, weight, None, eps, centre=False)


def _norm_module(fn):
    def rule(L, node, mod, a):
        path = str(node.target)
        weight = L.tensor_state(f"{path}.weight") if mod.weight is not None else None
        if getattr(mod, "bias", None) is not None:
            return fn(L, node, a, mod.normalized_shape, weight, L.tensor_state(f"{path}.bias"), mod.eps)
        return fn(L, node, a, mod.normalized_shape, weight, eps=mod.eps)

    return rule


def _batch_norm_module(L, node, mod, a):
    """BatchNorm1d in eval mode with running statistics: x · s + t per feature, s = weight / sqrt(var +
    eps), t = bias − mean · s, recomputed from the live buffers and parameters on every call. Batch
    statistics (training mode, or no running statistics) couple the rows: refused."""
    where = L.display(str(node.target))
    if mod.training or not mod.track_running_stats or mod.running_mean is None:
        L.refuse(
            node,
            f"{type(mod).__name__} ({where}) with batch statistics (training mode or track_running_stats=False)",
            "call module.eval() before compile_module (running statistics: a per-feature affine map)",
        )
    if isinstance(a, (Col, Grid)) or not isinstance(a, Ref):
        L.refuse(node, f"{type(mod).__name__} ({where}) of a {type(a).__name__}", "a tensor [N, features] of x")
    if L.g.width(a) != mod.num_features:
        L.refuse(
            node,
            f"{type(mod).__name__} ({where}) of {mod.num_features} features on {L.g.width(a)} features",
            "num_features equal to the input's width",
        )
    path = str(node.target)
    mean, var = L.tensor_state(f"{path}.running_mean"), L.tensor_state(f"{path}.running_var")
    eps = L.finite(node, mod.eps, "eps")
    if mod.affine:
        weight, bias = L.tensor_state(f"{path}.weight"), L.tensor_state(f"{path}.bias")
        scale = S.apply(lambda v, w: w * torch.rsqrt(v + eps), (var, weight), {}, f"{where} scale")
        shift = S.apply(
            lambda m, v, w, b: b - m * w * torch.rsqrt(v + eps), (mean, var, weight, bias), {}, f"{where} shift"
        )
    else:
        scale = S.apply(lambda v: torch.rsqrt(v + eps), (var,), {}, f"{where} scale")
        shift = S.apply(lambda m, v: -m * torch.rsqrt(v + eps), (mean, var), {}, f"{where} shift")
    return L.arith(node, "add", L.arith(node, "mul", a, scale), shift)


def _relu6(L, node, input, inplace=False):
    return _clamp(L, node, input, 0.0, 6.0)


def _dropout(L, node, input, p=0.5, training=True, inplace=False):
    p = L.finite(node, p, "p")
    if training and p > 0:
        L.refuse(
            node,
            f"dropout in training mode (p={p})",
            "call module.eval() before compile_module (dropout is then the identity), or pass training=False",
        )
    return L.ref(node, input)


def _torch_dropout(L, node, input, p, train):
    return _dropout(L, node, input, p, train)


def _square(L, node, input, *, out=None):
    _no_out(L, node, out)
    return L.arith(node, "mul", input, input)


# --- arithmetic ------------------------------------------------------------------------------------------


def _add(L, node, input, other, *, alpha=1, out=None):
    _no_out(L, node, out)
    if alpha != 1:
        other = L.arith(node, "mul", other, L.finite(node, alpha, "alpha"))
    return L.arith(node, "add", input, other)


def _sub(L, node, input, other, *, alpha=1, out=None):
    _no_out(L, node, out)
    if alpha != 1:
        other = L.arith(node, "mul", other, L.finite(node, alpha, "alpha"))
    return L.arith(node, "sub", input, other)


def _rsub(L, node, input, other, *, alpha=1):
    return _sub(L, node, other, L.arith(node, "mul", input, alpha) if alpha != 1 else input)


def _mul(L, node, input, other, *, out=None):
    _no_out(L, node, out)
    return L.arith(node, "mul", input, other)


def _div(L, node, input, other, *, rounding_mode=None, out=None):
    _no_out(L, node, out)
    if rounding_mode is not None:
        L.refuse(node, f"division with rounding_mode={rounding_mode!r}", "a true division (it is not differentiable)")
    return L.divide(node, input, other)


def _op2(op):
    return lambda L, node, a, b: L.arith(node, op, a, b)


def _truediv(L, node, a, b):
    return L.divide(node, a, b)


def _neg(L, node, input, *, out=None):
    _no_out(L, node, out)
    return L.arith(node, "mul", input, -1.0)


def _pow(L, node, input, exponent, *, out=None):
    _no_out(L, node, out)
    return L.power(node, input, exponent)


def _linear(L, node, input, weight, bias=None):
    return L.linear(node, input, weight, bias)


def _matmul(L, node, input, other, *, out=None):
    _no_out(L, node, out)
    if not isinstance(other, State) or not isinstance(input, Ref):
        L.refuse(
            node,
            "a matrix product of two tensors computed from x",
            "multiply x (left) by a parameter or buffer (right): x @ W",
        )
    if other.value.dim() != 2:
        L.refuse(node, f"x @ {other.text} with a {other.value.dim()}-D right operand", "use a 2-D matrix")
    from .fx_state import apply

    w = apply(torch.t, (other,), {}, f"{other.text}.T")
    return L.linear(node, input, w, None)


def _addmm(L, node, input, mat1, mat2, *, beta=1, alpha=1, out=None):
    """beta · input + alpha · (mat1 @ mat2): a linear layer written as torch.addmm(b, x, W.t())."""
    _no_out(L, node, out)
    beta, alpha = L.finite(node, beta, "beta"), L.finite(node, alpha, "alpha")
    prod = L.arith(node, "mul", _matmul(L, node, mat1, mat2), alpha)
    return prod if beta == 0 else L.arith(node, "add", prod, L.arith(node, "mul", input, beta))


def _addcmul(L, node, input, tensor1, tensor2, *, value=1, out=None):
    _no_out(L, node, out)
    value = L.finite(node, value, "value")
    return L.arith(node, "add", input, L.arith(node, "mul", L.arith(node, "mul", tensor1, tensor2), value))


def _lerp(L, node, input, end, weight, *, out=None):
    """input + weight · (end − input)."""
    _no_out(L, node, out)
    if is_number(weight):
        weight = L.finite(node, weight, "weight")
    return L.arith(node, "add", input, L.arith(node, "mul", L.arith(node, "sub", end, input), weight))


def _vector_norm(L, node, x, ord=2, dim=None, keepdim=False, *, dtype=None, out=None):  # noqa: A002
    if ord not in (2, 2.0):
        L.refuse(node, f"vector_norm(ord={ord!r})", "the 2-norm over the features: ord=2, dim=-1")
    return _norm(L, node, x, 2, dim, keepdim, dtype, out=out)


def _linalg_norm(L, node, A, ord=None, dim=None, keepdim=False, *, out=None, dtype=None):  # noqa: A002
    if ord not in (None, 2, 2.0) or dim is None:
        L.refuse(node, f"linalg.norm(ord={ord!r}, dim={dim})", "the 2-norm over the features: dim=-1")
    return _norm(L, node, A, 2, dim, keepdim, dtype, out=out)


def _hardsigmoid(L, node, input, inplace=False):
    """clamp(x / 6 + 1/2, 0, 1): kinked at ±3, flagged as not smooth."""
    return _clamp(L, node, L.arith(node, "add", L.arith(node, "mul", input, 1.0 / 6.0), 0.5), 0.0, 1.0)


def _hardswish(L, node, input, inplace=False):
    return L.arith(node, "mul", input, _hardsigmoid(L, node, input))


# --- shape -------------------------------------------------------------------------------------------------


def _cat(L, node, tensors, dim=0, *, out=None):
    _no_out(L, node, out)
    tensors = list(tensors)
    if any(isinstance(t, Grid) for t in tensors):
        return L.grid_cat(node, tensors, dim)
    if any(isinstance(t, Col) for t in tensors):
        L.refuse(node, "torch.cat of 1-D columns", "torch.stack(columns, dim=-1), or keep the columns 2-D")
    if dim not in (1, -1):
        L.refuse(node, f"torch.cat along dim={dim}", "concatenate features: dim=-1 (or 1)")
    return Ref(L.b.concat([L.ref(node, t) for t in tensors]))


def _stack(L, node, tensors, dim=0, *, out=None):
    _no_out(L, node, out)
    tensors = list(tensors)
    if tensors and all(isinstance(t, Ref) and not isinstance(t, (Col, Grid)) for t in tensors):
        return L.grid_stack(node, tensors, dim)
    if dim not in (1, -1) or not all(isinstance(t, Col) for t in tensors):
        L.refuse(node, f"torch.stack along dim={dim}", "stack 1-D columns along dim=-1 (or torch.cat for 2-D)")
    return Ref(L.b.concat([int(t) for t in tensors]))


def _columns(L, node, input, dim):
    if dim not in (1, -1):
        L.refuse(node, f"splitting along dim={dim}", "split the features: dim=-1 (or 1)")
    return L.ref(node, input)


def _split(L, node, tensor, split_size_or_sections, dim=0):
    a = _columns(L, node, tensor, dim)
    w = L.g.width(a)
    if isinstance(split_size_or_sections, int) and not isinstance(split_size_or_sections, bool):
        k = split_size_or_sections
        if k < 1:
            L.refuse(node, f"split size {k}", "a positive split size")
        sizes = [min(k, w - s) for s in range(0, w, k)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != w or any(not isinstance(s, int) or s < 0 for s in sizes):
            L.refuse(node, f"split sections {sizes} of {w} features", f"sections that add up to {w}")
    return L.views(a, sizes)


def _chunk(L, node, input, chunks, dim=0):
    a = _columns(L, node, input, dim)
    w = L.g.width(a)
    k = -(-w // chunks)
    return L.views(a, [min(k, w - s) for s in range(0, w, k)])


def _unbind(L, node, input, dim=0):
    a = _columns(L, node, input, dim)
    return tuple(Col(v) for v in L.views(a, [1] * L.g.width(a)))


def _getitem(L, node, obj, idx):
    return L.getitem(node, obj, idx)


def _identity(L, node, input, *args, **kwargs):
    return L.keep(node, input)


def _clone(L, node, input, *, memory_format=None):
    return L.ref(node, input) if not isinstance(input, Col) else input  # a copy: not an alias of input


def _requires_grad_(L, node, input, requires_grad=True):
    return L.keep(node, input)


def _contiguous(L, node, input, memory_format=None):
    return L.keep(node, input)


_CAST = "no cast: compile the module in the dtype it computes in"


def _to(L, node, input, *args, **kwargs):
    for a in list(args) + list(kwargs.values()):  # x.to(device), x.to(other): the network's own
        if isinstance(a, torch.dtype) and a != L.dtype:
            L.refuse(node, f"a cast to {a} inside a {L.dtype} network", _CAST)
    return L.keep(node, input)


def _cast(dtype):
    def rule(L, node, input, memory_format=None):
        if dtype != L.dtype:
            L.refuse(node, f"a cast to {dtype} inside a {L.dtype} network", _CAST)
        return L.keep(node, input)

    return rule


def _type_as(L, node, input, other):
    return L.keep(node, input)


def _reshape(L, node, input, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return L.reshape(node, input, shape)


def _expand(L, node, input, *sizes):
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    a = L.ref(node, input)
    w = L.g.width(a)
    if len(sizes) != 2 or not (sizes[0] in (-1, BATCH) or sizes[0] == EXAMPLE_BATCH) or not isinstance(sizes[1], int):
        L.refuse(node, f"expand{tuple(sizes)} of a tensor [N, {w}]", "expand(-1, features) of a width-1 tensor")
    out = w if sizes[1] == -1 else sizes[1]
    if w not in (1, out):
        L.refuse(node, f"expand of width {w} to {out}", "expand a width-1 tensor")
    return Ref(L.b.expand(a, out))


def _expand_as(L, node, input, other):
    return _expand(L, node, input, -1, L.g.width(L.ref(node, other)))


def _flatten(L, node, input, start_dim=0, end_dim=-1):
    if isinstance(input, Grid) and start_dim in (1, -2) and end_dim in (-1, 2):
        return Ref(int(input))  # row-major: the node already is [N, a·b]
    if isinstance(input, Ref) and not isinstance(input, (Col, Grid)) and start_dim in (1, -1) and end_dim == -1:
        return L.keep(node, input)
    return L.refuse(node, f"flatten(start_dim={start_dim}, end_dim={end_dim})", "x is already [N, features]")


def _squeeze(L, node, input, dim=None):
    if isinstance(input, Col):
        return input
    if dim in (1, -1) and L.g.width(L.ref(node, input)) == 1:
        return Col(input)
    return L.refuse(node, f"squeeze(dim={dim})", "squeeze(-1) of a width-1 tensor")


def _unsqueeze(L, node, input, dim):
    if isinstance(input, Col) and dim in (1, -1):
        return Ref(int(input))
    if isinstance(input, Ref) and not isinstance(input, (Col, Grid)) and dim in (1, -2, 2, -1):
        w = L.g.width(input)
        return Grid.make(int(input), 1, w) if dim in (1, -2) else Grid.make(int(input), w, 1)
    return L.refuse(node, f"unsqueeze(dim={dim})", "unsqueeze(-1) of a 1-D column")


def _sum(L, node, input, dim=None, keepdim=False, *, dtype=None, out=None):
    _no_out(L, node, out)
    if dim not in (1, -1, (1,), (-1,), [1], [-1]) or isinstance(input, Col) or dtype is not None:
        L.refuse(node, f"sum(dim={dim}, dtype={dtype})", "sum the features: dim=-1")
    s = L.b.sum(L.ref(node, input))
    return Ref(s) if keepdim else Col(s)


def _mean(L, node, input, dim=None, keepdim=False, *, dtype=None, out=None):
    s = _sum(L, node, input, dim, keepdim, dtype=dtype, out=out)
    out = L.b.scale(s, 1.0 / L.g.width(L.ref(node, input)))
    return Ref(out) if keepdim else Col(out)


def _norm(L, node, input, p="fro", dim=None, keepdim=False, dtype=None, *, out=None):
    _no_out(L, node, out)
    if p not in (2, 2.0, "fro") or dim not in (1, -1, (1,), (-1,), [1], [-1]) or dtype is not None:
        L.refuse(node, f"norm(p={p!r}, dim={dim}, dtype={dtype})", "the 2-norm over the features: norm(dim=-1)")
    a = L.ref(node, input)
    s = Ref(L.b.sum(L.b.mul(a, a)))
    n = L.pointwise(node, s, A.formula("sqrt(x)"))
    return n if keepdim else Col(int(n))


def _normalize(L, node, input, p=2.0, dim=1, eps=1e-12, out=None):
    _no_out(L, node, out)
    n = _norm(L, node, input, p, dim, keepdim=True)
    return L.divide(node, input, _clamp(L, node, n, min=L.finite(node, eps, "eps")))


def _getattr(L, node, obj, name, *default):
    return L.attribute(node, obj, name)


def _size(L, node, input, dim=None):
    shape = L.attribute(node, input, "shape")
    return shape if dim is None else shape[dim]


# --- in-place Tensor methods: the same rules, with the method's own signature (no out=) ---------------


def _inplace(rule, n_tensors: int = 0):
    """``rule`` for ``Tensor.<name>_(self[, other])``: no keywords of its own."""
    if n_tensors:
        return lambda L, node, input, other: rule(L, node, input, other)
    return lambda L, node, input: rule(L, node, input)


def _clamp_(L, node, input, min=None, max=None):  # noqa: A002
    return _clamp(L, node, input, min, max)


def _add_(L, node, input, other, *, alpha=1):
    return _add(L, node, input, other, alpha=alpha)


def _sub_(L, node, input, other, *, alpha=1):
    return _sub(L, node, input, other, alpha=alpha)


def _div_(L, node, input, other, *, rounding_mode=None):
    return _div(L, node, input, other, rounding_mode=rounding_mode)


# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------

CALLS: dict[Any, Call] = {}


def _row(name: str, rule, *targets, inplace: bool = False) -> None:
    call = Call(name, rule, inplace)
    for t in targets:
        CALLS[t] = call


def _m(name: str) -> tuple[str, str]:
    return ("method", name)


for _fn in ("sin", "cos", "exp", "log", "tanh", "sigmoid", "abs"):
    _rule = _pw(_fn)
    _row(f"torch.{_fn}", _rule, getattr(torch, _fn), _m(_fn))
    _row(f"Tensor.{_fn}_", _inplace(_rule), _m(f"{_fn}_"), inplace=True)
_row("torch.absolute", _pw("abs"), torch.absolute, _m("absolute"))
for _names, _text in (
    (("tan",), "tan(x)"),
    (("atan", "arctan"), "atan(x)"),
    (("sinh",), "sinh(x)"),
    (("cosh",), "cosh(x)"),
    (("erf",), "erf(x)"),
    (("rsqrt",), "1/sqrt(x)"),
    (("reciprocal",), "1/x"),
    (("expm1",), "exp(x) - 1"),
    (("log1p",), "log(1 + x)"),
    (("exp2",), "exp(0.6931471805599453*x)"),
    (("log2",), "log(x)/0.6931471805599453"),
    (("log10",), "log(x)/2.302585092994046"),
):
    _row(f"torch.{_names[0]}", _pwf(_text), *(getattr(torch, n) for n in _names), *(_m(n) for n in _names))
_row("torch.special.erf", _pwf("erf(x)"), torch.special.erf)
_row("torch.special.expit", _pw("sigmoid"), torch.special.expit)
_row("F.prelu", _prelu, F.prelu)
_row("F.celu", _celu, F.celu, torch.celu)
_row("F.tanhshrink", lambda L, node, input: L.pointwise(node, input, A.formula("x - tanh(x)")), F.tanhshrink)
_row("F.hardsigmoid", _hardsigmoid, F.hardsigmoid)
_row("F.hardswish", _hardswish, F.hardswish)
_row("torch.addmm", _addmm, torch.addmm, _m("addmm"))
_row("torch.addcmul", _addcmul, torch.addcmul, _m("addcmul"))
_row("torch.lerp", _lerp, torch.lerp, _m("lerp"))
_row("torch.linalg.vector_norm", _vector_norm, torch.linalg.vector_norm)
_row("torch.linalg.norm", _linalg_norm, torch.linalg.norm)
_row("F.layer_norm", _layer_norm, F.layer_norm)
_row("F.rms_norm", _rms_norm, F.rms_norm, torch.rms_norm)
_row("F.tanh", _pw("tanh"), F.tanh)
_row("F.sigmoid", _pw("sigmoid"), F.sigmoid)
_row("torch.sqrt", _pwf("sqrt(x)"), torch.sqrt, _m("sqrt"))
_row("torch.square", _square, torch.square, _m("square"))
_row("F.relu", _relu, F.relu, torch.relu, _m("relu"))
_row("F.relu_", _inplace(_relu), F.relu_, torch.relu_, _m("relu_"), inplace=True)
_row("F.leaky_relu", _leaky_relu, F.leaky_relu)
_row("F.elu", _elu, F.elu)
_row("F.selu", _selu, F.selu, torch.selu)
_row("F.silu", _silu, F.silu)
_row("F.gelu", _gelu, F.gelu)
_row("F.softplus", _softplus, F.softplus)
_row("F.hardtanh", _hardtanh, F.hardtanh)
_row("F.relu6", _relu6, F.relu6)
_row("F.mish", _formula("x*tanh(log(1+exp(x)))"), F.mish)
_row("F.softsign", lambda L, node, input: L.pointwise(node, input, A.formula("x/(1+abs(x))")), F.softsign)
_row("F.logsigmoid", lambda L, node, input: L.pointwise(node, input, A.formula("-softplus(-x)")), F.logsigmoid)
_row("torch.clamp", _clamp, torch.clamp, torch.clip, _m("clamp"), _m("clip"))
_row("Tensor.clamp_", _clamp_, _m("clamp_"), _m("clip_"), inplace=True)
_row("torch.clamp_min", _clamp_min, torch.clamp_min, _m("clamp_min"))
_row("torch.clamp_max", _clamp_max, torch.clamp_max, _m("clamp_max"))
_row("F.dropout", _dropout, F.dropout)
_row("torch.dropout", _torch_dropout, torch.dropout)
_row("torch.add", _add, torch.add, _m("add"))
_row("Tensor.add_", _add_, _m("add_"), inplace=True)
_row("torch.sub", _sub, torch.sub, torch.subtract, _m("sub"), _m("subtract"))
_row("Tensor.sub_", _sub_, _m("sub_"), inplace=True)
_row("torch.rsub", _rsub, torch.rsub)
_row("torch.mul", _mul, torch.mul, torch.multiply, _m("mul"), _m("multiply"))
_row("Tensor.mul_", _inplace(_mul, 1), _m("mul_"), inplace=True)
_row("torch.div", _div, torch.div, torch.divide, torch.true_divide, _m("div"), _m("divide"), _m("true_divide"))
_row("Tensor.div_", _div_, _m("div_"), inplace=True)
_row("torch.neg", _neg, torch.neg, torch.negative, _m("neg"), _m("negative"))
_row("torch.pow", _pow, torch.pow, _m("pow"))
_row("+", _op2("add"), operator.add)
_row("-", _op2("sub"), operator.sub)
_row("*", _op2("mul"), operator.mul)
_row("/", _truediv, operator.truediv)
_row("unary -", lambda L, node, a: L.arith(node, "mul", a, -1.0), operator.neg)
_row("unary +", lambda L, node, a: a, operator.pos)
_row("**", lambda L, node, a, b: L.power(node, a, b), operator.pow)
_row("+=", _op2("add"), operator.iadd, inplace=True)
_row("-=", _op2("sub"), operator.isub, inplace=True)
_row("*=", _op2("mul"), operator.imul, inplace=True)
_row("/=", _truediv, operator.itruediv, inplace=True)
_row("F.linear", _linear, F.linear)
_row("@", _matmul, operator.matmul, torch.matmul, torch.mm, _m("matmul"), _m("mm"))
_row("torch.cat", _cat, torch.cat, torch.concat, torch.concatenate)
_row("torch.stack", _stack, torch.stack)
_row("torch.split", _split, torch.split, _m("split"))
_row("torch.chunk", _chunk, torch.chunk, _m("chunk"))
_row("torch.unbind", _unbind, torch.unbind, _m("unbind"))
_row("[]", _getitem, operator.getitem, _m("__getitem__"))
_row("Tensor.clone", _clone, torch.clone, _m("clone"))
_row("Tensor.detach", _identity, torch.detach, _m("detach"))
_row("Tensor.requires_grad_", _requires_grad_, _m("requires_grad_"))
_row("Tensor.contiguous", _contiguous, _m("contiguous"))
_row("Tensor.to", _to, _m("to"))
_row("Tensor.float", _cast(torch.float32), _m("float"))
_row("Tensor.double", _cast(torch.float64), _m("double"))
_row("Tensor.type_as", _type_as, _m("type_as"))
_row("Tensor.view", _reshape, _m("view"), _m("reshape"), torch.reshape)
_row("torch.flatten", _flatten, torch.flatten, _m("flatten"))
_row("Tensor.expand", _expand, _m("expand"))
_row("Tensor.expand_as", _expand_as, _m("expand_as"))
_row("Tensor.squeeze", _squeeze, torch.squeeze, _m("squeeze"))
_row("Tensor.unsqueeze", _unsqueeze, torch.unsqueeze, _m("unsqueeze"))
_row("torch.sum", _sum, torch.sum, _m("sum"))
_row("torch.mean", _mean, torch.mean, _m("mean"))
_row("torch.norm", _norm, torch.norm, _m("norm"))
_row("F.normalize", _normalize, F.normalize)
_row("getattr", _getattr, builtins.getattr)
_row("Tensor.size", _size, _m("size"))


# --- leaf modules: type -> (rule over the module's attributes, the attributes it reads) ------------------


@dataclass(frozen=True)
class ModuleRow:
    rule: Callable  # (L, node, mod, input) -> value
    attributes: tuple[str, ...] = ()  # module attributes that change the meaning, all handled


MODULES: dict[type, ModuleRow] = {
    nn.Linear: ModuleRow(lambda L, n, m, a: L.module_linear(n, m, a), ("weight", "bias")),
    nn.Identity: ModuleRow(lambda L, n, m, a: L.keep(n, a)),
    nn.ReLU: ModuleRow(lambda L, n, m, a: _relu(L, n, a), ("inplace",)),
    nn.LeakyReLU: ModuleRow(lambda L, n, m, a: _leaky_relu(L, n, a, m.negative_slope), ("negative_slope", "inplace")),
    nn.ELU: ModuleRow(lambda L, n, m, a: _elu(L, n, a, m.alpha), ("alpha", "inplace")),
    nn.SELU: ModuleRow(lambda L, n, m, a: _selu(L, n, a), ("inplace",)),
    nn.SiLU: ModuleRow(lambda L, n, m, a: _silu(L, n, a), ("inplace",)),
    nn.GELU: ModuleRow(lambda L, n, m, a: _gelu(L, n, a, m.approximate), ("approximate",)),
    nn.Softplus: ModuleRow(lambda L, n, m, a: _softplus(L, n, a, m.beta, m.threshold), ("beta", "threshold")),
    nn.Tanh: ModuleRow(lambda L, n, m, a: L.pointwise(n, a, A.activation("tanh"))),
    nn.Sigmoid: ModuleRow(lambda L, n, m, a: L.pointwise(n, a, A.activation("sigmoid"))),
    nn.Hardtanh: ModuleRow(
        lambda L, n, m, a: _hardtanh(L, n, a, m.min_val, m.max_val), ("min_val", "max_val", "inplace")
    ),
    nn.ReLU6: ModuleRow(lambda L, n, m, a: _relu6(L, n, a), ("inplace",)),
    nn.Mish: ModuleRow(lambda L, n, m, a: L.pointwise(n, a, A.formula("x*tanh(log(1+exp(x)))")), ("inplace",)),
    nn.Softsign: ModuleRow(lambda L, n, m, a: L.pointwise(n, a, A.formula("x/(1+abs(x))"))),
    nn.LogSigmoid: ModuleRow(lambda L, n, m, a: L.pointwise(n, a, A.formula("-softplus(-x)"))),
    nn.Dropout: ModuleRow(lambda L, n, m, a: _dropout(L, n, a, m.p, m.training), ("p", "training", "inplace")),
    nn.LayerNorm: ModuleRow(
        _norm_module(_layer_norm), ("normalized_shape", "eps", "elementwise_affine", "weight", "bias")
    ),
    nn.RMSNorm: ModuleRow(_norm_module(_rms_norm), ("normalized_shape", "eps", "elementwise_affine", "weight")),
    nn.BatchNorm1d: ModuleRow(
        _batch_norm_module,
        (
            "num_features",
            "eps",
            "affine",
            "track_running_stats",
            "training",
            "running_mean",
            "running_var",
            "weight",
            "bias",
        ),
    ),
    nn.PReLU: ModuleRow(lambda L, n, m, a: _prelu(L, n, a, L.tensor_state(f"{n.target}.weight")), ("weight",)),
    nn.CELU: ModuleRow(lambda L, n, m, a: _celu(L, n, a, m.alpha), ("alpha", "inplace")),
    nn.Tanhshrink: ModuleRow(lambda L, n, m, a: L.pointwise(n, a, A.formula("x - tanh(x)"))),
    nn.Hardsigmoid: ModuleRow(lambda L, n, m, a: _hardsigmoid(L, n, a), ("inplace",)),
    nn.Hardswish: ModuleRow(lambda L, n, m, a: _hardswish(L, n, a), ("inplace",)),
    nn.Flatten: ModuleRow(lambda L, n, m, a: _flatten(L, n, a, m.start_dim, m.end_dim), ("start_dim", "end_dim")),
}

#: calls refused on purpose: what they are and what to write instead
_HASH = (
    "integer grid / hash-table encoders (Instant-NGP style) index tables with integer coordinates: Φ is "
    "piecewise constant in x there, AutoInt needs a smooth network; use a Fourier or positional encoding"
)
KNOWN_REFUSALS: dict[Any, str] = {
    torch.floor: _HASH,
    torch.ceil: _HASH,
    torch.round: _HASH,
    torch.frac: _HASH,
    torch.remainder: _HASH,
    torch.fmod: _HASH,
    operator.mod: _HASH,
    operator.floordiv: _HASH,
    operator.xor: _HASH,
    torch.bitwise_xor: _HASH,
    F.embedding: _HASH,
    F.grid_sample: _HASH,
    F.interpolate: _HASH,
    _m("long"): _HASH,
    _m("int"): _HASH,
    _m("floor"): _HASH,
    _m("ceil"): _HASH,
    _m("round"): _HASH,
    _m("frac"): _HASH,
    _m("__mod__"): _HASH,
    torch.view_as_real: "complex-valued networks (e.g. WIRE) are not supported: the IR is real-valued",
    torch.view_as_complex: "complex-valued networks (e.g. WIRE) are not supported: the IR is real-valued",
    torch.complex: "complex-valued networks (e.g. WIRE) are not supported: the IR is real-valued",
    _m("real"): "complex-valued networks (e.g. WIRE) are not supported: the IR is real-valued",
    _m("imag"): "complex-valued networks (e.g. WIRE) are not supported: the IR is real-valued",
    nn.Embedding: _HASH,
}


def callable_name(fn) -> str:
    if isinstance(fn, tuple):
        return f"Tensor.{fn[1]}"
    if isinstance(fn, type):
        return f"{fn.__module__}.{fn.__name__}"
    mod = getattr(fn, "__module__", "") or ""
    return f"{mod}.{getattr(fn, '__name__', repr(fn))}".lstrip(".")


def bind(call: Call, L, node, args, kwargs):
    """Bind the call's arguments to its row's signature (as torch would); an unknown keyword or a missing
    argument is a CompileError naming it."""
    try:
        inspect.signature(call.rule).bind(L, node, *args, **kwargs)
    except TypeError as exc:
        accepted = ", ".join(call.keywords) or "none"
        L.refuse(
            node,
            f"{call.name} called with {_describe(args, kwargs)} ({exc})",
            f"the arguments torch documents that this compiler handles (keywords: {accepted})",
        )
    return call.rule(L, node, *args, **kwargs)


def _describe(args, kwargs) -> str:
    parts = [type(a).__name__ if not is_number(a) else repr(a) for a in args]
    parts += [
        f"{k}={v!r}" if is_number(v) or v is None or isinstance(v, (str, bool)) else f"{k}=..."
        for k, v in kwargs.items()
    ]
    return "(" + ", ".join(parts) + ")"


def finite(v) -> bool:
    return is_number(v) and math.isfinite(float(v))
