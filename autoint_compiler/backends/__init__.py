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
    attribute names, shapes, whether it has a bias, the uniform init bounds as float literals and
    ``note``, a comment saying where the bounds come from."""
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
            note=init_note(name, p),
        )
        for name, p in sorted(params.items())
    ]


def init_note(name: str, p) -> str:
    """``# U(-b, b), b = 1/sqrt(39) (1/sqrt(fan_in): nn.Linear's default)``: the rule behind a parameter's
    init bounds, recognised from the numbers (the frontends' rules: nn.Linear, Xavier, SIREN)."""
    notes = [_bound_rule(p.weight_bound, p.inp, p.out)]
    if p.bias and p.bias_bound != p.weight_bound:
        notes.append("bias " + _bound_rule(p.bias_bound, p.inp, p.out))
    return "# U(-b, b), b = " + "; ".join(notes)


def _bound_rule(b: float, fan_in: int, fan_out: int) -> str:
    import math

    def near(v: float) -> bool:
        return math.isclose(b, v, rel_tol=1e-12)

    if b == 0.0:
        return "0"
    if near(1.0 / math.sqrt(fan_in)):
        return f"1/sqrt({fan_in}) (1/sqrt(fan_in): nn.Linear's default)"
    if near(math.sqrt(6.0 / (fan_in + fan_out))):
        return f"sqrt(6/({fan_in} + {fan_out})) (Xavier)"
    if near(1.0 / fan_in):
        return f"1/{fan_in} (SIREN's first layer: 1/fan_in)"
    w0 = math.sqrt(6.0 / fan_in) / b
    if abs(w0 - round(w0, 3)) < 1e-9 * w0:
        return f"sqrt(6/{fan_in})/{round(w0, 3):g} (SIREN: sqrt(6/fan_in)/w0)"
    return "as the frontend chose"
