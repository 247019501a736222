"""autoint_compiler: automatic integration (AutoInt) as a symbolic graph compiler.

A YAML spec describes an integral network Φ; the compiler builds its IR, derives the grad network
∂Φ/∂t (mixed partials for several variables) by forward-mode rules, and emits readable PyTorch
modules whose two networks share parameters. Train the grad network on a signal f, then
∫ₐᵇ f dt = Φ(b) − Φ(a).

The compiler proper (spec, IR, rules, derive, passes, codegen) does not import torch; ``compile``
imports it only to load the generated module.
"""

__version__ = "0.1.0"

from .errors import AutoIntError, CompileError, SpecError  # noqa: E402

__all__ = [
    "compile",
    "compile_module",
    "compile_source",
    "derive",
    "load_spec",
    "SpecError",
    "CompileError",
    "AutoIntError",
    "__version__",
]


def __getattr__(name):  # lazy: importing the package stays cheap and torch-free
    if name in ("compile", "compile_source", "CompiledNetwork", "CompiledSource"):
        from . import compiler

        return getattr(compiler, name)
    if name == "compile_module":
        from .frontends.fx import compile_module

        return compile_module
    if name == "derive":
        from .core.differentiate import derive

        return derive
    if name == "load_spec":
        from .frontends.spec import load_spec

        return load_spec
    raise AttributeError(f"module 'autoint_compiler' has no attribute {name!r}")
