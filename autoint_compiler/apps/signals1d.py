"""Analytic 1-D signals with closed-form antiderivatives (no data download needed).

Every signal works on torch tensors (any dtype/device) and on floats/NumPy arrays (via
``numpy()``), and knows its domain. ``F`` is *an* antiderivative: ``F' = f``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = ["Signal1D", "polynomial", "gaussians", "SIGNALS", "get_signal"]


@dataclass(frozen=True)
class Signal1D:
    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    F: Callable[[torch.Tensor], torch.Tensor]
    domain: tuple[float, float]
    description: str = ""
    params: dict = field(default_factory=dict)

    def definite(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Exact ``\u222b_a^b f``."""
        return self.F(b) - self.F(a)

    def numpy(self, t) -> np.ndarray:
        return self.f(torch.as_tensor(np.asarray(t, dtype=np.float64))).numpy()

    def numpy_F(self, t) -> np.ndarray:
        return self.F(torch.as_tensor(np.asarray(t, dtype=np.float64))).numpy()


# AutoInt (Lindell et al. 2021), 1-D experiment: f(t) = 0.1t^5 - 0.2t^4 + 0.2t^3 - 0.4t^2 + 0.1t
_POLY = (0.1, -0.2, 0.2, -0.4, 0.1, 0.0)  # coefficients of t^5 ... t^0


def _poly_f(t: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(t)
    for c in _POLY:
        out = out * t + c
    return out


def _poly_F(t: torch.Tensor) -> torch.Tensor:
    # integrate term by term: c_k t^k -> c_k t^(k+1) / (k+1); Horner with a trailing 0 constant.
    coeffs = [c / (5 - i + 1) for i, c in enumerate(_POLY)] + [0.0]
    out = torch.zeros_like(t)
    for c in coeffs:
        out = out * t + c
    return out


def polynomial() -> Signal1D:
    return Signal1D(
        name="poly",
        f=_poly_f,
        F=_poly_F,
        domain=(-1.0, 2.0),
        description="0.1t^5 - 0.2t^4 + 0.2t^3 - 0.4t^2 + 0.1t on [-1, 2] (AutoInt, Fig. 2)",
    )


# A sum of Gaussian bumps: f(t) = sum_k a_k exp(-(t - m_k)^2 / (2 s_k^2)),
# F(t) = sum_k a_k s_k sqrt(pi/2) erf((t - m_k) / (s_k sqrt 2)).
_GAUSS = ((1.0, -0.4, 0.15), (-0.6, 0.5, 0.25), (0.8, 1.0, 0.1), (0.5, 1.5, 0.3))  # (a, m, s)


def _gauss_f(t: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(t)
    for a, m, s in _GAUSS:
        out = out + a * torch.exp(-((t - m) ** 2) / (2 * s * s))
    return out


def _gauss_F(t: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(t)
    for a, m, s in _GAUSS:
        out = out + a * s * math.sqrt(math.pi / 2) * torch.erf((t - m) / (s * math.sqrt(2.0)))
    return out


def gaussians() -> Signal1D:
    terms = " + ".join(f"{a:g}*N({m:g},{s:g})" for a, m, s in _GAUSS)
    return Signal1D(
        name="gaussians",
        f=_gauss_f,
        F=_gauss_F,
        domain=(-1.0, 2.0),
        description=f"sum of Gaussians {terms} on [-1, 2]; antiderivative via erf",
        params={"terms": [list(x) for x in _GAUSS]},
    )


SIGNALS: dict[str, Callable[[], Signal1D]] = {"poly": polynomial, "gaussians": gaussians}


def get_signal(name: str) -> Signal1D:
    try:
        return SIGNALS[name]()
    except KeyError:
        raise ValueError(f"unknown 1-D signal {name!r}; choose from {sorted(SIGNALS)}") from None
