"""Every op, and every activation, is complete by construction: its definition (``core/ops.py``) carries an
``example``, which is built into a small network and RUN through the reference interpreter and every
registered backend (``backends.BACKENDS``: torch, and Triton under ``TRITON_INTERPRET=1``), first and
second order. A backend that cannot lower the op fails here, naming the op and the backend, instead of
a user's compile.

Oracles: the interpreter (numpy float64, its own evaluation table) for Φ and the grad network; nested
``torch.func.jvp`` of the torch backend's Φ (torch's own autodiff, independent of the JVP and Taylor
rules) for the grad network; plain autograd through the unfused torch module for the parameter
gradients of a loss on the grad network (each backend's backward kernels are sympy-derived).
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from autoint_compiler.backends import BACKENDS  # noqa: E402
from autoint_compiler.compiler import generate_source, load_module  # noqa: E402
from autoint_compiler.core import interpret, ops, passes  # noqa: E402
from autoint_compiler.core.activations import ACTIVATIONS, activation  # noqa: E402
from autoint_compiler.core.ir import Builder, IRGraph, ParamInfo  # noqa: E402
from autoint_compiler.core.program import make_program  # noqa: E402

#: the derivatives each example is compiled for: first order, mixed second order, repeated (Taylor mode)
ORDERS = {"d/dt": ("t",), "d2/dtds": ("t", "s"), "d2/dt2": ("t", "t")}
#: an activation's argument: h in (-1, 1) scaled to (-2, 2) (both branches of a kink), positive for log
DOMAIN = {"log": lambda b, h: b.add(h, b.const([1.5] * 3))}
TOL = 1e-9  # float64 everywhere: only the order of summation differs


def example_graph(example) -> IRGraph:
    """Φ = lo(example(b, h, t)), h = tanh(l0([t, s, y])): inputs t, s (width 1) and y (width 2);
    parameter ``l0`` [3, 4] is there for examples to share (``ops.Example``)."""
    g = IRGraph()
    g.graph["params"]["l0"] = ParamInfo(out=3, inp=4, bias=True, weight_bound=0.8, bias_bound=0.5)
    g.graph["inputs"].update({"t": (0, 1), "s": (1, 2), "y": (2, 4)})
    b = Builder(g)
    t, s, y = b.input("t", 0, 1), b.input("s", 1, 2), b.input("y", 2, 4)
    h = b.pointwise(b.linear(b.concat([t, s, y]), "l0"), activation("tanh"))
    e = example(b, h, t)
    g.graph["params"]["lo"] = ParamInfo(out=1, inp=g.width(e), bias=True, weight_bound=0.8, bias_bound=0.5)
    g.graph["outputs"] = [b.linear(e, "lo")]
    return passes.dce(g)


def _jvp(f, x, columns):
    """∂ⁿf/∂x[c1]..∂x[cn] by nested torch.func.jvp (forward-mode autodiff by torch itself)."""
    for col in columns:

        def df(z, f=f, col=col):
            e = torch.zeros_like(z)
            e[:, col] = 1.0
            return torch.func.jvp(f, (z,), (e,))[1]

        f = df
    return f(x)


def _close(got, want, what):
    got = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    want = np.asarray(want.detach() if isinstance(want, torch.Tensor) else want, dtype=np.float64)
    assert np.isfinite(want).all(), f"{what}: the reference is not finite"
    err = np.abs(got - want).max() / max(1e-3, float(np.abs(want).max()))
    assert err <= TOL, f"{what}: relative error {err:.2e} > {TOL}"


def _grad_of(p):
    return torch.zeros_like(p) if p.grad is None else p.grad.clone()  # None: it does not reach the loss


def check_everywhere(label: str, example, wrt) -> set[str]:
    """Compile the example for ``wrt`` with every backend and compare; returns the ops of Φ and grad."""
    program = make_program(example_graph(example), name="ex_" + label, dtype="float64", wrt=wrt)
    x = -1.0 + 2.0 * torch.rand(
        13, program.in_features, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    cols = [dict((n, a) for n, a, _ in program.inputs)[v] for v in wrt]

    reference = generate_source(program, "torch", fuse=False)  # plain autograd: the reference module
    ref_mod = load_module(program.name, reference.source)
    torch.manual_seed(0)
    ref = ref_mod.IntegralNet()
    params = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    phi = interpret.run(program.integral, x.numpy(), params)
    grad = interpret.run(program.grad, x.numpy(), params)
    _close(ref(x), phi, f"{label}: torch Φ vs the interpreter")
    _close(_jvp(ref, x, cols), grad, f"{label} {wrt}: the interpreter's grad network vs torch.func.jvp of Φ")
    ref_grad = ref_mod.GradNet.from_integral(ref)
    (ref_grad(x) ** 2).sum().backward()
    ref_pgrads = {n: _grad_of(p) for n, p in ref.named_parameters()}

    for backend in sorted(BACKENDS):
        for options in ({"fuse": True},) if backend == "torch" else ({},):
            what = f"{label} {wrt}, {backend} backend"
            try:
                cs = generate_source(program, backend, **options)
            except Exception as exc:  # name the op and the backend, whatever the backend raised
                pytest.fail(f"{what}: cannot lower the example: {exc}")
            mod = load_module(f"{program.name}_{backend}", cs.source)
            net = mod.IntegralNet()
            net.load_state_dict(ref.state_dict())
            gnet = mod.GradNet.from_integral(net)
            for fused in (True, False) if hasattr(mod, "FUSE_NETWORK") else (None,):
                if fused is not None:
                    mod.FUSE_NETWORK = fused
                with torch.no_grad():
                    _close(net(x), phi, f"{what}: Φ")
                    _close(gnet(x), grad, f"{what}: grad network")
            (gnet(x) ** 2).sum().backward()
            for n, p in net.named_parameters():
                _close(_grad_of(p), ref_pgrads[n], f"{what}: gradient of a grad-network loss for {n}")
    return {g.op(n) for g in (program.integral, program.grad) for n in g.nodes}


@pytest.mark.parametrize("order", sorted(ORDERS))
@pytest.mark.parametrize("op", sorted(ops.OPS))
def test_every_op_runs_on_every_backend(op, order):
    d = ops.OPS[op]
    assert d.example is not None, f"op {op!r} has no example (example= in its defop, core/ops.py)"
    used = check_everywhere(op, d.example, ORDERS[order])
    assert op in used, f"op {op!r}: its example builds no {op} node (folded away?); write one that does"


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_runs_on_every_backend(name):
    arg = DOMAIN.get(name, lambda b, h: b.scale(h, 2.0))
    check_everywhere(name, lambda b, h, t: b.pointwise(arg(b, h), activation(name)), ("t", "t"))


@pytest.mark.parametrize("op", sorted(ops.OPS))
def test_every_op_definition_is_whole(op):
    """The pieces of the definition itself; a gap names the op and the piece."""
    d = ops.OPS[op]
    missing = []
    if d.jvp is None:
        missing.append("a JVP rule (@defjvp in ops.py)")
    if not d.linear and d.jet is None:
        missing.append("a Taylor-mode rule for a nonlinear op (@defjet in ops.py)")
    if d.show is None and d.printed is None and d.attrs:
        missing.append("a printed form for its attributes (show= in ops.py)")
    if d.example is None:
        missing.append("an example (example= in ops.py)")
    assert not missing, f"op {op!r} lacks: " + "; ".join(missing)
