"""Shared test helpers: references for the grad network.

Everything here is a plain helper function (names prefixed so they do not collide with other test
modules' helpers); no autouse fixtures, no hypothesis profile, so importing this file changes nothing
for the test modules that do not use it.

References for ``net.grad`` (∂ⁿΦ/∂t1..∂tn):
- ``jvp_reference``: nested ``torch.func.jvp`` of ``net.integral`` along each integration column
  (forward-mode autodiff of Φ by torch itself: exact up to rounding, independent of our rules);
- ``fd_reference``: float64 central finite differences of ``net.integral`` on the 2ⁿ-point tensor
  stencil, optionally Richardson-extrapolated (see the error analysis in its docstring).
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------------
# Spec helpers
# ---------------------------------------------------------------------------------------------------


def ac_mlp_spec(
    name="t",
    inputs=None,
    integrate=("t",),
    hidden=(6, 5),
    activation="tanh",
    output=2,
    encoding=None,
    skips=(),
    seed=0,
    **extra,
):
    """A float64 MLP spec dict (small widths), with the given overrides."""
    spec = {
        "name": name,
        "inputs": dict(inputs or {"y": 2, "t": 1, "s": 1}),
        "integrate": list(integrate),
        "output": output,
        "dtype": "float64",
        "seed": seed,
        "mlp": {"hidden": list(hidden), "activation": activation, "skips": list(skips)},
    }
    if encoding is not None:
        spec["mlp"]["encoding"] = encoding
    spec.update(extra)
    return spec


def ac_graph_spec(nodes, inputs=None, integrate=("t",), name="g", seed=0):
    """A float64 graph-form spec dict."""
    return {
        "name": name,
        "inputs": dict(inputs or {"y": 2, "t": 1, "s": 1}),
        "integrate": list(integrate),
        "dtype": "float64",
        "seed": seed,
        "graph": [dict(n) for n in nodes],
    }


def ac_compile(spec, seed=None):
    """``autoint_compiler.compile`` in float64 (import deferred so collection stays cheap)."""
    import torch

    import autoint_compiler as ac

    return ac.compile(spec, seed=seed, dtype=torch.float64)


def ac_inputs(net, n=16, seed=0, low=-1.0, high=1.0):
    """``[n, in_features]`` float64 samples, uniform in [low, high)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, net.in_features, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------
# References for the grad network
# ---------------------------------------------------------------------------------------------------


def jvp_reference(net, x, columns=None):
    """∂ⁿΦ/∂x[c1]..∂x[cn] by nesting ``torch.func.jvp`` of ``net.integral`` once per column."""
    import torch

    columns = list(net.integration_columns if columns is None else columns)

    def along(f, col):
        def df(z):
            e = torch.zeros_like(z)
            e[:, col] = 1.0
            return torch.func.jvp(f, (z,), (e,))[1]

        return df

    f = net.integral
    for col in columns:
        f = along(f, col)
    return f(x).detach()


def fd_reference(net, x, h, columns=None, richardson=False):
    """Central finite differences of ``net.integral`` along the integration columns (float64).

    One column: D(h) = (Φ(x+h) − Φ(x−h)) / 2h. Several: the tensor-product stencil over the 2ⁿ
    corners, Σ ±Φ / (2h)ⁿ, the mixed partial.

    Error: the stencil is symmetric, so its truncation error is an even series c₂h² + c₄h⁴ + ...,
    c₂ ≈ (1/6)·Σ ∂³-derivatives of Φ (for one column |c₂| ≈ |Φ‴|/6); rounding adds about
    2ⁿ·ε·|Φ|/(2h)ⁿ with ε = 2.2e-16 (see ``fd_rounding_allowance``). With ``richardson=True`` the
    result is (4·D(h/2) − D(h))/3, which cancels the h² term (error O(h⁴)), so a larger h keeps the
    rounding small for mixed partials.
    """
    import torch

    columns = list(net.integration_columns if columns is None else columns)

    def stencil(step):
        points, signs = [], []
        for corner in itertools.product((1.0, -1.0), repeat=len(columns)):
            p = x.clone()
            for s, col in zip(corner, columns):
                p[:, col] = x[:, col] + s * step
            points.append(p)
            signs.append(math.prod(corner))
        with torch.no_grad():
            vals = net.integral(torch.cat(points, 0)).view(len(points), x.shape[0], -1)
        sig = vals.new_tensor(signs).view(-1, 1, 1)
        return (vals * sig).sum(0) / (2 * step) ** len(columns)

    if not richardson:
        return stencil(h)
    return (4 * stencil(h / 2) - stencil(h)) / 3


def fd_rounding_allowance(net, x, h, n_vars, richardson, safety=16.0):
    """An upper bound on the rounding error of ``fd_reference``: each of the 2ⁿ values of Φ carries
    an error of a few ε·|Φ| (``safety`` of them, generous for these small networks), divided by the
    stencil width (2h)ⁿ; Richardson's (4·D(h/2) − D(h))/3 multiplies the D(h/2) part by 4/3."""
    import torch

    with torch.no_grad():
        phi = net.integral(x).abs().max().item()
    eps = torch.finfo(torch.float64).eps
    if richardson:
        return safety * (4 / 3 + 1 / 3 / 2**n_vars) * 2**n_vars * eps * phi / h**n_vars
    return safety * 2**n_vars * eps * phi / (2 * h) ** n_vars


def fd_step(n_vars):
    """(h, richardson) used for ``n_vars`` mixed partials; justification in ``fd_reference``.

    n=1: plain central difference, h=1e-4: truncation |Φ‴|h²/6 ≈ 2e-9·|Φ‴|, rounding
         ε|Φ|/h ≈ 2e-12·|Φ|: both far below a 1e-5 relative tolerance for O(1)-frequency nets.
    n=2: Richardson, h=4e-3: truncation O(h⁴·∂⁶Φ) ≈ 3e-10·|∂⁶Φ|, rounding ≈ 4ε|Φ|/(2e-3·2)² ≈ 6e-11·|Φ|.
    n=3: Richardson, h=1e-2: truncation ≈ 1e-8·|∂⁷Φ|, rounding ≈ 8ε|Φ|/(1e-2)³ ≈ 2e-9·|Φ|.
    For a network whose frequency content is Ω (∂ᵏΦ ~ Ωᵏ), divide h by √Ω: truncation grows like
    (Ωh)⁴ and rounding like 1/hⁿ, and √Ω balances the two (measured: < 1e-6 relative for Ω ≤ 60).
    """
    return {1: (1e-4, False), 2: (4e-3, True), 3: (1e-2, True)}[n_vars]


def assert_fd_close(net, x, g, tol, what="", h_scale=1.0, floor=1e-3):
    """``g`` (the grad network at ``x``) against finite differences: the error must stay below
    tol·max(|FD|, floor) plus the rounding allowance of the stencil."""
    n = len(net.integration_columns)
    h, rich = fd_step(n)
    h = h * h_scale
    fd = fd_reference(net, x, h, richardson=rich)
    allowance = fd_rounding_allowance(net, x, h, n, rich)
    scale = max(fd.abs().max().item(), floor)
    err = (g - fd).abs().max().item()
    assert err <= tol * scale + allowance, (
        f"{what}: grad vs finite differences: max error {err:.3e} > {tol:.0e}·{scale:.3e} + rounding {allowance:.1e}"
    )


def ac_max_rel_err(actual, expected, floor=1e-3):
    """max |actual − expected| / max(max |expected|, floor): one number to compare to a tolerance."""
    import torch

    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    assert torch.isfinite(actual).all(), "non-finite values in the result"
    scale = max(expected.abs().max().item(), floor)
    return (actual - expected).abs().max().item() / scale


def assert_rel_close(actual, expected, tol, what="", floor=1e-3):
    err = ac_max_rel_err(actual, expected, floor)
    assert err <= tol, f"{what}: max relative error {err:.3e} > {tol:.1e}"


# ---------------------------------------------------------------------------------------------------
# Subprocesses
# ---------------------------------------------------------------------------------------------------


def ac_subprocess_env(**extra):
    """Environment for a child interpreter that imports the repo's package (and nothing else new)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def autograd_reference(net, x, create_graph=True):
    """∂ⁿΦ/∂t1..∂tn by nested reverse-mode ``torch.autograd.grad`` with ``create_graph`` (the double
    backward the grad network exists to avoid): differentiable w.r.t. the parameters, so it also
    gives reference parameter gradients for a loss on the grad network."""
    import torch

    x = x.detach().requires_grad_(True)
    phi = net.integral(x)
    outs = []
    for j in range(phi.shape[1]):
        g = phi[:, j]
        for col in net.integration_columns:
            (gx,) = torch.autograd.grad(g.sum(), x, create_graph=create_graph)
            g = gx[:, col]
        outs.append(g)
    return torch.stack(outs, 1)
