"""One contract, every backend: the public contract of DESIGN.md checked the same way for the torch
backend and the Triton backend (under the Triton interpreter on CPU), one row per (spec, backend).

Oracles are independent of the backend under test: the integral network against the IR interpreter
(numpy float64), the grad network against nested ``torch.func.jvp`` of the torch backend's Φ with the
same weights, and
``integrate`` against Gauss-Legendre quadrature of the grad network over the box (float64 specs, so
tolerances are tight).
"""

from __future__ import annotations

import copy
import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from conftest import REPO_ROOT  # noqa: E402

import autoint_compiler as ac  # noqa: E402
from autoint_compiler.core import interpret  # noqa: E402

BACKENDS = ["torch", "triton"]


def _spec(example: str, integrate) -> dict:
    spec = yaml.safe_load((REPO_ROOT / "examples" / f"{example}.yaml").read_text())
    spec.pop("backend", None)
    spec["dtype"] = "float64"
    spec["integrate"] = integrate
    if "mlp" in spec:  # interpreter-sized: the contract, not the throughput
        spec["mlp"]["hidden"] = [min(h, 16) for h in spec["mlp"]["hidden"]][:3]
    return spec


#: (example, integrate): order 1 in one and two variables, repeated, mixed repeated, three variables
CASES = [
    ("oned_poly", ["t"]),
    ("oned_poly", {"t": 2}),
    ("box2d", ["u", "v"]),
    ("box2d", {"u": 2, "v": 1}),
    ("graph_mix", {"t": 2}),
    ("field3d", ["t"]),
    ("field3d", {"t": 2}),
]


def _net(example, integrate, backend):
    if backend == "triton":
        pytest.importorskip("triton", reason="triton is not installed (make setup installs it)")
    return ac.compile(_spec(example, integrate), backend=backend, seed=0)


def _nested_jvp(phi, x, columns):
    """∂^k Φ / ∂x_c1 ... ∂x_ck by nested forward-mode products of the backend's own Φ."""

    def d(f, c):
        e = torch.zeros_like(x)
        e[:, c] = 1.0
        return lambda z: torch.func.jvp(f, (z,), (e,))[1]

    f = phi
    for c in columns:
        f = d(f, c)
    return f(x)


def _quadrature(grad, lower, upper, x, columns):
    """∫ over the box of grad (float64): composite Gauss-Legendre, 8 points on each of 32 pieces of
    [-1, 1] for one variable (positional encodings oscillate), 16 points per dimension for two."""
    n = len(columns)
    base, bw = np.polynomial.legendre.leggauss(8 if n == 1 else 16)
    pieces = 32 if n == 1 else 1
    edges = np.linspace(-1, 1, pieces + 1)
    nodes = np.concatenate([(a + b) / 2 + (b - a) / 2 * base for a, b in zip(edges, edges[1:])])
    weights = np.concatenate([(b - a) / 2 * bw for a, b in zip(edges, edges[1:])])
    nodes, weights = torch.tensor(nodes), torch.tensor(weights)
    points = len(nodes)
    grids = torch.meshgrid(*[torch.arange(points)] * n, indexing="ij")
    idx = torch.stack([g.reshape(-1) for g in grids], 1)  # [P^n, n]: one batched call for every node
    half, mid = (upper - lower) / 2, (upper + lower) / 2  # [N, n]
    p = x.repeat(len(idx), 1)  # node-major: rows q*N .. q*N + N - 1 are node q
    w = torch.ones(len(idx), x.shape[0], 1, dtype=torch.float64)
    for k, c in enumerate(columns):
        t_k = nodes[idx[:, k]][:, None]  # [P^n, 1]
        p[:, c] = (mid[:, k][None, :] + half[:, k][None, :] * t_k).reshape(-1)
        w = w * (weights[idx[:, k]][:, None] * half[:, k][None, :])[..., None]
    with torch.no_grad():
        values = grad(p).view(len(idx), x.shape[0], -1)
    return (w * values).sum(0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("example,integrate", CASES, ids=[f"{e}-{i}" for e, i in CASES])
def test_contract(example, integrate, backend):
    net = _net(example, integrate, backend)
    torch.manual_seed(1)
    n = 3
    x = torch.rand(n, net.in_features, dtype=torch.float64) * 2 - 1

    # Φ is the IR: the interpreter evaluates the same graph with the module's own parameters
    with torch.no_grad():
        phi = net.integral(x)
    params = {k: v.detach().numpy() for k, v in net.integral.named_parameters()}
    ref = interpret.run(net.integral_ir, x.numpy(), params)
    np.testing.assert_allclose(phi.numpy(), ref, rtol=1e-9, atol=1e-10)

    # the grad network is the derivative of Φ along the integration columns: nested jvp of the torch
    # backend's Φ loaded with the same weights (a Triton kernel's autograd.Function has no jvp)
    wrt_columns = [net.integration_columns[list(net.orders).index(v)] for v in net.program.wrt]
    ref_phi = ac.compile(_spec(example, integrate), backend="torch").integral
    ref_phi.load_state_dict(net.integral.state_dict())
    truth = _nested_jvp(ref_phi, x, wrt_columns)
    with torch.no_grad():
        g = net.grad(x)
    assert g.shape == (n, net.out_features)
    torch.testing.assert_close(g, truth, rtol=1e-8, atol=1e-9)

    # integrate: the closed form equals quadrature of the grad network over the box
    k = len(net.orders)
    lower = torch.rand(n, k, dtype=torch.float64) - 1
    upper = lower + torch.rand(n, k, dtype=torch.float64) * 0.8 + 0.2
    closed = net.integrate(lower, upper, x)
    quad = _quadrature(net.grad, lower, upper, x, net.integration_columns)
    torch.testing.assert_close(closed, quad, rtol=1e-7, atol=1e-8)

    # GradNet registers exactly what it reads, as Φ's own tensors: every one gets a gradient
    phi_ids = {id(p) for p in net.integral.parameters()}
    gparams = list(net.grad.parameters())
    assert gparams and all(id(p) in phi_ids for p in gparams)
    (net.grad(x) ** 2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gparams)

    # a step on the grad network's parameters changes Φ (shared tensors)
    before = copy.deepcopy(net.integral.state_dict())
    torch.optim.SGD(gparams, lr=0.1).step()
    changed = [k for k, v in net.integral.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
