"""``Program``: the one object every backend consumes and every frontend produces.

A frontend (the YAML spec, the torch.fx tracer) builds Φ's IR; ``make_program`` derives the grad
network and packs both graphs with everything a backend needs to emit code: the name (a safe
identifier), dtype, the input layout, the integration variables (repeated for higher order) and their
columns, and a hash of the architecture. Torch-free, picklable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import CompileError
from .ir import IRGraph, format_graph


@dataclass(frozen=True)
class Program:
    name: str  # safe Python identifier: module and class prefix
    integral: IRGraph  # Φ
    grad: IRGraph  # ∂^k Φ / ∂t1 ... ∂tk
    dtype: str  # "float32" | "float64"
    inputs: tuple[tuple[str, int, int], ...]  # (name, start, stop): the columns of x
    wrt: tuple[str, ...]  # integration variables, in derivation order (repeated for higher order)
    seed: int | None = None
    source: str = "<program>"  # where it came from: a spec file, "<module MyNet>", ...
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: GEMM inputs and activations: "fp32" | "tf32" | "bf16" | "fp16"; parameters and accumulation stay
    #: in ``dtype`` (mixed precision). Not part of the architecture hash (like dtype)
    precision: str = "fp32"

    @property
    def in_features(self) -> int:
        return max((stop for _, _, stop in self.inputs), default=0)

    @property
    def out_features(self) -> int:
        (o,) = self.integral.graph["outputs"]
        return self.integral.width(o)

    @property
    def variables(self) -> tuple[str, ...]:
        """The distinct integration variables, in first-appearance order."""
        return tuple(dict.fromkeys(self.wrt))

    @property
    def orders(self) -> dict[str, int]:
        return {v: self.wrt.count(v) for v in self.variables}

    @property
    def integration_columns(self) -> tuple[int, ...]:
        cols = {name: start for name, start, _ in self.inputs}
        return tuple(cols[v] for v in self.variables)

    @property
    def hash(self) -> str:
        """Architecture hash: the IR text of Φ and the variables. The name (the graph's title line),
        init scheme, seed, dtype and backend are left out: renaming a spec or changing how it is
        initialised keeps its checkpoints loadable; every change of shape or function changes it."""
        body = format_graph(self.integral).split("\n", 1)[1]  # without "graph <name>.integral"
        text = body + "\nwrt=" + ",".join(self.wrt)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def legacy_hash(self) -> str:
        """The hash as written by earlier versions (it covered the name): still accepted on load."""
        text = format_graph(self.integral) + "\nwrt=" + ",".join(self.wrt)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_program(
    integral: IRGraph,
    *,
    name: str,
    dtype: str,
    wrt,
    seed: int | None = None,
    source: str = "<program>",
    meta: dict | None = None,
    precision: str = "fp32",
) -> Program:
    """Φ's IR (from any frontend) -> a linted ``Program`` with its derived grad network."""
    from .differentiate import derive

    check_precision(precision, dtype)

    integral.lint()
    wrt = tuple(wrt)
    grad = derive(integral, list(wrt))
    grad.lint()
    inputs = tuple((n, a, b) for n, (a, b) in integral.graph["inputs"].items())
    return Program(name, integral, grad, dtype, inputs, wrt, seed, source, dict(meta or {}), precision)


#: the precisions a program may run at (DESIGN.md, "Precision")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def check_precision(precision, dtype: str = "float32") -> str:
    """``precision`` validated (a ``CompileError`` naming what is allowed): reduced precision is a
    float32 feature; a float64 program runs in float64."""
    if precision not in PRECISIONS:
        raise CompileError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if dtype == "float64" and precision != "fp32":
        raise CompileError(f"precision {precision!r} needs dtype float32 (parameters and accumulation in float32), "
                           "got dtype float64")
    return precision
