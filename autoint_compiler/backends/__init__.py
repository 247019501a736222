"""The backend registry: name -> module with ``generate(program, *, version, **options) -> str``.

A backend turns a ``Program`` into the source text of one standalone Python module holding
``IntegralNet`` and ``GradNet`` (``GradNet.from_integral(net)`` shares parameters) and the constants
``SPEC_HASH``, ``IN_FEATURES``, ``OUT_FEATURES``, ``INTEGRATION_COLUMNS`` and ``DTYPE``. The compile
pipeline looks backends up here and knows none in particular. Modules are imported on first use.
"""

from __future__ import annotations

import importlib

from ..errors import CompileError

BACKENDS: dict[str, str] = {
    "torch": "autoint_compiler.backends.torch_backend",
    "triton": "autoint_compiler.backends.triton_backend",
}


def get_backend(name: str):
    if name not in BACKENDS:
        raise CompileError(f"unknown backend {name!r} (expected one of: {', '.join(sorted(BACKENDS))})")
    try:
        return importlib.import_module(BACKENDS[name])
    except ModuleNotFoundError as exc:
        if exc.name == BACKENDS[name]:
            raise CompileError(f"backend {name!r} is not available in this version (use 'torch')") from None
        raise


def param_rows(params: dict, backend: str = "") -> list[dict]:
    """What a module template needs to declare and initialise each parameter (sorted by name): the
    attribute names, shapes, whether it has a bias and the uniform init bounds as float literals."""
    from ..core.names import param_attribute
    from .sympy_print import float_literal

    return [
        dict(
            weight=param_attribute(name, "weight"),
            bias_attr=param_attribute(name, "bias"),
            out=p.out,
            inp=p.inp,
            bias=p.bias,
            wb=float_literal(p.weight_bound, backend),
            bb=float_literal(p.bias_bound, backend),
        )
        for name, p in sorted(params.items())
    ]
