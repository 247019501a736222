"""Turning spec strings into safe Python identifiers (spec text never reaches generated code raw)."""

from __future__ import annotations

import keyword
import re

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_identifier(text: str) -> bool:
    """True for a plain ASCII identifier that is not a Python keyword."""
    return bool(_IDENT.match(text)) and not keyword.iskeyword(text)


def safe_identifier(text: str, default: str = "net") -> str:
    """Map any string to an ASCII identifier: other characters become ``_``, a leading digit or a
    keyword gets a ``_`` prefix; the empty result becomes ``default``."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", text.strip())
    out = re.sub(r"_+", "_", out).strip("_") or default
    if out[0].isdigit() or keyword.iskeyword(out):
        out = "_" + out
    return out


def param_attribute(param: str, part: str) -> str:
    """The attribute (and state-dict key) of an IR parameter's ``weight``/``bias`` in generated modules:
    ``<param>_<part>``, with a long name shortened to a readable prefix plus a stable hash so generated
    lines stay short. Every backend and frontend uses this one convention."""
    if len(param) > 32:
        import hashlib

        param = f"{param[:24]}_{hashlib.sha256(param.encode()).hexdigest()[:6]}"
    return f"{param}_{part}"
