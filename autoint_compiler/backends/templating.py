"""Finding and rendering the jinja2 templates.

The templates live in the repository's top-level ``templates/`` folder; a wheel ships them as
``autoint_compiler/templates`` (pyproject force-include). Both places are searched, so editable
installs and wheels behave the same.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

_PACKAGE = Path(__file__).resolve().parent.parent  # autoint_compiler/
SEARCH_PATH = [_PACKAGE / "templates", _PACKAGE.parent / "templates"]


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    dirs = [str(p) for p in SEARCH_PATH if p.is_dir()]
    if not dirs:
        raise FileNotFoundError(f"autoint_compiler templates not found in {', '.join(map(str, SEARCH_PATH))}")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(dirs),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)
