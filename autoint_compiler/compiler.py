"""The pipeline: spec -> IR -> grad IR -> source -> loaded modules.

``compile_source`` stays on the torch-free side (text in, text out); ``compile`` loads the generated
module with importlib and instantiates the two networks with shared parameters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from . import activations as A
from .build import build_integral
from .derive import derive
from .errors import CompileError
from .ir import IRGraph, format_graph
from .spec import NetworkSpec, load_spec


@dataclass(frozen=True)
class CompiledSource:
    """Everything the compiler produces before torch is involved."""

    spec: NetworkSpec
    integral_ir: IRGraph
    grad_ir: IRGraph
    source: str
    report: dict[str, Any]

    @property
    def name(self) -> str:
        return self.spec.ident

    def files(self) -> dict[str, str]:
        """File name -> text, as ``autoint-compile`` writes them."""
        return {
            f"{self.name}.py": self.source,
            f"{self.name}.integral.ir": format_graph(self.integral_ir),
            f"{self.name}.grad.ir": format_graph(self.grad_ir),
        }


def compile_source(spec: Any, backend: str | None = None, *, fuse: bool = True) -> CompiledSource:
    """Spec (path, YAML text, dict) -> graphs and generated module source.

    ``fuse`` turns the grad network's elementwise regions into fused autograd Functions with
    sympy-derived backwards (fewer kernels and saved tensors); ``False`` emits one op per node."""
    spec = load_spec(spec)
    backend = backend or spec.backend
    if backend == "triton":
        raise CompileError("backend 'triton': the Triton backend is not available in this version (use 'torch')")
    if backend != "torch":
        raise CompileError(f"unknown backend {backend!r} (expected 'torch' or 'triton')")
    integral = build_integral(spec)
    grad = derive(integral, list(spec.integrate))
    grad.lint()
    from .backends.torch_backend import generate  # noqa: PLC0415 - keeps import order light

    source = generate(spec, integral, grad, __version__, fuse=fuse)
    return CompiledSource(spec, integral, grad, source, _report(integral, grad))


def _report(integral: IRGraph, grad: IRGraph) -> dict[str, Any]:
    # the grad network is derived from every pointwise function of Phi: a kink in Phi's activations is a
    # kink or a jump (or, pruned away, a Dirac delta) in the grad network
    fns = [(g.attrs(n)["label"], A.lookup(g.attrs(n)["fn"])) for g in (integral, grad) for n in g.order()
           if g.op(n) == "pointwise"]
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


def cache_dir() -> Path:
    root = os.environ.get("AUTOINT_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autoint_compiler"


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_module(name: str, source: str):
    """Import generated source as a module (written to the cache so tracebacks show its lines)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    modname = f"autoint_generated.{name}_{digest}"
    if modname in sys.modules:
        return sys.modules[modname]
    path = cache_dir() / f"{name}_{digest}.py"
    if not path.is_file() or path.read_text(encoding="utf-8") != source:
        atomic_write_text(path, source)
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("autoint_generated", _namespace())
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _namespace():
    import types

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
    spec: NetworkSpec
    integral_ir: IRGraph
    grad_ir: IRGraph
    source: str
    module: Any
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.ident

    @property
    def spec_hash(self) -> str:
        return self.spec.hash

    @property
    def in_features(self) -> int:
        return self.spec.in_features

    @property
    def out_features(self) -> int:
        return self.module.OUT_FEATURES

    @property
    def integration_columns(self) -> list[int]:
        return list(self.spec.integration_columns)

    def integrate(self, lower, upper, x=None):
        """∫ over the integration variables from ``lower`` to ``upper`` ([N, n_vars]); other inputs
        from ``x`` ([N, D]). Uses Φ at the 2ⁿ corners (inclusion–exclusion)."""
        return self.integral.integrate(lower, upper, x)

    def compile_pointwise(self, **options) -> "CompiledNetwork":
        """Run the grad network's fused elementwise regions as ``torch.compile``d kernels, GEMMs eager
        (module-wide for this spec; needs inductor, i.e. a C++ compiler on CPU). A no-op without fusion."""
        if hasattr(self.module, "compile_pointwise"):
            self.module.compile_pointwise(**options)
        return self

    def to(self, *args, **kwargs) -> "CompiledNetwork":
        self.integral.to(*args, **kwargs)  # grad reads the same module, so it moves too
        return self

    def parameters(self):
        return self.integral.parameters()

    def __repr__(self) -> str:
        return (
            f"CompiledNetwork({self.name!r}, in_features={self.in_features}, out_features={self.out_features}, "
            f"integrate={list(self.spec.integrate)}, grad_nodes={self.grad_ir.number_of_nodes()})"
        )


def compile(  # noqa: A001 - the package's verb
    spec: Any, backend: str | None = None, *, seed: int | None = None, dtype=None, device=None, fuse: bool = True
):
    """Compile a spec (path, YAML string or dict) into a ``CompiledNetwork``.

    ``seed`` (default: the spec's ``seed``) makes the initial weights reproducible; ``dtype`` and
    ``device`` default to the spec's dtype and the CPU; ``fuse`` see ``compile_source``.
    """
    import torch

    cs = compile_source(spec, backend, fuse=fuse)
    module = load_module(cs.name, cs.source)
    seed = cs.spec.seed if seed is None else seed
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
    return CompiledNetwork(integral, grad, cs.spec, cs.integral_ir, cs.grad_ir, cs.source, module, cs.report)
