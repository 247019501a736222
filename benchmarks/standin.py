"""A stand-in for ``autoint_compiler.compile`` on plain-MLP specs (swish or sine), used only while the
real compiler is not importable, or when ``--standin`` asks for it.  Rows measured with it say
``backend=standin`` so they are never mistaken for numbers of the generated code.

It follows the same maths as the generated code: primal z_k = W_k h + b_k, h = act(z), and tangent
ż_k = W_k ḣ, ḣ = act'(z) ż along e_t, written the straightforward way a code generator would.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn
from torch.nn import functional as F


def _act_of(spec: dict) -> tuple[str, float]:
    act = spec["mlp"].get("activation", "swish")
    if isinstance(act, dict):
        return act["name"], float(act.get("w0", 30.0))
    return act, 30.0


class StandinIntegral(nn.Module):
    def __init__(self, sizes: list[int], act: str, w0: float, init: str, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.act, self.w0 = act, w0
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if init == "siren":
                bound = 1.0 / n_in if i == 0 else math.sqrt(6.0 / n_in) / w0
            else:
                bound = 1.0 / math.sqrt(n_in)
            w = (torch.rand(n_out, n_in, generator=g) * 2 - 1) * bound
            b = (torch.rand(n_out, generator=g) * 2 - 1) / math.sqrt(n_in)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def _a(self, z):
        return F.silu(z) if self.act == "swish" else torch.sin(self.w0 * z)

    def forward(self, x):
        h = x
        n = len(self.weights)
        for k in range(n):
            z = F.linear(h, self.weights[k], self.biases[k])
            h = self._a(z) if k < n - 1 else z
        return h


class StandinGrad(nn.Module):
    def __init__(self, integral: StandinIntegral, col: int):
        super().__init__()
        self.integral = integral  # shares parameters
        self.col = col

    def forward(self, x):
        itg = self.integral
        h = x
        hd = torch.zeros_like(x)
        hd[:, self.col] = 1.0
        n = len(itg.weights)
        for k in range(n):
            z = F.linear(h, itg.weights[k], itg.biases[k])
            zd = F.linear(hd, itg.weights[k])
            if k == n - 1:
                return zd
            if itg.act == "swish":
                s = torch.sigmoid(z)
                h = z * s
                hd = s * (1 + z * (1 - s)) * zd
            else:
                h = torch.sin(itg.w0 * z)
                hd = itg.w0 * torch.cos(itg.w0 * z) * zd
        raise AssertionError


class StandinNet:
    backend_name = "standin"

    def __init__(self, spec: dict):
        self.spec = spec
        dims = list(spec["inputs"].values())
        names = list(spec["inputs"])
        self.in_features = sum(dims)
        self.out_features = int(spec.get("output", 1))
        starts = [sum(dims[:i]) for i in range(len(dims))]
        self.integration_columns = [starts[names.index(v)] for v in spec["integrate"]]
        if len(self.integration_columns) != 1:
            raise NotImplementedError("stand-in handles one integration variable")
        act, w0 = _act_of(spec)
        sizes = [self.in_features, *spec["mlp"]["hidden"], self.out_features]
        self.integral = StandinIntegral(sizes, act, w0, spec.get("init", "default"), int(spec.get("seed", 0)))
        self.grad = StandinGrad(self.integral, self.integration_columns[0])
        self.source = inspect.getsource(StandinIntegral) + "\n\n" + inspect.getsource(StandinGrad)

    def integrate(self, lower, upper, x):
        c = self.integration_columns[0]
        xb, xa = x.clone(), x.clone()
        xb[:, c] = upper[:, 0]
        xa[:, c] = lower[:, 0]
        return self.integral(xb) - self.integral(xa)


def compile(spec: dict) -> StandinNet:  # noqa: A001 - mirrors ac.compile
    return StandinNet(spec)
