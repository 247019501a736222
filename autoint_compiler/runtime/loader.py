"""Loading generated module source at run time: the text itself is executed as a module (no file is
imported, so no stale or forged ``.pyc`` can stand in for it, and no cache folder is needed).

The compile pipeline (``compiler.py``) produces text; this is the one place that turns text into a
live module, for ``compiler.instantiate`` and for anyone holding a generated source.
"""

from __future__ import annotations

import builtins
import hashlib
import linecache
import sys
import types


def load_module(name: str, source: str):
    """Execute generated source as a module named ``autoint_generated.<name>_<digest>``.

    The text itself is compiled and run (no file is imported, so no stale or forged ``.pyc`` can
    stand in for it, and no cache folder is needed); ``linecache`` holds the text so tracebacks and
    ``inspect`` show its lines."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    modname = f"autoint_generated.{name}_{digest}"
    if modname in sys.modules:
        return sys.modules[modname]
    filename = f"<autoint_generated/{name}_{digest}.py>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(modname)
    module.__file__ = filename
    sys.modules.setdefault("autoint_generated", _namespace())
    sys.modules[modname] = module
    try:
        exec(builtins.compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - our own generated text
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _namespace():
    mod = types.ModuleType("autoint_generated")
    mod.__path__ = []  # a package, so 'autoint_generated.x' names resolve for pickle
    return mod
