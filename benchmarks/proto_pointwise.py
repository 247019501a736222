"""Prototype behind the suggestions in benchmarks/README.md ("Findings"): what the generated swish
grad network gains from (a) the fused aten kernels ``F.silu`` + ``aten.silu_backward`` in its fused
regions' forward, and (b) torch.compile'd *pointwise regions only* (the GEMMs stay eager) inside the
regions' autograd.Functions.  ``python -m benchmarks.proto_pointwise [--batch N] [--size 4x128]``.

Same weights as the compiled net (the hand-written modules' tensors); checked against autograd.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch.nn import functional as F

from . import methods as M
from . import nets, timing


def _pw_fwd(u0, u1):
    s = torch.sigmoid(u0)
    h = u0 * s
    return h, u1 * (s + h * (1 - s))


def _pw_bwd(u0, u1, g0, g1):
    s = torch.sigmoid(u0)
    d = s * (1 + u0 * (1 - s))  # swish'
    dd = s * (1 - s) * (2 + u0 * (1 - 2 * s))  # swish''
    return g0 * d + g1 * u1 * dd, g1 * d


_CF = _CB = None


class CompiledPointwise(torch.autograd.Function):
    """(h, ḣ) = (swish(z), swish'(z) ż); forward and backward bodies are torch.compile'd pointwise graphs."""

    @staticmethod
    def forward(ctx, u0, u1):
        ctx.save_for_backward(u0, u1)
        return _CF(u0, u1)

    @staticmethod
    def backward(ctx, g0, g1):
        u0, u1 = ctx.saved_tensors
        d0, d1 = _CB(u0, u1, g0, g1)
        return d0, (d1.sum_to_size(u1.shape) if d1.shape != u1.shape else d1)


class AtenPointwise(torch.autograd.Function):
    """Forward by two fused aten kernels (F.silu, aten.silu_backward); backward as CompiledPointwise."""

    @staticmethod
    def forward(ctx, u0, u1):
        ctx.save_for_backward(u0, u1)
        return F.silu(u0), torch.ops.aten.silu_backward(u1.expand_as(u0), u0)

    @staticmethod
    def backward(ctx, g0, g1):
        return CompiledPointwise.backward(ctx, g0, g1)


def grad_net(hand, col, fn):
    def f(x):
        w = hand.weights[0]
        z = F.linear(x, w, hand.biases[0])
        zd = w[:, col].unsqueeze(0)
        for k in range(1, len(hand.weights)):
            h, hd = fn.apply(z, zd)
            w = hand.weights[k]
            z = F.linear(h, w, hand.biases[k])
            zd = F.linear(hd, w)
        return zd

    return f


def main(argv=None) -> int:
    global _CF, _CB
    p = argparse.ArgumentParser(prog="python -m benchmarks.proto_pointwise")
    p.add_argument("--size", default="4x128")
    p.add_argument("--batch", type=int, default=2**14)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    _CF = torch.compile(_pw_fwd, dynamic=True, fullgraph=True)
    _CB = torch.compile(_pw_bwd, dynamic=True, fullgraph=True)
    b = nets.build(a.size, "swish")
    x = nets.make_inputs(a.batch, b.in_features, seed=1)
    tg = M.make_target(x)
    ref = M.forward_fn(b, M.FWD_AUTOGRAD)(x)
    variants = {"eager + compiled pointwise regions": grad_net(b.hand, b.col, CompiledPointwise),
                "silu + aten.silu_backward regions": grad_net(b.hand, b.col, AtenPointwise)}
    with torch.no_grad():
        for k, f in variants.items():
            print(f"{k}: max|diff| vs autograd {(f(x) - ref).abs().max().item():.2e}")

    def nog(f):
        def g():
            with torch.no_grad():
                return f(x)
        return g

    fw = {"generated (net.grad)": nog(M.forward_fn(b, M.FWD_GENERATED)),
          "plain MLP forward": nog(M.forward_fn(b, M.FWD_PLAIN))}
    fw.update({k: nog(f) for k, f in variants.items()})
    st = timing.time_interleaved(fw, warmup=3, repeats=9)
    plain = st["plain MLP forward"].median
    print(f"\nforward, {a.size} swish batch {a.batch}, {a.threads} threads")
    for k, v in st.items():
        print(f"  {k:42s} {v.median:8.2f} ms  x plain {v.median / plain:.2f}")

    def mk(pred):
        opt = torch.optim.Adam(b.params, lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            F.mse_loss(pred(x), tg).backward()
            opt.step()

        return step

    steps = {m: M.train_step_fn(b, m, x, tg) for m in (M.TR_GENERATED, M.TR_DOUBLE, M.TR_GENERATED_COMPILE)}
    steps["eager + compiled pointwise regions"] = mk(variants["eager + compiled pointwise regions"])
    st = timing.time_interleaved(steps, warmup=2, repeats=7, between=b.restore)
    b.restore()
    dbl = st[M.TR_DOUBLE].median
    print("\ntraining step")
    for k, v in st.items():
        print(f"  {k:50s} {v.median:8.2f} ms  double backward / this {dbl / v.median:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
