"""The methods compared: ways to evaluate dΦ/dt (grad-network forward) and to train on it."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch.nn import functional as F

from .nets import Bench

# ---------------------------------------------------------------------------------------------------
# 1. grad-network forward.  Each factory returns fn(x) -> [N, out] (dΦ/dt), or raises.
#    Inference setting: torch.no_grad() wherever the method does not itself need autograd.
# ---------------------------------------------------------------------------------------------------
FWD_GENERATED = "generated (net.grad)"
FWD_AUTOGRAD = "autograd.grad(create_graph=False)"
FWD_JVP = "torch.func.jvp"
FWD_JACFWD = "torch.func.vmap(jacfwd)"
FWD_HAND = "hand-written primal+tangent"
FWD_HAND_FUSED = "hand-written, fused swish' kernel"
FWD_PLAIN = "plain MLP forward (net.integral)"
FWD_METHODS = [FWD_GENERATED, FWD_AUTOGRAD, FWD_JVP, FWD_JACFWD, FWD_HAND, FWD_HAND_FUSED, FWD_PLAIN]


class NotApplicable(Exception):
    """The method does not exist for this configuration (e.g. a swish-only variant on a sine net)."""


def _one_hot(x: torch.Tensor, col: int) -> torch.Tensor:
    e = torch.zeros_like(x)
    e[:, col] = 1.0
    return e


def forward_fn(b: Bench, method: str) -> Callable[[torch.Tensor], torch.Tensor]:
    phi, col = b.phi, b.col
    if method == FWD_GENERATED:
        def fn(x):
            with torch.no_grad():
                return b.grad(x)
    elif method == FWD_AUTOGRAD:
        if b.out_features != 1:
            raise NotImplementedError("autograd baseline written for out_features == 1")

        def fn(x):
            with torch.enable_grad():
                xr = x.detach().requires_grad_(True)
                y = phi(xr)
                (gx,) = torch.autograd.grad(y.sum(), xr)
            return gx[:, col:col + 1]
    elif method == FWD_JVP:
        def fn(x):
            with torch.no_grad():
                return torch.func.jvp(phi, (x,), (_one_hot(x, col),))[1]
    elif method == FWD_JACFWD:
        jac = torch.func.vmap(torch.func.jacfwd(lambda xi: phi(xi.unsqueeze(0)).squeeze(0)))

        def fn(x):
            with torch.no_grad():
                return jac(x)[:, :, col]  # [N, out, D] -> [N, out]
    elif method == FWD_HAND:
        if b.hand is None:
            raise RuntimeError(b.hand_status)

        def fn(x):
            with torch.no_grad():
                return b.hand(x)
    elif method == FWD_HAND_FUSED:
        if b.hand_fused is None:
            raise NotApplicable("fused variant exists for swish only")

        def fn(x):
            with torch.no_grad():
                return b.hand_fused(x)
    elif method == FWD_PLAIN:
        def fn(x):
            with torch.no_grad():
                return phi(x)
    else:
        raise KeyError(method)
    return fn


# ---------------------------------------------------------------------------------------------------
# 2. training step on the grad network: forward + MSE + backward + Adam step.
# ---------------------------------------------------------------------------------------------------
TR_GENERATED = "generated eager"
TR_GENERATED_COMPILE = "generated + torch.compile"
TR_DOUBLE = "double backward (autograd.grad create_graph=True)"
TR_DOUBLE_COMPILE = "double backward + torch.compile"
TR_FUNC = "torch.func.jvp (backward through jvp)"
TR_HAND = "hand-written eager"
TR_HAND_COMPILE = "hand-written + torch.compile"
TR_HAND_FUSED = "hand-written, fused swish' (custom autograd.Function) eager"
TR_GENERATED_PW = "generated, torch.compile'd pointwise regions (GEMMs eager)"
TRAIN_METHODS = [TR_GENERATED, TR_GENERATED_COMPILE, TR_GENERATED_PW, TR_DOUBLE, TR_DOUBLE_COMPILE, TR_FUNC,
                 TR_HAND, TR_HAND_COMPILE, TR_HAND_FUSED]
COMPILE_METHODS = {TR_GENERATED_COMPILE, TR_GENERATED_PW, TR_DOUBLE_COMPILE, TR_HAND_COMPILE}


class _PointwiseKernels:
    """Swaps the generated module's region kernels for torch.compile'd ones during a call (forward and
    backward), so the eager method measured in the same process keeps its eager kernels."""

    def __init__(self, b: Bench):
        self.mod = getattr(b.net, "module", None)
        if self.mod is None or not hasattr(self.mod, "EAGER_KERNELS"):
            raise NotApplicable("the generated module has no fused regions")
        self.compiled = {k: torch.compile(f, dynamic=True, fullgraph=True) for k, f in self.mod.EAGER_KERNELS.items()}

    def __enter__(self):
        self.mod.KERNELS.update(self.compiled)

    def __exit__(self, *exc):
        self.mod.KERNELS.update(self.mod.EAGER_KERNELS)


def pred_fn(b: Bench, method: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> dΦ/dt with autograd to the parameters (what the loss is built on)."""
    phi, col = b.phi, b.col

    def double(x):
        xr = x.detach().requires_grad_(True)
        y = phi(xr)
        (gx,) = torch.autograd.grad(y.sum(), xr, create_graph=True)
        return gx[:, col:col + 1]

    if method in (TR_GENERATED, TR_GENERATED_PW):
        return b.grad
    if method == TR_GENERATED_COMPILE:
        return torch.compile(b.grad)
    if method == TR_DOUBLE:
        if b.out_features != 1:
            raise NotImplementedError("double-backward baseline written for out_features == 1")
        return double
    if method == TR_DOUBLE_COMPILE:
        return torch.compile(double)
    if method == TR_FUNC:
        return lambda x: torch.func.jvp(phi, (x,), (_one_hot(x, col),))[1]
    if method in (TR_HAND, TR_HAND_COMPILE):
        if b.hand is None or b.hand_status:
            raise RuntimeError(b.hand_status or "no hand-written reference")
        return torch.compile(b.hand) if method == TR_HAND_COMPILE else b.hand
    if method == TR_HAND_FUSED:
        if b.hand_fused is None:
            raise NotApplicable("fused variant exists for swish only")
        if b.hand_status:
            raise RuntimeError(b.hand_status)
        return b.hand_fused
    raise KeyError(method)


def make_target(x: torch.Tensor) -> torch.Tensor:
    """A smooth target f(t, y) for the grad network to fit (values do not matter for timing)."""
    return (torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:2]) + 0.1 * x[:, -1:]).contiguous()


def train_step_fn(b: Bench, method: str, x: torch.Tensor, target: torch.Tensor, lr: float = 1e-4):
    """Returns step() -> loss tensor; one call = zero_grad + forward + MSE + backward + Adam step."""
    pred = pred_fn(b, method)
    opt = torch.optim.Adam(b.params, lr=lr)
    kernels = _PointwiseKernels(b) if method == TR_GENERATED_PW else contextlib.nullcontext()

    def step():
        with kernels:
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(pred(x), target)
            loss.backward()
            opt.step()
        return loss

    return step


def param_grads(b: Bench, method: str, x: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of the MSE loss wrt the parameters at the snapshot weights (for cross-checks)."""
    b.restore()
    pred = pred_fn(b, method)
    for p in b.params:
        p.grad = None
    with _PointwiseKernels(b) if method == TR_GENERATED_PW else contextlib.nullcontext():
        F.mse_loss(pred(x), target).backward()
    out = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in b.params]
    for p in b.params:
        p.grad = None
    return out
