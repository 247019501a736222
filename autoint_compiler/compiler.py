"""The pipeline: frontend -> Program (Φ IR + derived grad IR) -> backend source -> loaded modules.

``compile_source`` stays on the torch-free side (text in, text out) and knows no backend in
particular (``backends.get_backend``); ``compile`` executes the generated source (the verified text
itself, never a file from a cache) and instantiates the two networks with shared parameters.
``compile_module`` (the torch.fx frontend) lives in ``frontends/fx.py`` and meets this pipeline at
``Program``.
"""

from __future__ import annotations

import builtins
import dataclasses
import operator
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .backends import get_backend
from .core.ir import IRGraph, format_graph, nonsmooth_labels, pointwise_fns
from .core.program import Program, check_precision, make_program
from .errors import CompileError, SpecError
from .frontends.spec import load_spec
from .frontends.spec_build import build_integral
from .runtime.fileio import atomic_write_text  # noqa: F401 - re-exported (the CLI and older callers)
from .runtime.loader import load_module


@dataclass(frozen=True)
class CompiledSource:
    """Everything the compiler produces before torch is involved."""

    program: Program
    source: str
    report: dict[str, Any]
    backend: str = "torch"  # the backend that generated ``source``

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def integral_ir(self) -> IRGraph:
        return self.program.integral

    @property
    def grad_ir(self) -> IRGraph:
        return self.program.grad

    def files(self) -> dict[str, str]:
        """File name -> text, as ``autoint-compile`` writes them."""
        return {
            f"{self.name}.py": self.source,
            f"{self.name}.integral.ir": format_graph(self.integral_ir),
            f"{self.name}.grad.ir": format_graph(self.grad_ir),
        }


def program_from_spec(spec: Any) -> Program:
    """The YAML frontend: spec (path, YAML text, dict) -> Program. The spec stays in its frontend:
    the Program carries what later stages need of it in ``meta`` (``backend``, the spec's default,
    and ``spec_yaml``, the validated spec as reloadable YAML that run directories keep)."""
    spec = load_spec(spec)
    if spec.dtype == "float64" and spec.precision != "fp32":
        why = f"{spec.precision!r} needs dtype float32 (mixed precision keeps parameters and accumulation in float32)"
        raise SpecError(spec.source, [("precision", why + ", got dtype float64")])
    return make_program(
        build_integral(spec),
        name=spec.ident,
        dtype=spec.dtype,
        wrt=spec.integrate,
        seed=spec.seed,
        source=spec.source,
        precision=spec.precision,
        meta={"backend": spec.backend, "spec_yaml": spec.to_yaml()},
    )


def generate_source(program: Program, backend: str = "torch", **options) -> CompiledSource:
    """A Program -> the backend's module source, checked to be valid Python."""
    source = get_backend(backend).generate(program, version=__version__, **options)
    try:
        builtins.compile(source, f"<generated {program.name}>", "exec")
    except SyntaxError as exc:  # a backend bug, never the user's: say where
        raise CompileError(
            f"{backend} backend produced invalid Python for {program.name!r} at line "
            f"{exc.lineno}: {exc.msg}: {(exc.text or '').strip()[:80]}"
        ) from None
    return CompiledSource(program, source, _report(program.integral, program.grad), backend)


def compile_source(
    spec: Any, backend: str | None = None, *, fuse: bool = True, precision: str | None = None
) -> CompiledSource:
    """Spec (path, YAML text, dict) -> graphs and generated module source.

    ``fuse`` turns the grad network's elementwise regions into fused autograd Functions with
    sympy-derived backwards (fewer kernels and saved tensors); ``False`` emits one op per node.
    ``precision`` (``fp32 | tf32 | bf16 | fp16``) overrides the spec's ``precision``."""
    program = program_from_spec(spec)
    if precision is not None:
        program = dataclasses.replace(program, precision=check_precision(precision, program.dtype))
    backend = backend or program.meta["backend"]
    return generate_source(program, backend, **({"fuse": fuse} if backend == "torch" else {}))


def _report(integral: IRGraph, grad: IRGraph) -> dict[str, Any]:
    # the grad network is derived from every pointwise function of Phi: a kink in Phi's activations is a
    # kink or a jump (or, pruned away, a Dirac delta) in the grad network
    nonsmooth = nonsmooth_labels(integral, grad)
    discontinuous = sorted({f.label for f in pointwise_fns(integral, grad) if not f.continuous})
    params = sum(p.out * p.inp + (p.out if p.bias else 0) for p in integral.graph["params"].values())
    return {
        "integral_nodes": integral.number_of_nodes(),
        "grad_nodes": grad.number_of_nodes(),
        "parameters": params,
        "smooth": not nonsmooth,
        "nonsmooth_functions": nonsmooth,
        "discontinuous_functions": discontinuous,
    }


def format_report(cs: CompiledSource) -> str:
    r = cs.report
    lines = [
        f"{cs.name}: integral graph {r['integral_nodes']} nodes, grad graph {r['grad_nodes']} nodes, "
        f"{r['parameters']} parameters"
    ]
    if not r["smooth"]:
        lines.append(
            "  warning: the grad network is not smooth: "
            + ", ".join(r["nonsmooth_functions"])
            + (f" (discontinuous: {', '.join(r['discontinuous_functions'])})" if r["discontinuous_functions"] else "")
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The public object
# ---------------------------------------------------------------------------------------------------


@dataclass
class CompiledNetwork:
    """Φ and its grad network, sharing parameters. See DESIGN.md's public contract."""

    integral: Any
    grad: Any
    program: Program
    source: str
    module: Any
    report: dict[str, Any] = field(default_factory=dict)
    backend: str = "torch"

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def spec_hash(self) -> str:
        return self.program.hash

    @property
    def integral_ir(self) -> IRGraph:
        return self.program.integral

    @property
    def grad_ir(self) -> IRGraph:
        return self.program.grad

    @property
    def in_features(self) -> int:
        return self.program.in_features

    @property
    def out_features(self) -> int:
        return self.program.out_features

    @property
    def integration_columns(self) -> list[int]:
        return list(self.program.integration_columns)

    @property
    def orders(self) -> dict[str, int]:
        """Integration variable -> derivative order of the grad network (spec order)."""
        return dict(self.program.orders)

    def derivative(self, orders: dict[str, int]):
        """The network ∂^orders Φ (componentwise at most ``self.orders``), sharing Φ's parameters:
        all zeros is ``self.integral``, ``self.orders`` is ``self.grad``; others are compiled on first
        use from the same IR and backend (the lower-order antiderivatives of f = ``self.grad``)."""
        unknown = set(orders) - set(self.orders)
        if unknown or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in orders.values()):
            raise ValueError(
                f"orders must map integration variables {list(self.orders)} to integers >= 0, got {orders}"
            )
        full = {v: orders.get(v, 0) for v in self.orders}
        if any(full[v] > self.orders[v] for v in full):
            raise ValueError(f"orders {full} exceed the grad network's {self.orders}")
        key = tuple(full.items())
        if not any(full.values()):
            return self.integral
        if full == self.orders:
            return self.grad
        cache = self.__dict__.setdefault("_derivatives", {})
        if key not in cache:
            wrt = [v for v, k in full.items() for _ in range(k)]
            program = make_program(
                self.program.integral,
                name=f"{self.name}_d{''.join(f'{v}{k}' for v, k in key)}",
                dtype=self.program.dtype,
                wrt=wrt,
                precision=self.program.precision,
            )
            cs = generate_source(program, self.backend)
            module = load_module(cs.name, cs.source)
            cache[key] = module.GradNet.from_integral(self.integral)
        return cache[key]

    def integrate(self, lower, upper, x=None, *, f=None, samples=None, sampler=None, generator=None):
        """∫ of f = ``self.grad`` over the box ``lower``..``upper`` ([N, n_vars], one column per distinct
        integration variable); other inputs from ``x`` ([N, D]). Closed form: the antiderivative of
        orders (k_i − 1) at the 2ⁿ corners (inclusion–exclusion); for order 1 that is Φ itself.

        The bounds may also be Python numbers or sequences (a number is the same bound for every
        variable and row; ``[a1, a2]`` one row): they become tensors of the network's dtype and device,
        with as many rows as ``x`` has (one without ``x``).

        With ``f`` (a callable [M, D] -> [M, out], the signal the grad network was fitted to) and
        ``samples=N``: an ``IntegralEstimate`` (``.value``, ``.stderr``, ``.ci(level)``), the closed
        form plus the Monte Carlo mean of f − grad over the box, unbiased for ∫ f
        (``runtime/estimate.py``; ``sampler``: uniform, stratified or sobol)."""
        lower, upper = self._as_bounds("lower", lower, x), self._as_bounds("upper", upper, x)
        if f is not None or samples is not None or sampler is not None or generator is not None:
            from .runtime.estimate import corrected

            return corrected(self, lambda: self.integrate(lower, upper, x), lower, upper, x,
                             f=f, samples=samples, sampler=sampler, generator=generator)
        if all(k == 1 for k in self.orders.values()):
            return self.integral.integrate(lower, upper, x)
        from .runtime.antiderivative import integrate

        return integrate(self, lower, upper, x)

    def _as_bounds(self, name: str, value: Any, x: Any):
        """A bound given as a Python number, sequence or array, as a ``[N, n_vars]`` tensor (a tensor is
        passed on as it is: the integrators check its shape)."""
        import torch

        if isinstance(value, torch.Tensor):
            return value
        ref = next(iter(self.integral.parameters()), None)
        dtype = ref.dtype if ref is not None else torch.float32
        device = ref.device if ref is not None else None
        n = len(self.orders)
        try:
            t = torch.as_tensor(value, dtype=dtype, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"integrate: {name} must be a number, a sequence of {n} numbers or a tensor [N, {n}], "
                f"got {type(value).__name__} ({str(exc).splitlines()[0][:80] if str(exc) else ''})"
            ) from None
        rows = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() == 2 else 1
        if t.dim() == 0:
            return t.expand(rows, n).clone()
        if t.dim() == 1 and t.shape[0] == n:
            return t.unsqueeze(0).expand(rows, n).clone()
        return t  # [N, n] as given; other shapes are refused by the integrators with the shape named

    def compile_pointwise(self, **options) -> "CompiledNetwork":
        """Run the grad network's fused elementwise regions as ``torch.compile``d kernels, GEMMs eager
        (module-wide for this spec; needs inductor, i.e. a C++ compiler on CPU). A no-op without fusion."""
        if hasattr(self.module, "compile_pointwise"):
            self.module.compile_pointwise(**options)
        return self

    def to(self, *args, **kwargs) -> "CompiledNetwork":
        self.integral.to(*args, **kwargs)  # grad's parameters are the same tensors: they move too
        self.grad.to(*args, **kwargs)  # and its own constants
        return self

    def parameters(self):
        return self.integral.parameters()

    def __repr__(self) -> str:
        return (
            f"CompiledNetwork({self.name!r}, in_features={self.in_features}, out_features={self.out_features}, "
            f"integrate={list(self.program.wrt)}, grad_nodes={self.grad_ir.number_of_nodes()})"
        )


def instantiate(cs: CompiledSource, backend: str, *, seed=None, dtype=None, device=None) -> CompiledNetwork:
    """Load a compiled source and build the two networks (seeded init, shared parameters)."""
    import torch

    module = load_module(cs.name, cs.source)
    kw = {"device": device}
    if dtype is not None:
        kw["dtype"] = dtype
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            integral = module.IntegralNet(**kw)
    else:
        integral = module.IntegralNet(**kw)
    grad = module.GradNet.from_integral(integral)
    return CompiledNetwork(integral, grad, cs.program, cs.source, module, cs.report, backend)


#: the dtypes a network can be built in (``dtype=`` of :func:`compile`), by name
DTYPES = ("float32", "float64", "float16", "bfloat16")


def _check_arguments(fn: str, *, seed: Any, dtype: Any, device: Any, fuse: Any) -> tuple[Any, Any, Any]:
    """The keyword arguments of :func:`compile`, checked up front: returns ``(dtype, device, seed)``,
    dtype and device as torch objects (``None`` kept), or raises :class:`CompileError` naming the argument."""
    import torch

    from .frontends.spec import SEED_RANGE

    if seed is not None:
        try:
            if isinstance(seed, bool):
                raise TypeError
            seed = operator.index(seed)  # int, numpy integers
        except TypeError:
            raise CompileError(f"{fn}(): seed must be an integer or None, got {type(seed).__name__}") from None
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise CompileError(f"{fn}(): seed must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}, got {seed}")
    if not isinstance(fuse, bool):
        raise CompileError(f"{fn}(): fuse must be True or False, got {fuse!r}"[:200])
    if dtype is not None:
        name = dtype.removeprefix("torch.") if isinstance(dtype, str) else None
        if isinstance(dtype, torch.dtype):
            name = str(dtype).removeprefix("torch.")
        if name not in DTYPES:
            raise CompileError(
                f"{fn}(): dtype must be one of {', '.join(DTYPES)} (a torch.dtype or its name), got {dtype!r}"[:300]
            )
        dtype = getattr(torch, name)
    if device is not None:
        if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
            raise CompileError(
                f"{fn}(): device must be a string, an index or a torch.device, got {type(device).__name__}"
            )
        try:
            device = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CompileError(f"{fn}(): device {device!r}: {first}"[:300]) from None
    return dtype, device, seed


def compile(  # noqa: A001 - the package's verb
    spec: Any,
    backend: str | None = None,
    *,
    seed: int | None = None,
    dtype=None,
    device=None,
    fuse: bool = True,
    precision: str | None = None,
):
    """Compile a spec (path, YAML string or dict) into a ``CompiledNetwork``.

    ``seed`` (default: the spec's ``seed``) makes the initial weights reproducible; ``dtype`` and
    ``device`` default to the spec's dtype and the CPU (``dtype`` a floating ``torch.dtype`` or its
    name, ``"float64"`` and ``torch.float64`` alike); ``fuse`` see ``compile_source``; ``precision``
    (``fp32 | tf32 | bf16 | fp16``, default the spec's) the mixed-precision mode of the GEMMs and
    activations (parameters and accumulation stay float32). Arguments are checked before anything is
    compiled: a bad one is a one-line :class:`CompileError`.
    """
    from .arguments import check_backend  # shared with compile_module

    dtype, device, seed = _check_arguments("compile", seed=seed, dtype=dtype, device=device, fuse=fuse)
    cs = compile_source(spec, check_backend(backend, "compile"), fuse=fuse, precision=precision)
    seed = cs.program.seed if seed is None else seed
    return instantiate(cs, cs.backend, seed=seed, dtype=dtype, device=device)
