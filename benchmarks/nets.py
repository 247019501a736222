"""Building the benchmark networks: specs, the compiled net (or the stand-in), and the hand-written
primal+tangent reference that shares the compiled net's parameter tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

ROOT_DIR = Path(__file__).resolve().parent.parent  # the repository root (benchmarks' parent)

# name -> (depth, width); "4x128" = 4 hidden layers of 128 units (5 linear layers in all).
SIZES = {"4x64": (4, 64), "4x128": (4, 128), "8x256": (8, 256)}
ACTIVATIONS = ("swish", "sine")
SINE_W0 = 30.0


def parse_size(size: str) -> tuple[int, int]:
    """'4x128' -> (4 hidden layers, 128 wide); any 'DxW' works (the smoke test uses tiny ones)."""
    if size in SIZES:
        return SIZES[size]
    d, w = size.lower().split("x")
    return int(d), int(w)


def make_spec(size: str, activation: str, *, seed: int = 0, name: str | None = None) -> dict:
    depth, width = parse_size(size)
    spec = {
        "name": name or f"bench_{size}_{activation}",
        "inputs": {"t": 1, "y": 2},
        "integrate": ["t"],
        "output": 1,
        "mlp": {"hidden": [width] * depth, "activation": "swish"},
        "seed": seed,
    }
    if activation == "sine":
        spec["mlp"]["activation"] = {"name": "sine", "w0": SINE_W0}
        spec["init"] = "siren"
    elif activation != "swish":
        raise ValueError(activation)
    return spec


def compile_spec(spec: dict):
    """Returns (net, backend_name); a compile failure is an error, never a silent stand-in."""
    import autoint_compiler as ac

    return ac.compile(spec), "autoint_compiler"


# ---------------------------------------------------------------------------------------------------
# hand-written primal + tangent
# ---------------------------------------------------------------------------------------------------
def extract_linear_chain(module: nn.Module, in_features: int, out_features: int):
    """Find the MLP's (W, b) pairs among ``module``'s parameters, in registration order.

    Returns (pairs, transposed) where W is used as ``F.linear(h, W if not transposed else W.t(), b)``.
    Raises ValueError when the parameters do not form a plain linear chain.
    """
    params = list(dict.fromkeys(module.parameters()))  # unique, in order
    ws = [p for p in params if p.dim() == 2]
    bs = [p for p in params if p.dim() == 1]
    if not ws or len(ws) != len(bs):
        raise ValueError(f"not a plain MLP: {len(ws)} matrices, {len(bs)} vectors")
    for transposed in (False, True):
        mats = [w.t() if transposed else w for w in ws]  # as [out, in]
        ok = mats[0].shape[1] == in_features and mats[-1].shape[0] == out_features
        ok = ok and all(a.shape[0] == b.shape[1] for a, b in zip(mats[:-1], mats[1:]))
        ok = ok and all(m.shape[0] == b.shape[0] for m, b in zip(mats, bs))
        if ok:
            return list(zip(ws, bs)), transposed
    raise ValueError("parameter shapes do not chain as an MLP")


class SwishTangent(torch.autograd.Function):
    """ḣ = swish'(z) * ż in one fused kernel (aten.silu_backward computes exactly g * swish'(z)),
    with a hand-written backward (aten.silu_backward has no derivative of its own):
    d/dż = swish'(z) g,  d/dz = g ż swish''(z),  swish''(z) = s(1 - s)(2 + z(1 - 2s)).
    Saves only z and ż."""

    @staticmethod
    def forward(ctx, zd, z):
        ctx.save_for_backward(zd, z)
        return torch.ops.aten.silu_backward(zd, z)

    @staticmethod
    def backward(ctx, g):
        zd, z = ctx.saved_tensors
        g_zd = g_z = None
        if ctx.needs_input_grad[0]:
            g_zd = torch.ops.aten.silu_backward(g, z)
            if g_zd.shape != zd.shape:  # ż broadcast (first layer): reduce over the batch
                g_zd = g_zd.sum_to_size(zd.shape)
        if ctx.needs_input_grad[1]:
            s = torch.sigmoid(z)
            s2 = s * (1 - s)
            g_z = (g * zd) * s2 * torch.addcmul(torch.full_like(z, 2.0), z, 1 - 2 * s)
        return g_zd, g_z


class HandPrimalTangent(nn.Module):
    """Hand-written primal+tangent (forward-mode along e_col) of an MLP, sharing ``pairs``' tensors.

    z_1 = W_1 x + b_1, ż_1 = W_1[:, col] (a constant row, broadcast), then per hidden layer
    h = σ(z), ḣ = σ'(z) ż, z = W h + b, ż = W ḣ; returns ż of the last (linear) layer.
    swish: σ'(z) = s(1 + z(1 − s)) = s + h(1 − s), s = sigmoid(z);  sine: σ = sin(w0 z), σ' = w0 cos(w0 z).
    ``fused=True`` (swish only): ḣ by one fused kernel, see ``SwishTangent``.
    """

    def __init__(self, pairs, transposed: bool, activation: str, col: int, w0: float = SINE_W0,
                 fused: bool = False):
        super().__init__()
        self.fused = fused and activation == "swish"
        self.weights = nn.ParameterList([w for w, _ in pairs])  # same Parameter objects, not copies
        self.biases = nn.ParameterList([b for _, b in pairs])
        self.transposed = transposed
        self.activation = activation
        self.col = col
        self.w0 = w0

    def _w(self, k):
        w = self.weights[k]
        return w.t() if self.transposed else w

    def primal(self, x):
        h = x
        n = len(self.weights)
        for k in range(n):
            z = F.linear(h, self._w(k), self.biases[k])
            if k == n - 1:
                return z
            h = F.silu(z) if self.activation == "swish" else torch.sin(self.w0 * z)
        raise AssertionError

    def forward(self, x):
        n = len(self.weights)
        w = self._w(0)
        z = F.linear(x, w, self.biases[0])
        zd = w[:, self.col]  # ż_1 = W_1 e_col: the same for every row
        for k in range(1, n):
            if self.fused:
                h = F.silu(z)
                hd = SwishTangent.apply(zd, z)
            elif self.activation == "swish":
                s = torch.sigmoid(z)
                h = z * s
                hd = zd * torch.addcmul(s, h, 1 - s)
            else:
                wz = self.w0 * z
                h = torch.sin(wz)
                hd = zd * (self.w0 * torch.cos(wz))
            w = self._w(k)
            z = F.linear(h, w, self.biases[k])
            zd = F.linear(hd, w)
        return zd


# ---------------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """Everything one benchmark configuration needs."""

    spec: dict
    size: str
    activation: str
    net: object
    backend: str
    phi: nn.Module
    grad: nn.Module
    col: int
    in_features: int
    out_features: int
    hand: HandPrimalTangent | None = None
    hand_fused: HandPrimalTangent | None = None
    hand_status: str = ""
    params: list = field(default_factory=list)
    snapshot: list = field(default_factory=list)

    def restore(self) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, self.snapshot):
                p.copy_(s)


def build(size: str, activation: str, *, seed: int = 0, device: str = "cpu") -> Bench:
    spec = make_spec(size, activation, seed=seed)
    net, backend = compile_spec(spec)
    phi, grad = net.integral.to(device), net.grad.to(device)
    cols = list(net.integration_columns)
    params = list(dict.fromkeys([*phi.parameters(), *grad.parameters()]))
    b = Bench(spec=spec, size=size, activation=activation, net=net, backend=backend, phi=phi, grad=grad,
              col=cols[0], in_features=net.in_features, out_features=net.out_features, params=params,
              snapshot=[p.detach().clone() for p in params])
    try:
        pairs, transposed = extract_linear_chain(phi, b.in_features, b.out_features)
        hand = HandPrimalTangent(pairs, transposed, activation, b.col).to(device)
        x = make_inputs(256, b.in_features, device=device, seed=123)
        with torch.no_grad():
            ref = phi(x)
            got = hand.primal(x)
        err = (ref - got).abs().max().item() / (ref.abs().max().item() + 1e-12)
        if err > 1e-4:
            b.hand_status = f"hand-written primal differs from net.integral (rel {err:.2e}); convention mismatch"
        b.hand = hand
        if activation == "swish":
            b.hand_fused = HandPrimalTangent(pairs, transposed, activation, b.col, fused=True).to(device)
    except ValueError as exc:
        b.hand_status = f"no hand-written reference: {exc}"
    return b


def make_inputs(n: int, d: int, *, device: str = "cpu", seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g, dtype=dtype) * 2 - 1).to(device)


def double_copy(b: Bench):
    """A float64 copy of the net with the same weights (integral and grad sharing parameters).

    Returns (net64, "") or (None, reason).  The real compiler builds float64 modules itself
    (``ac.compile(spec, dtype=torch.float64)``); the weights are then copied from the float32 net.
    """
    try:
        import autoint_compiler as ac

        net = ac.compile(b.spec, dtype=torch.float64)
        net.integral.load_state_dict({k: v.detach().double() for k, v in b.phi.state_dict().items()})
        p = next(iter(net.integral.parameters()))
        if p.dtype != torch.float64:
            return None, f"float64 copy has dtype {p.dtype}"
        return net, ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
