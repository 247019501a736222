"""The pipeline: frontend -> Program (Φ IR + derived grad IR) -> backend source -> loaded modules.

``compile_source`` stays on the torch-free side (text in, text out) and knows no backend in
particular (``backends.get_backend``); ``compile`` executes the generated source (the verified text
itself, never a file from a cache) and instantiates the two networks with shared parameters.
``compile_module`` (the torch.fx frontend) lives in ``frontends/fx.py`` and meets this pipeline at
``Program``.
"""

from __future__ import annotations

import builtins
import hashlib
import linecache
import sys
import types
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .backends import get_backend
from .core.ir import IRGraph, format_graph
from .core.program import Program, make_program
from .errors import CompileError
from .frontends.spec import NetworkSpec, load_spec
from .frontends.spec_build import build_integral
from .runtime.fileio import atomic_write_text  # noqa: F401 - re-exported (the CLI and older callers)


@dataclass(frozen=True)
class CompiledSource:
    """Everything the compiler produces before torch is involved."""

    program: Program
    source: str
    report: dict[str, Any]
    spec: NetworkSpec | None = None  # the YAML frontend's validated spec (None for other frontends)

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


def program_from_spec(spec: Any) -> tuple[Program, NetworkSpec]:
    """The YAML frontend: spec (path, YAML text, dict) -> Program."""
    spec = load_spec(spec)
    program = make_program(
        build_integral(spec),
        name=spec.ident,
        dtype=spec.dtype,
        wrt=spec.integrate,
        seed=spec.seed,
        source=spec.source,
    )
    return program, spec


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
    return CompiledSource(program, source, _report(program.integral, program.grad))


def compile_source(spec: Any, backend: str | None = None, *, fuse: bool = True) -> CompiledSource:
    """Spec (path, YAML text, dict) -> graphs and generated module source.

    ``fuse`` turns the grad network's elementwise regions into fused autograd Functions with
    sympy-derived backwards (fewer kernels and saved tensors); ``False`` emits one op per node."""
    program, spec = program_from_spec(spec)
    backend = backend or spec.backend
    options = {"fuse": fuse} if backend == "torch" else {}
    cs = generate_source(program, backend, **options)
    return CompiledSource(cs.program, cs.source, cs.report, spec)


def _report(integral: IRGraph, grad: IRGraph) -> dict[str, Any]:
    # the grad network is derived from every pointwise function of Phi: a kink in Phi's activations is a
    # kink or a jump (or, pruned away, a Dirac delta) in the grad network
    fns = [
        (g.attrs(n)["fn"].label, g.attrs(n)["fn"])
        for g in (integral, grad)
        for n in g.order()
        if g.op(n) == "pointwise"
    ]
    nonsmooth = sorted({label for label, f in fns if not f.smooth})
    discontinuous = sorted({label for label, f in fns if not f.continuous})
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
# Loading generated source
# ---------------------------------------------------------------------------------------------------


def load_module(name: str, source: str):
    """Execute generated source as a module named ``autoint_generated.<name>_<digest>``.

    The text itself is compiled and run (no file is imported, so no stale or forged ``.pyc`` can
    stand in for it, and no cache folder is needed); ``linecache`` holds the text so tracebacks and
    ``inspect`` show its lines."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    modname = f"autoint_generated.{name}_{digest}"
    if modname in sys.modules:
        return sys.modules[modname]
    filename = f"<autoint_generated/{name}_{digest}.py>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(modname)
    module.__file__ = filename
    sys.modules.setdefault("autoint_generated", _namespace())
    sys.modules[modname] = module
    try:
        exec(builtins.compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - our own generated text
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _namespace():
    mod = types.ModuleType("autoint_generated")
    mod.__path__ = []  # a package, so 'autoint_generated.x' names resolve for pickle
    return mod


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
    spec: NetworkSpec | None = None  # None for a traced nn.Module
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
            raise ValueError(f"orders must map integration variables {list(self.orders)} to integers >= 0, "
                             f"got {orders}")
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
            program = make_program(self.program.integral, name=f"{self.name}_d{''.join(f'{v}{k}' for v, k in key)}",
                                   dtype=self.program.dtype, wrt=wrt)
            cs = generate_source(program, self.backend)
            module = load_module(cs.name, cs.source)
            cache[key] = module.GradNet.from_integral(self.integral)
        return cache[key]

    def integrate(self, lower, upper, x=None, *, f=None, samples=None, sampler=None, generator=None):
        """∫ of f = ``self.grad`` over the box ``lower``..``upper`` ([N, n_vars], one column per distinct
        integration variable); other inputs from ``x`` ([N, D]). Closed form: the antiderivative of
        orders (k_i − 1) at the 2ⁿ corners (inclusion–exclusion); for order 1 that is Φ itself.

        With ``f`` (a callable [M, D] -> [M, out], the signal the grad network was fitted to) and
        ``samples=N``: an ``IntegralEstimate`` (``.value``, ``.stderr``, ``.ci(level)``), the closed
        form plus the Monte Carlo mean of f − grad over the box, unbiased for ∫ f
        (``runtime/estimate.py``; ``sampler``: uniform, stratified or sobol)."""
        if f is not None or samples is not None or sampler is not None or generator is not None:
            from .runtime.estimate import corrected

            return corrected(self, lambda: self.integrate(lower, upper, x), lower, upper, x,
                             f=f, samples=samples, sampler=sampler, generator=generator)
        if all(k == 1 for k in self.orders.values()):
            return self.integral.integrate(lower, upper, x)
        from .runtime.antiderivative import integrate

        return integrate(self, lower, upper, x)

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
    return CompiledNetwork(integral, grad, cs.program, cs.source, module, cs.report, cs.spec, backend)


def compile(  # noqa: A001 - the package's verb
    spec: Any, backend: str | None = None, *, seed: int | None = None, dtype=None, device=None, fuse: bool = True
):
    """Compile a spec (path, YAML string or dict) into a ``CompiledNetwork``.

    ``seed`` (default: the spec's ``seed``) makes the initial weights reproducible; ``dtype`` and
    ``device`` default to the spec's dtype and the CPU; ``fuse`` see ``compile_source``.
    """
    cs = compile_source(spec, backend, fuse=fuse)
    seed = cs.spec.seed if seed is None else seed
    return instantiate(cs, backend or cs.spec.backend, seed=seed, dtype=dtype, device=device)
