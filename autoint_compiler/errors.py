"""The two errors a user of the compiler can meet.

``SpecError``: the spec is malformed (names the file, the field path and what was expected).
``CompileError``: a well-formed spec whose graph cannot be compiled (names the node/op and why).
Both print as one or two lines; the CLI turns them into exit status 2.
"""

from __future__ import annotations


class AutoIntError(Exception):
    """Base class of every error the compiler raises on purpose."""


class SpecError(AutoIntError, ValueError):
    """A malformed network spec.

    ``problems`` holds ``(field_path, message)`` pairs; ``source`` names the file (or ``<string>``,
    ``<dict>``). ``str(err)`` is ``"<source>: <path>: <message>"`` for the first problem, with a second
    line counting the others.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = list(problems)
        path, msg = self.problems[0]
        text = f"{source}: {path}: {msg}" if path else f"{source}: {msg}"
        if len(self.problems) > 1:
            more = "; ".join(f"{p}: {m}" if p else m for p, m in self.problems[1:4])
            extra = len(self.problems) - 4
            text += f"\n  and {len(self.problems) - 1} more: {more}" + (f"; ... ({extra} more)" if extra > 0 else "")
        super().__init__(text)


class CompileError(AutoIntError, ValueError):
    """A graph that cannot be compiled: names the node or op and says why."""
