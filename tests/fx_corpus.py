"""A corpus of coordinate networks written in the idioms of published code bases (SIREN, NeRF, MetaModule /
BatchLinear, Fourier features, multiplicative filter networks, Gabor filters, FINER, NeuS / IDR, neural
antiderivatives, ...), written for these tests (no code copied), sizes shrunk. Each entry says how to
compile it: ``Case(name, factory, in_features, integrate, kwargs)``; ``tests/test_fx_corpus.py`` checks them.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autoint_compiler.frontends.fx import DictInput

# --- SIREN --------------------------------------------------------------------------------------------


class SineLayer(nn.Module):
    def __init__(self, fan_in, fan_out, is_first=False, omega_0=30.0):
        super().__init__()
        self.omega_0, self.is_first = omega_0, is_first
        self.linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            bound = 1 / fan_in if is_first else math.sqrt(6 / fan_in) / omega_0
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x):
        return torch.sin(self.omega_0 * self.linear(x))


class Siren(nn.Module):
    """coords.clone().detach().requires_grad_(True) and a dict return, as in the SIREN code."""

    def __init__(self, d=2, hidden=16, layers=2, out=1, omega=30.0):
        super().__init__()
        net = [SineLayer(d, hidden, is_first=True, omega_0=omega)]
        net += [SineLayer(hidden, hidden, omega_0=omega) for _ in range(layers - 1)]
        net.append(nn.Linear(hidden, out))
        self.net = nn.Sequential(*net)

    def forward(self, coords):
        coords = coords.clone().detach().requires_grad_(True)
        output = self.net(coords)
        return {"model_in": coords, "model_out": output}


class SirenFirstOmega(nn.Module):
    def __init__(self):
        super().__init__()
        self.first_omega, self.hidden_omega = 3.0, 2.0
        self.l0, self.l1, self.out = nn.Linear(3, 12), nn.Linear(12, 12), nn.Linear(12, 2)

    def forward(self, x):
        h = torch.sin(self.first_omega * self.l0(x))
        h = torch.sin(self.hidden_omega * self.l1(h))
        return self.out(h)


# --- NeRF -----------------------------------------------------------------------------------------------


class Embedder(nn.Module):
    def __init__(self, freqs=2, include_input=True):
        super().__init__()
        self.freqs, self.include_input = freqs, include_input

    def forward(self, x):
        out = [x] if self.include_input else []
        for k in range(self.freqs):
            for fn in (torch.sin, torch.cos):
                out.append(fn(x * 2.0**k))
        return torch.cat(out, -1)


class NeRF(nn.Module):
    """``forward(x, sigma_only=False)``, a skip, split of points and view directions, tuple output."""

    def __init__(self, W=16, D=4, skips=(2,)):
        super().__init__()
        self.skips = list(skips)
        self.embed, self.embed_dir = Embedder(2), Embedder(1)
        din, ddir = 3 + 3 * 4, 3 + 3 * 2
        self.pts_linears = nn.ModuleList(
            [nn.Linear(din, W)] + [nn.Linear(W + din if i in self.skips else W, W) for i in range(1, D)]
        )
        self.sigma = nn.Linear(W, 1)
        self.feature = nn.Linear(W, W)
        self.views = nn.Linear(W + ddir, W // 2)
        self.rgb = nn.Linear(W // 2, 3)

    def forward(self, x, sigma_only=False):
        pts, dirs = torch.split(x, [3, 3], dim=-1)
        e = self.embed(pts)
        h = e
        for i, layer in enumerate(self.pts_linears):
            if i in self.skips:
                h = torch.cat([e, h], -1)
            h = F.softplus(layer(h))
        sigma = self.sigma(h)
        if sigma_only:
            return sigma
        h = torch.cat([self.feature(h), self.embed_dir(dirs)], -1)
        h = F.silu(self.views(h))
        rgb = torch.sigmoid(self.rgb(h))
        return rgb, sigma


class NeRFCat(NeRF):
    def forward(self, x, sigma_only=False):
        rgb, sigma = super().forward(x, sigma_only=False)
        return torch.cat([rgb, sigma], -1)


# --- MetaModule / BatchLinear ------------------------------------------------------------------------


def get_subdict(params, key):
    if params is None:
        return None
    return OrderedDict((k[len(key) + 1 :], v) for k, v in params.items() if k.startswith(key + "."))


class BatchLinear(nn.Linear):
    """The MetaModule pattern: parameters from a dict (``named_parameters()`` by default)."""

    def forward(self, input, params=None):
        if params is None:
            params = OrderedDict(self.named_parameters())
        bias = params.get("bias", None)
        weight = params["weight"]
        output = input.matmul(weight.permute(*[i for i in range(len(weight.shape) - 2)], -1, -2))
        output += bias.unsqueeze(-2)
        return output


class MetaSequential(nn.Sequential):
    def forward(self, input, params=None):
        for name, module in self._modules.items():
            if isinstance(module, BatchLinear):
                input = module(input, params=get_subdict(params, name))
            else:
                input = module(input)
        return input


class MetaFC(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = MetaSequential(BatchLinear(2, 12), nn.Tanh(), BatchLinear(12, 12), nn.Softplus(), BatchLinear(12, 1))

    def forward(self, model_input, params=None):
        if params is None:
            params = OrderedDict(self.named_parameters())
        coords = model_input["coords"]
        return {"model_out": self.net(coords, get_subdict(params, "net"))}


class ParamsDictMLP(nn.Module):
    """Parameters read through ``dict(self.named_parameters())`` and F.linear."""

    def __init__(self):
        super().__init__()
        self.l0, self.l1 = nn.Linear(2, 10), nn.Linear(10, 1)

    def forward(self, x):
        p = dict(self.named_parameters())
        h = torch.tanh(F.linear(x, p["l0.weight"], p["l0.bias"]))
        return F.linear(h, p["l1.weight"], p["l1.bias"])


# --- Fourier features ---------------------------------------------------------------------------------


class FourierFeatures(nn.Module):
    """x @ B.T with B a registered buffer (Tancik et al.)."""

    def __init__(self, d=2, m=8, scale=2.0, hidden=16):
        super().__init__()
        self.register_buffer("B", torch.randn(m, d) * scale)
        self.mlp = nn.Sequential(nn.Linear(2 * m, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        x_proj = (2 * math.pi * x) @ self.B.T
        return self.mlp(torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1))


class LearnedFourier(nn.Module):
    """A trainable frequency matrix used as ``x @ W`` ([in, out] layout)."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(3, 6))
        self.out = nn.Linear(12, 2)

    def forward(self, x):
        z = x @ self.W
        return self.out(torch.cat([z.sin(), z.cos()], -1))


class PlainTensorAttribute(nn.Module):
    """A plain tensor attribute (not a buffer) used directly: read live by its path."""

    def __init__(self):
        super().__init__()
        self.freqs = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 1.5]], dtype=torch.float64)  # .double() skips it
        self.out = nn.Linear(3, 1)

    def forward(self, x):
        return self.out(torch.sin(torch.matmul(x, self.freqs)))


# --- multiplicative filter networks, Gabor ---------------------------------------------------------


class FourierNet(nn.Module):
    """BACON / MFN: z_{i+1} = sin(Ω_i x + φ_i) ⊙ (W_i z_i + b_i)."""

    def __init__(self, d=2, hidden=12, n=3):
        super().__init__()
        self.filters = nn.ModuleList([nn.Linear(d, hidden) for _ in range(n)])
        self.linear = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(n - 1)])
        self.out = nn.Linear(hidden, 1)

    def forward(self, x):
        z = torch.sin(self.filters[0](x))
        for i in range(1, len(self.filters)):
            z = self.filters[i](x).sin() * self.linear[i - 1](z)
        return self.out(z)


class GaborLayer(nn.Module):
    def __init__(self, d, k):
        super().__init__()
        self.linear = nn.Linear(d, k)
        self.mu = nn.Parameter(2 * torch.rand(k, d) - 1)
        self.gamma = nn.Parameter(torch.rand(k) + 0.5)

    def forward(self, x):
        D = (x**2).sum(-1)[..., None] + (self.mu**2).sum(-1)[None, :] - 2 * x @ self.mu.T
        return torch.sin(self.linear(x)) * torch.exp(-0.5 * D * self.gamma[None, :])


class GaborNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.g0, self.g1 = GaborLayer(2, 8), GaborLayer(2, 8)
        self.mid, self.out = nn.Linear(8, 8), nn.Linear(8, 1)

    def forward(self, x):
        z = self.g0(x)
        z = self.g1(x) * self.mid(z)
        return self.out(z)


# --- FINER ------------------------------------------------------------------------------------------------


class FinerLayer(nn.Module):
    def __init__(self, d, k, omega=3.0):
        super().__init__()
        self.omega = omega
        self.linear = nn.Linear(d, k)

    def forward(self, x):
        z = self.linear(x)
        with torch.no_grad():
            scale = torch.abs(z) + 1
        return torch.sin(self.omega * scale * z)


class Finer(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(FinerLayer(2, 10), FinerLayer(10, 10), nn.Linear(10, 1))

    def forward(self, x):
        return self.net(x)


# --- NeuS / IDR -------------------------------------------------------------------------------------------


class SDFNetwork(nn.Module):
    """NeuS / IDR: weight-normed layers, Softplus(beta=100), a skip divided by sqrt(2), geometric init."""

    def __init__(self, d_in=3, d_hidden=16, n_layers=4, skip_in=(2,), new_weight_norm=False):
        super().__init__()
        dims = [d_in + d_in * 2 * 2] + [d_hidden] * n_layers + [2]
        self.num_layers, self.skip_in = len(dims), skip_in
        self.embed = Embedder(2)
        for i in range(self.num_layers - 1):
            out_dim = dims[i + 1] - dims[0] if i + 1 in skip_in else dims[i + 1]
            lin = nn.Linear(dims[i], out_dim)
            torch.nn.init.normal_(lin.weight, 0.0, math.sqrt(2) / math.sqrt(out_dim))
            torch.nn.init.constant_(lin.bias, 0.0)
            if new_weight_norm:
                lin = nn.utils.parametrizations.weight_norm(lin)
            else:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    lin = nn.utils.weight_norm(lin)
            setattr(self, "lin" + str(i), lin)
        self.activation = nn.Softplus(beta=100)
        self.scale = 1.0

    def forward(self, inputs):
        inputs = inputs * self.scale
        inputs = self.embed(inputs)
        x = inputs
        for i in range(self.num_layers - 1):
            lin = getattr(self, "lin" + str(i))
            if i in self.skip_in:
                x = torch.cat([x, inputs], 1) / np.sqrt(2)
            x = lin(x)
            if i < self.num_layers - 2:
                x = self.activation(x)
        return torch.cat([x[:, :1] / self.scale, x[:, 1:]], dim=-1)


# --- neural antiderivatives and plain MLPs in various idioms ------------------------------------------


class AntiderivativeMLP(nn.Module):
    """An MLP whose repeated derivative is the fitted signal (neural antiderivative / AutoInt style)."""

    def __init__(self):
        super().__init__()
        self.l0, self.l1, self.l2 = nn.Linear(2, 12), nn.Linear(12, 12), nn.Linear(12, 1)

    def forward(self, x):
        h = F.silu(self.l0(x))
        h = F.gelu(self.l1(h)) + h
        return self.l2(h)


def leaky_sequential():
    return nn.Sequential(nn.Linear(2, 10), nn.LeakyReLU(0.2), nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, 1))


def elu_gelu_sequential():
    return nn.Sequential(
        nn.Linear(3, 8), nn.ELU(alpha=0.5), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 1)
    )


class ClampNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 10), nn.Linear(10, 1)
        self.ht = nn.Hardtanh(-0.7, 0.8)

    def forward(self, x):
        h = torch.clamp(self.a(x), -0.5, 0.6) + self.a(x).clamp(min=0.1) + self.ht(self.a(x)).clamp(max=0.3)
        return self.b(h)


class DropoutEval(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 10), nn.Linear(10, 1)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        h = self.drop(torch.tanh(self.a(x)))
        return self.b(F.dropout(h, 0.5, training=self.training))


class InplaceOps(nn.Module):
    """In-place ops whose result is not assigned: their effect must be kept."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.skip, self.c = nn.Linear(2, 8), nn.Linear(8, 8), nn.Linear(2, 8), nn.Linear(8, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.a(x)
        F.relu(h, inplace=True)
        h = self.b(h)
        h += self.skip(x)
        self.act(h)
        h.mul_(0.5)
        return self.c(torch.tanh(h))


class AlphaKeywords(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(2, 6), nn.Linear(2, 6), nn.Linear(6, 1)

    def forward(self, x):
        u, v = torch.tanh(self.a(x)), torch.sin(self.b(x))
        return self.c(torch.add(u, v, alpha=3) + u.sub(v, alpha=0.5) - torch.sub(v, 1.0, alpha=2))


class Unbind(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 8)
        self.o = nn.Linear(8, 1)

    def forward(self, x):
        px, py = x[:, :2].unbind(-1)
        feats = torch.stack([torch.sin(px), py * px, py], dim=-1)
        return self.o(torch.tanh(self.a(feats)))


class ChunkGLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 16), nn.Linear(8, 1)

    def forward(self, x):
        u, g = self.a(x).chunk(2, dim=-1)
        return self.b(u * torch.sigmoid(g))


class ExplicitParams(nn.Module):
    """Parameters registered directly, F.linear, a learnable ω, a bias vector and a scale row."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 2) * 0.7)
        self.bias = nn.Parameter(torch.randn(10) * 0.1)
        self.omega = nn.Parameter(torch.tensor(2.5))
        self.shift = nn.Parameter(torch.randn(10) * 0.1)
        self.out = nn.Linear(10, 1)

    def forward(self, x):
        h = torch.sin(self.omega * F.linear(x, self.weight, self.bias)) + self.shift
        return self.out(h * self.shift.exp())


class Normalized(nn.Module):
    """Input normalization buffers: (x - mean) / std."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.2, -0.1]))
        self.register_buffer("std", torch.tensor([0.5, 2.0]))
        self.mlp = nn.Sequential(nn.Linear(2, 10), nn.Softplus(), nn.Linear(10, 1))

    def forward(self, x):
        return self.mlp((x - self.mean) / self.std)


class AnnealedEncoding(nn.Module):
    """A coarse-to-fine window over frequencies from a Python float ``alpha`` (Nerfies / BARF style)."""

    def __init__(self, freqs=3):
        super().__init__()
        self.freqs, self.alpha = freqs, 1.5
        self.out = nn.Sequential(nn.Linear(2 + 4 * freqs, 12), nn.Tanh(), nn.Linear(12, 1))

    def forward(self, x):
        feats = [x]
        for k in range(self.freqs):
            w = (1 - math.cos(math.pi * min(max(self.alpha - k, 0.0), 1.0))) / 2
            feats += [w * torch.sin(2.0**k * x), w * torch.cos(2.0**k * x)]
        return self.out(torch.cat(feats, -1))


class ModuleListLoop(nn.Module):
    """nerfstudio-style: ModuleList in a loop, getattr-named heads, a density activation."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(3, 12), nn.Linear(12, 12), nn.Linear(12, 12)])
        self.head_density = nn.Linear(12, 1)
        self.head_feat = nn.Linear(12, 4)

    def forward(self, x):
        h = x
        for layer in self.layers:
            h = F.softplus(layer(h), beta=2.0, threshold=5.0)
        head = "head_density"
        density = torch.exp(getattr(self, head)(h) - 1.0)
        return torch.cat([density, torch.tanh(self.head_feat(h))], dim=-1)


class AbsSDF(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 10), nn.Linear(10, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))).abs() - 0.1 * (x**2).sum(-1, keepdim=True)


class ReshapeIdioms(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        x = x.view(-1, x.shape[-1]).contiguous().to(x.dtype)
        h = torch.sigmoid(self.a(x.reshape(x.shape[0], 3)))
        return self.b(h).flatten(1) / 2.0 - 1.0


class Reciprocal(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 6), nn.Linear(6, 1)

    def forward(self, x):
        h = F.softplus(self.a(x)) + 1.0
        return self.b(1.0 / h + torch.sqrt(h) + h**-1)


class DictNet(nn.Module):
    """A module taking a dict (``model_input['coords']``), compiled through ``DictInput``."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 10), nn.Tanh(), nn.Linear(10, 1))

    def forward(self, model_input):
        return self.net(model_input["coords"])


class ClosureEmbedder(nn.Module):
    """nerf-pytorch style: encoding lambdas capturing frequency tensors made in __init__ (not attributes)."""

    def __init__(self, freqs=3):
        super().__init__()
        bands = 2.0 ** torch.linspace(0.0, freqs - 1, steps=freqs)
        self.embed_fns = [lambda x: x]
        for freq in bands:
            for p_fn in (torch.sin, torch.cos):
                self.embed_fns.append(lambda x, p_fn=p_fn, freq=freq: p_fn(x * freq))
        self.mlp = nn.Sequential(nn.Linear(3 + 6 * freqs, 12), nn.Softplus(), nn.Linear(12, 1))

    def forward(self, x):
        return self.mlp(torch.cat([fn(x) for fn in self.embed_fns], -1))


class MultiscaleOutputs(nn.Module):
    """BACON style: a list of outputs, one per scale (``output=-1`` picks the finest)."""

    def __init__(self):
        super().__init__()
        self.filters = nn.ModuleList([nn.Linear(2, 8) for _ in range(3)])
        self.linear = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])
        self.heads = nn.ModuleList([nn.Linear(8, 1) for _ in range(2)])

    def forward(self, x):
        outputs, z = [], torch.sin(self.filters[0](x))
        for i in range(2):
            z = torch.sin(self.filters[i + 1](x)) * self.linear[i](z)
            outputs.append(self.heads[i](z))
        return outputs


@dataclass
class Case:
    name: str
    factory: object
    d: int
    integrate: object
    kwargs: dict = field(default_factory=dict)
    select: object = None  # how to pick the compiled output from the module's return value
    call: object = None  # how to call the module on x (default: module(x))


def _eval(m):
    return m.eval()


CORPUS = [
    Case("siren", Siren, 2, [0], {"output": "model_out"}, select="model_out"),
    Case(
        "siren-3d-mixed", lambda: Siren(3, 12, 2, 1, omega=4.0), 3, [0, 2], {"output": "model_out"}, select="model_out"
    ),
    Case("siren-first-omega", SirenFirstOmega, 3, {1: 2}),
    Case("nerf-tuple-rgb", NeRF, 6, [0], {"output": 0}, select=0),
    Case(
        "nerf-sigma-only",
        NeRF,
        6,
        [2],
        {"forward_kwargs": {"sigma_only": True}},
        call=lambda m, x: m(x, sigma_only=True),
    ),
    Case("nerf-cat", NeRFCat, 6, [0, 1]),
    Case(
        "metamodule-batchlinear",
        lambda: DictInput(MetaFC(), "coords"),
        2,
        [0],
        {"output": "model_out"},
        select="model_out",
    ),
    Case("params-dict-flinear", ParamsDictMLP, 2, [1]),
    Case("fourier-features-buffer", FourierFeatures, 2, [0]),
    Case("learned-fourier-matmul", LearnedFourier, 3, [2]),
    Case("plain-tensor-attribute", PlainTensorAttribute, 2, [0]),
    Case("multiplicative-filter", FourierNet, 2, [0, 1]),
    Case("gabor-mfn", GaborNet, 2, [1]),
    Case("finer", Finer, 2, [0]),
    Case("neus-sdf-weight-norm", SDFNetwork, 3, [0]),
    Case("idr-sdf-parametrized-weight-norm", lambda: SDFNetwork(new_weight_norm=True), 3, [2]),
    Case("antiderivative-order-2", AntiderivativeMLP, 2, {0: 2}),
    Case("antiderivative-mixed", AntiderivativeMLP, 2, {0: 1, 1: 1}),
    Case("leaky-relu-sequential", leaky_sequential, 2, [0]),
    Case("elu-gelu-silu-sequential", elu_gelu_sequential, 3, [1, 2]),
    Case("clamp-hardtanh", ClampNet, 2, [0]),
    Case("dropout-eval", lambda: _eval(DropoutEval()), 2, [0]),
    Case("inplace-ops", InplaceOps, 2, [1]),
    Case("alpha-keywords", AlphaKeywords, 2, [0]),
    Case("unbind-stack", Unbind, 3, [0]),
    Case("chunk-glu", ChunkGLU, 2, [0, 1]),
    Case("explicit-params", ExplicitParams, 2, [0]),
    Case("normalized-buffers", Normalized, 2, [1]),
    Case("annealed-encoding", AnnealedEncoding, 2, [0]),
    Case("modulelist-loop", ModuleListLoop, 3, [0]),
    Case("abs-sdf", AbsSDF, 2, [0]),
    Case("reshape-idioms", ReshapeIdioms, 3, [2]),
    Case("reciprocal-sqrt", Reciprocal, 2, {0: 2}),
    Case("dict-input", lambda: DictInput(DictNet(), "coords"), 2, [0]),
    Case("closure-embedder", ClosureEmbedder, 3, [1]),
    Case("multiscale-outputs", MultiscaleOutputs, 2, [0], {"output": -1}, select=-1),
]


@contextlib.contextmanager
def detach_is_identity():
    """SIREN's ``coords.clone().detach().requires_grad_(True)`` re-roots autograd; as a function of x it is
    the identity, which is what the compiled networks differentiate: the reference does the same."""
    original = torch.Tensor.detach, torch.Tensor.requires_grad_
    torch.Tensor.detach = lambda self: self
    torch.Tensor.requires_grad_ = lambda self, requires_grad=True: self  # (functorch refuses it inside jvp)
    try:
        yield
    finally:
        torch.Tensor.detach, torch.Tensor.requires_grad_ = original


class MipNeRFEncoding(nn.Module):
    """mip-NeRF's pos_enc: x[..., None, :] * scales[:, None], reshaped to [N, -1], sin of [xb, xb + π/2]."""

    def __init__(self, min_deg=0, max_deg=3):
        super().__init__()
        self.min_deg, self.max_deg = min_deg, max_deg
        self.mlp = nn.Sequential(nn.Linear(3 + 2 * 3 * (max_deg - min_deg), 12), nn.SiLU(), nn.Linear(12, 1))

    def forward(self, x):
        scales = torch.tensor([2**i for i in range(self.min_deg, self.max_deg)], dtype=x.dtype)
        xb = torch.reshape(x[..., None, :] * scales[:, None], list(x.shape[:-1]) + [-1])
        four_feat = torch.sin(torch.cat([xb, xb + 0.5 * math.pi], dim=-1))
        return self.mlp(torch.cat([x, four_feat], dim=-1))


class NerfstudioEncoding(nn.Module):
    """nerfstudio's NeRFEncoding: in[..., None] * freqs with a registered frequency buffer, view(N, -1)."""

    def __init__(self, levels=3):
        super().__init__()
        self.register_buffer("freqs", 2 ** torch.linspace(0.0, levels - 1, levels))
        self.mlp = nn.Sequential(nn.Linear(2 * 2 * levels, 10), nn.Tanh(), nn.Linear(10, 2))

    def forward(self, x):
        scaled = (2 * torch.pi * x)[..., None] * self.freqs
        scaled = scaled.view(*scaled.shape[:-2], -1)
        enc = torch.sin(torch.cat([scaled, scaled + torch.pi / 2.0], dim=-1))
        return self.mlp(enc)


class StackedEncoding(nn.Module):
    """torch.stack([sin, cos], -1) of a frequency grid, flattened (another common layout)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("bands", torch.tensor([1.0, 2.0, 4.0]))
        self.out = nn.Linear(2 * 3 * 2, 1)

    def forward(self, x):
        z = x.unsqueeze(-1) * self.bands  # [N, 2, 3]
        feats = torch.stack([torch.sin(z.reshape(x.shape[0], -1)), torch.cos(z.flatten(1))], dim=-1)
        return self.out(torch.tanh(feats.flatten(start_dim=1)))


CORPUS += [
    Case("mipnerf-pos-enc", MipNeRFEncoding, 3, [0]),
    Case("nerfstudio-encoding", NerfstudioEncoding, 2, [1]),
    Case("stacked-encoding", StackedEncoding, 2, {0: 2}),
]


class InvertedSphere(nn.Module):
    """NeRF++ background: inverted-sphere coordinates [x/r, 1/r] and normalized view directions."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4 + 3, 12), nn.Softplus(), nn.Linear(12, 2))

    def forward(self, x):
        pts, dirs = x[:, :3], x[:, 3:]
        r = pts.norm(dim=-1, keepdim=True) + 1.0
        dirs = F.normalize(dirs, dim=-1)
        return self.mlp(torch.cat([pts / r, 1.0 / r, dirs], dim=-1))


CORPUS += [Case("nerfpp-inverted-sphere", InvertedSphere, 6, [0, 4])]


class AnnealedBuffer(nn.Module):
    """The annealing weight as a buffer (BARF / Nerfies): w_k = (1 - cos(π·clamp(α - k, 0, 1)))/2 computed from
    the live buffer α, so annealing after compiling (``alpha.fill_(...)``) is seen by the compiled networks."""

    def __init__(self, freqs=3):
        super().__init__()
        self.freqs = freqs
        self.register_buffer("alpha", torch.tensor(1.5))
        self.out = nn.Sequential(nn.Linear(2 + 4 * freqs, 12), nn.Tanh(), nn.Linear(12, 1))

    def forward(self, x):
        k = torch.arange(self.freqs, dtype=x.dtype)
        w = (1 - torch.cos(math.pi * torch.clamp(self.alpha - k, 0.0, 1.0))) / 2
        z = x[..., None] * (2.0**k)  # [N, 2, freqs]
        feats = torch.cat([torch.sin(z) * w, torch.cos(z) * w], -1).reshape(x.shape[0], -1)
        return self.out(torch.cat([x, feats], -1))


CORPUS += [Case("annealed-buffer", AnnealedBuffer, 2, [0])]


# --- normalisation layers ---------------------------------------------------------------------------------


class PreLNResidualMLP(nn.Module):
    """Pre-LayerNorm residual blocks (transformer-style MLP heads of coordinate networks), a Gaussian
    erf-smoothed gate and an rsqrt-scaled output."""

    def __init__(self, d=3, width=12, blocks=2):
        super().__init__()
        self.inp = nn.Linear(d, width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(blocks))
        self.fcs = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        h = self.inp(x)
        for norm, fc in zip(self.norms, self.fcs):
            h = h + torch.tanh(fc(norm(h)))
        gate = 0.5 * (1 + torch.erf(h / math.sqrt(2.0)))
        return self.out(F.layer_norm(h * gate, (h.shape[-1],), eps=1e-3)) * torch.rsqrt(1 + x[:, :1] ** 2)


class BatchNormMLP(nn.Module):
    """Linear → BatchNorm1d → softplus (DeepSDF-like heads trained with batch norm), used in eval mode."""

    def __init__(self, d=2, width=10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, width), nn.BatchNorm1d(width), nn.Softplus(), nn.Linear(width, width), nn.BatchNorm1d(width)
        )
        self.out = nn.Linear(width, 1)
        with torch.no_grad():  # as after training: running statistics away from (0, 1)
            for m in self.net:
                if isinstance(m, nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.3, 0.3)

    def forward(self, x):
        return self.out(torch.atan(self.net(x)))


CORPUS += [
    Case("pre-layernorm-residual", PreLNResidualMLP, 3, {0: 1, 2: 1}),
    Case("batchnorm-eval", lambda: _eval(BatchNormMLP()), 2, {0: 2}),
]
