"""The checks of the arguments ``compile`` and ``compile_module`` share (one place, one message each)."""

from __future__ import annotations

from .errors import CompileError

DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def check_dtype(dtype, where: str) -> str | None:
    """``None``, ``"float32"``/``"float64"`` or ``torch.float32``/``torch.float64`` -> the name (or None)."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype in DTYPES:
            return dtype
    else:
        import torch

        named = {torch.float32: "float32", torch.float64: "float64"}
        if isinstance(dtype, torch.dtype) and dtype in named:
            return named[dtype]
    raise CompileError(f"{where}: dtype must be torch.float32, torch.float64, 'float32' or 'float64', got {dtype!r}")


def torch_dtype(name: str | None):
    if name is None:
        return None
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def check_backend(backend, where: str) -> str | None:
    if backend is None or backend in ("torch", "triton"):
        return backend
    raise CompileError(f"{where}: backend must be 'torch' or 'triton', got {backend!r}")


def check_precision(precision, where: str, supported: tuple[str, ...] = PRECISIONS) -> str | None:
    """``precision=`` is one of ``PRECISIONS``; the values this build's code generators honour are
    ``supported`` (others are refused by name, never silently run in float32)."""
    if precision is None:
        return None
    if precision not in PRECISIONS:
        raise CompileError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision not in supported:
        raise CompileError(
            f"{where}: precision={precision!r} is not supported by this build's code generators "
            f"(supported: {', '.join(supported)})"
        )
    return precision


def check_flag(value, name: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise CompileError(f"{where}: {name} must be True or False, got {value!r}")
    return value
