"""The derivative table: one forward-mode (JVP) rule per IR op, as one table.

The rules themselves are defined beside their ops in ``ops.py`` (``@defjvp``); this module is the
tinygrad-style view of them: ``RULES`` maps every op to its rule, and ``rule_for`` raises a
``CompileError`` naming an op without one.
"""

from __future__ import annotations

from .ops import OPS, Rule, Tangents, rule_for  # noqa: F401 - re-exported

#: op -> rule, for every op defined in ops.py
RULES: dict[str, Rule] = {name: d.jvp for name, d in OPS.items() if d.jvp is not None}
