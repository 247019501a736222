"""The torch.fx frontend: a user's own ``nn.Module`` -> Φ's IR -> the same ``CompiledNetwork``.

``compile_module(module, in_features, integrate)`` traces the module (``fx_trace``: extra ``forward``
arguments bound, the module left exactly as it was), lowers the fx graph through the table of accepted
calls (``fx_calls``, ``fx_lower``) and binds the generated networks to **the module's own state**, read
live on every call (``fx_state``): an optimizer step on ``net.grad`` trains the user's module, and a
``load_state_dict``, an in-place edit or a replaced buffer is seen by ``net.integral`` and ``net.grad``.
Anything else is a ``CompileError`` naming the construct, the user's source line and what to write instead.

The input ``x`` [N, in_features] is split into named IR inputs: each integration column ``c`` is an
input ``x<c>`` of width 1, the other columns are grouped in contiguous runs (``x<a>_<b>``).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import nn

from ..arguments import check_backend, check_dtype, check_flag, check_precision
from ..core.differentiate import orders_problem
from ..core.names import safe_identifier
from ..core.program import Program, make_program
from ..errors import CompileError
from .fx_lower import Lowering
from .fx_state import LiveState, reads
from .fx_trace import EXAMPLE_BATCH, Bound, DictInput, trace  # noqa: F401 - DictInput: the dict-input adapter

WHERE = "compile_module"


class ZeroGradWarning(UserWarning):
    """The compiled grad network is identically zero (e.g. a ReLU network differentiated twice)."""


def _orders(integrate, in_features: int) -> dict[int, int]:
    """``integrate``: column indices, or a mapping column -> order; total order within the shared budget."""
    if isinstance(integrate, dict):
        items = list(integrate.items())
    elif isinstance(integrate, (list, tuple)):
        items = [(c, 1) for c in integrate]
    else:
        raise CompileError(
            f"{WHERE}: integrate must be a list of input columns or a mapping column -> order, got {integrate!r}"
        )
    orders: dict[int, int] = {}
    for col, k in items:
        if isinstance(col, bool) or not isinstance(col, int) or not 0 <= col < in_features:
            raise CompileError(f"{WHERE}: integrate names column {col!r}, expected an index in 0..{in_features - 1}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise CompileError(f"{WHERE}: order of column {col} must be a positive integer, got {k!r}")
        orders[col] = orders.get(col, 0) + k
    if not orders:
        raise CompileError(f"{WHERE}: integrate must name at least one input column")
    if (problem := orders_problem(orders)) is not None:  # the one budget both frontends enforce
        raise CompileError(f"{WHERE}: integrate: {problem}")
    return orders


def _module_dtype(module: nn.Module) -> torch.dtype | None:
    from .fx_trace import all_tensors

    dtypes = {t.dtype for _, t in all_tensors(module) if t.is_floating_point()}
    if len(dtypes) > 1:
        raise CompileError(
            f"{WHERE}: the module mixes dtypes {sorted(map(str, dtypes))}: convert it to one "
            "(module.double() or module.float())"
        )
    return dtypes.pop() if dtypes else None


def trace_module(
    module: nn.Module,
    in_features: int,
    integrate,
    *,
    dtype=None,
    name: str | None = None,
    forward_kwargs: dict | None = None,
    output=None,
) -> tuple[Program, LiveState]:
    """Trace ``module`` into a Program; also returns the live binding of its state (``fx_state``)."""
    if not isinstance(module, nn.Module):
        raise CompileError(f"{WHERE}: expected an nn.Module, got {type(module).__name__}")
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise CompileError(f"{WHERE}: in_features must be a positive integer, got {in_features!r}")
    orders = _orders(integrate, in_features)
    if forward_kwargs is not None and not isinstance(forward_kwargs, dict):
        raise CompileError(
            f"{WHERE}: forward_kwargs must be a dict of forward's extra arguments, got {type(forward_kwargs).__name__}"
        )
    if output is not None and (isinstance(output, bool) or not isinstance(output, (int, str))):
        raise CompileError(f"{WHERE}: output must be an index (tuple return) or a key (dict return), got {output!r}")
    dtype = check_dtype(dtype, WHERE)
    own = _module_dtype(module)
    if dtype is not None and own is not None and str(own) != f"torch.{dtype}":
        raise CompileError(
            f"{WHERE}: dtype={dtype} but the module's tensors are {own}: the compiled networks read the module's "
            f"own tensors, so convert the module (module.to(torch.{dtype})) instead of passing dtype="
        )
    dtype = dtype or ("float64" if own == torch.float64 else "float32")
    display = safe_identifier(name or type(module).__name__.lower(), default="module")
    p = next(iter(module.parameters()), None)
    gen = torch.Generator().manual_seed(0)  # the user's random generator is left alone
    example = torch.rand(EXAMPLE_BATCH, in_features, dtype=getattr(torch, dtype), generator=gen) * 2 - 1
    if p is not None:
        example = example.to(p.device)
    traced = trace(module, forward_kwargs or {}, type(module).__name__, example)
    lowering = Lowering(traced, in_features, orders, display, getattr(torch, dtype))
    _, out = lowering.run()
    integral = lowering.finish(out, output)
    from ..core.passes import dce

    integral = dce(integral)
    wrt = tuple(f"x{c}" for c, k in orders.items() for _ in range(k))
    constants = {r.path.removeprefix("inner."): r.value for r in traced.recorded}
    program = make_program(
        integral,
        name=display,
        dtype=dtype,
        wrt=wrt,
        source=f"<module {type(module).__name__}>",
        meta={"constants": constants},
    )
    live = LiveState(traced.root, lowering.bindings, traced.recorded, Lowering.display)
    return program, live


def _live_derivatives(net, live: LiveState):
    """``net.derivative`` whose lower-order networks (``net.integrate`` of higher orders uses them) read the
    module's state live too."""
    plain = type(net).derivative

    def derivative(orders):
        d = plain(net, orders)
        if "_autoint_live_attrs" not in d.__dict__:
            live.install(d, [a for a in live.bindings if reads(d, a)], owner=False)
        return d

    derivative.__doc__ = plain.__doc__
    return derivative


def _identically_zero(program: Program) -> bool:
    g = program.grad
    return all(g.op(o) == "constant" and not any(g.attrs(o)["value"]) for o in g.graph["outputs"])


def compile_module(
    module: nn.Module,
    in_features: int,
    integrate,
    *,
    dtype=None,
    backend: str | None = None,
    name: str | None = None,
    fuse: bool = True,
    precision: str | None = None,
    forward_kwargs: dict | None = None,
    output=None,
):
    """Compile a user's ``nn.Module`` (Φ, taking x [N, in_features]) into a ``CompiledNetwork`` whose
    ``.integral`` computes the module and whose ``.grad`` is ∂Φ/∂x[:, c] for the columns in ``integrate``
    (a list of column indices, or a mapping column -> order), reading the module's own state live.

    ``forward_kwargs`` binds extra ``forward`` arguments (others take their defaults); ``output`` picks
    the tensor of a tuple (index) or dict (key) return; a module taking a dict is compiled through
    ``DictInput(module, key)``. ``report['constants']`` lists the Python attributes compiled in."""
    from ..compiler import generate_source, instantiate

    backend = check_backend(backend, WHERE) or "torch"
    check_flag(fuse, "fuse", WHERE)
    precision = check_precision(precision, WHERE) or "fp32"
    program, live = trace_module(
        module, in_features, integrate, dtype=dtype, name=name, forward_kwargs=forward_kwargs, output=output
    )
    if precision != "fp32":  # mixed precision of a float32 module (a float64 one refuses it)
        from ..core.program import check_precision as program_precision

        program = dataclasses.replace(program, precision=program_precision(precision, program.dtype))
    cs = generate_source(program, backend, **({"fuse": fuse} if backend == "torch" else {}))
    p = next(module.parameters(), None)
    net = instantiate(  # seeded: the placeholder init (replaced by the module's tensors) draws no user randomness
        cs,
        backend,
        seed=0,
        device=p.device if p is not None else None,
        dtype=torch.float64 if program.dtype == "float64" else torch.float32,
    )
    attrs = list(live.bindings)
    live.install(net.integral, attrs, owner=True)
    net.grad = type(net.grad).from_integral(net.integral)
    live.install(net.grad, [a for a in attrs if reads(net.grad, a)], owner=False)
    net.module_ref = module
    net.live = live
    net.derivative = _live_derivatives(net, live)
    net.report = {**net.report, "constants": dict(program.meta.get("constants", {}))}
    if _identically_zero(program):
        net.report["grad_identically_zero"] = True
        warnings.warn(
            f"compile_module: the grad network of {program.name} along {list(program.wrt)} is identically zero "
            f"(its activations' derivatives of this order vanish almost everywhere: "
            f"{', '.join(cs.report['nonsmooth_functions']) or 'no dependence on the integration columns'}); "
            "training it cannot change anything: use a smooth activation (e.g. softplus, SiLU, sine)",
            ZeroGradWarning,
            stacklevel=2,
        )
    return net
