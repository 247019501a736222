"""The stable sympy primitives every pointwise function is built from, and the symbol ``x``.

``sigmoid``, ``softplus``, ``relu``, ``step``, ``ndtr`` and ``expm1_neg`` are sympy functions whose
``fdiff`` gives the numerically stable derivative (σ' = σ(1-σ), softplus' = σ, ...), so derivatives of
any order stay in stable form. ``KINKED``/``DISCONTINUOUS`` mark non-smooth functions.
"""

from __future__ import annotations

import sympy as sp

x = sp.Symbol("x", real=True)


class sigmoid(sp.Function):  # noqa: N801 - sympy function names are lower case
    """Logistic function; derivative in the stable form σ(1-σ)."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)


class softplus(sp.Function):  # noqa: N801
    """log(1 + e^u), printed as a stable library call; derivative σ(u)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


class step(sp.Function):  # noqa: N801
    """Heaviside step (0 at 0); derivative 0 almost everywhere. Marks a non-smooth function."""

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class relu(sp.Function):  # noqa: N801
    """max(u, 0); derivative step(u). Marks a kinked function."""

    def fdiff(self, argindex=1):
        return step(self.args[0])


class ndtr(sp.Function):  # noqa: N801
    """Standard normal CDF Φ(u); derivative exp(-u²/2)/√(2π) (finite for every u)."""

    def fdiff(self, argindex=1):
        u = self.args[0]
        return sp.exp(-(u**2) / 2) / sp.sqrt(2 * sp.pi)


class expm1_neg(sp.Function):  # noqa: N801
    """exp(min(u, 0)) - 1, ELU's negative branch; derivative exp(min(u, 0))·(1 - step(u)), which is 1 at
    u = 0 like torch's own ELU backward (so ELU with α = 1 is C¹ here too)."""

    def fdiff(self, argindex=1):
        u = self.args[0]
        return sp.exp(-relu(-u)) * (1 - step(u))


class log_domain(sp.Function):  # noqa: N801
    """1 where u is in log's domain (u >= 0), NaN elsewhere; derivative 0. ``log(u)``'s derivative
    ``1/u`` is finite for u < 0, where log itself is NaN: derivatives carry this factor so the grad
    network is NaN exactly where Φ is (``activations.derivative``)."""

    def fdiff(self, argindex=1):
        return sp.Integer(0)


#: functions whose presence makes an expression non-smooth (a kink or a jump)
KINKED = (relu, sp.Abs, expm1_neg)
DISCONTINUOUS = (step, sp.sign)
