"""docs/ARCHITECTURE.md's recipes, verified by doing them: in a temporary copy of the package, add an
activation (mish), an elementwise op (square) and an op that is not elementwise (reverse: the features in
reverse order), exactly as the recipes say, and run tests/test_op_completeness.py on the copy.

- an activation is one row in ``core/activations.py: ACTIVATIONS``: its completeness test passes;
- an elementwise op is its definition in ``core/ops.py`` (meaning, JVP and Taylor rules, example): every
  backend and the interpreter lower it from its meaning, so its completeness tests pass;
- an op that is not elementwise also needs one lowering per backend and an interpreter row: its
  completeness test fails, naming the missing piece, until the torch backend, the interpreter AND the
  Triton backend lower it.

The working tree is never touched (everything happens under ``tmp_path``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, ac_subprocess_env

pytestmark = pytest.mark.slow  # five short pytest runs in child interpreters (about a minute)

MISH = """    "mish": ActivationDef(lambda: x * sp.tanh(softplus(x)), doc="x·tanh(softplus(x))"),
"""

SQUARE = """defop(
    "square",
    1,
    (),
    lambda w, a: w[0],
    "a * a",
    elementwise=lambda u, a: u[0] ** 2,
    linear=False,
    example=lambda b, h, t: b.g.add("square", (h,)),
)


@defjvp("square")
def _square(b, nid, T):
    t = _t(b, T, nid)
    return None if t is None else b.scale(b.mul(b.g.inputs_of(nid)[0], t), 2.0)


@defjet("square")
def _square_jet(b, nid, D, j):
    (a,) = b.g.inputs_of(nid)  # Leibniz on a * a
    pairs = [(i, D[a][i], D[a][j - i]) for i in range(j + 1)]
    terms = [b.scale(b.mul(p, q), math.comb(j, i)) for i, p, q in pairs if p is not None and q is not None]
    return b.add_all(terms) if terms else None


"""

REVERSE = """defop(
    "reverse", 1, (), lambda w, a: w[0], "features in reverse order", example=lambda b, h, t: b.g.add("reverse", (h,))
)


@defjvp("reverse")
def _reverse(b, nid, T):
    t = _t(b, T, nid)
    return None if t is None else b.g.add("reverse", (t,))


"""

#: (file, anchor, text inserted after the anchor): one lowering per backend, one interpreter row
LOWERINGS = {
    "torch backend": (
        "backends/torch_backend.py",
        '    "posenc": _lower_posenc,\n',
        '    "reverse": lambda e, nid, a, r: e.assign(nid, Code(f"{r[0].at(ATOM)}.flip(1)")),\n',
    ),
    "interpreter": (
        "core/interpret.py",
        '    "posenc": _posenc,\n',
        '    "reverse": lambda g, nid, a, args, p: args[0][:, ::-1],\n',
    ),
    "triton backend": (
        "backends/triton_backend.py",
        '    "posenc": _lower_posenc,\n',
        '    "reverse": lambda e, nid, a, ins: e.assign(nid, f"{e.ref(ins[0])}.flip(1)"),\n',
    ),
}
#: what the completeness test says while a lowering is missing (the first missing one, in the order it runs)
MISSING = {
    "torch backend": "torch backend: no lowering for op 'reverse'",
    "interpreter": "interpreter: no evaluation rule for op 'reverse'",
    "triton backend": "no Triton lowering for op 'reverse'",
}


def _insert(path, anchor: str, text: str, before: bool = False) -> None:
    source = path.read_text()
    assert source.count(anchor) == 1, f"{path.name}: recipe anchor {anchor.strip()!r} not found once; update this test"
    path.write_text(source.replace(anchor, text + anchor if before else anchor + text))


def _completeness(root, select: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly",
           "tests/test_op_completeness.py", "-k", select]  # fmt: skip
    env = ac_subprocess_env(PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def copy(tmp_path):
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "autoint_compiler", root / "autoint_compiler", ignore=ignore)
    shutil.copytree(REPO_ROOT / "templates", root / "templates")
    (root / "tests").mkdir()
    for name in ("conftest.py", "test_op_completeness.py"):
        shutil.copy(REPO_ROOT / "tests" / name, root / "tests" / name)
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_recipes_add_an_activation_and_two_ops(copy):
    pkg = copy / "autoint_compiler"
    # an activation: one row
    _insert(pkg / "core/activations.py", "ACTIVATIONS: dict[str, ActivationDef] = {\n", MISH)
    # ops: their definitions, where ops.py defines its ops (before the one definition of "elementwise")
    _insert(pkg / "core/ops.py", '#: THE definition of "elementwise"', SQUARE + REVERSE, before=True)

    out = _completeness(copy, "mish or square")
    assert out.returncode == 0 and " passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
    assert "5 passed" in out.stdout, out.stdout[-500:]  # mish, square x 3 orders, square's definition

    for piece in LOWERINGS:  # reverse fails, naming the first missing lowering, until all three exist
        out = _completeness(copy, "reverse and runs")
        assert out.returncode == 1, f"reverse passed without a lowering in the {piece}:\n{out.stdout[-2000:]}"
        assert MISSING[piece] in out.stdout, f"expected {MISSING[piece]!r}:\n{out.stdout[-3000:]}"
        _insert(pkg / LOWERINGS[piece][0], *LOWERINGS[piece][1:])
    out = _completeness(copy, "reverse")
    assert out.returncode == 0 and "4 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
