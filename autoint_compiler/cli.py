"""``autoint-compile``: compile specs to Python modules, inspect graphs, list the rules, and run the
experiments.

    autoint-compile SPEC [-o DIR]                      write DIR/<name>.py and the IR text of both graphs
    autoint-compile inspect SPEC --graph grad --format {text,dot,svg} [-o FILE]
    autoint-compile rules                              the activation table and its derivatives
    autoint-compile train-1d ... | ct ...              the experiments (see --help of each)

Spec and compile errors print in one or two lines and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import AutoIntError

#: experiment subcommand -> (module that registers it with ``add_parser(subparsers)``, one-line help).
#: Their modules (torch, matplotlib, scikit-image) are imported only when the subcommand runs, so
#: compiling and inspecting specs stays torch-free and fast.
EXPERIMENTS = {
    "train-1d": ("autoint_compiler.apps.oned", "fit a 1-D signal and check integrals against exact ones"),
    "ct": ("autoint_compiler.apps.ct", "sparse-view CT of the Shepp-Logan phantom (AutoInt vs FBP)"),
    "render": ("autoint_compiler.apps.render", "volume rendering: AutoInt sections vs quadrature"),
}
COMMANDS = {"compile", "inspect", "rules"}


def _parser(experiment: str | None = None) -> argparse.ArgumentParser:
    epilog = "experiments (see `autoint-compile NAME --help`):\n" + "\n".join(
        f"  {name:10s} {text}" for name, (_, text) in EXPERIMENTS.items()
    )
    p = argparse.ArgumentParser(
        prog="autoint-compile",
        description="Compile AutoInt network specs (YAML) into PyTorch integral and grad networks.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    if experiment is not None:  # only this experiment's module is imported
        importlib.import_module(EXPERIMENTS[experiment][0]).add_parser(sub)
        return p
    c = sub.add_parser("compile", help="compile a spec to DIR/<name>.py (the default command)")
    c.add_argument("spec", help="network spec (YAML file)")
    c.add_argument("-o", "--out", default=".", help="output folder (default: .)")
    c.add_argument("--backend", choices=["torch", "triton"], default=None)
    c.set_defaults(func=cmd_compile)

    i = sub.add_parser("inspect", help="print or draw the integral or grad graph")
    i.add_argument("spec")
    i.add_argument("--graph", choices=["integral", "grad"], default="grad")
    i.add_argument("--format", choices=["text", "dot", "svg"], default="text")
    i.add_argument("-o", "--out", default=None, help="write to this file (svg: default <name>.<graph>.svg)")
    i.set_defaults(func=cmd_inspect)

    r = sub.add_parser("rules", help="list the activations and their sympy-derived derivatives")
    r.set_defaults(func=cmd_rules)
    return p


#: exit status when the reader of our stdout goes away (``autoint-compile rules | head -3``): 128 + SIGPIPE,
#: what the shell shows for a C tool killed by the signal; nothing is printed
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """The ``autoint-compile`` entry point; returns the exit status. A closed pipe on stdout ends the
    command quietly (status :data:`EXIT_BROKEN_PIPE`), with no message and no traceback."""
    try:
        try:
            return _main(argv)
        finally:  # the buffered rest is written here, inside the handler (else: at exit, with a traceback)
            sys.stdout.flush()
    except BrokenPipeError:
        try:  # later writes, and the interpreter's own flush at exit, go nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # pragma: no cover - stdout without a descriptor (tests' capture)
            pass
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    experiment = argv[0] if argv and argv[0] in EXPERIMENTS else None
    parser = _parser(experiment)
    if argv and experiment is None and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "compile")  # `autoint-compile SPEC` is `autoint-compile compile SPEC`
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AutoIntError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away: not an error of the command (see main)
        raise
    except (OSError, ValueError) as exc:  # bad paths, unreadable or mismatched files: one line, not a traceback
        if os.environ.get("AUTOINT_DEBUG"):
            raise
        print(f"error: {exc.__class__.__name__}: {exc} (AUTOINT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


def cmd_compile(args) -> int:
    from .compiler import atomic_write_text, compile_source, format_report

    cs = compile_source(args.spec, args.backend)
    out = Path(args.out)
    for name, text in cs.files().items():
        atomic_write_text(out / name, text)
        print(f"wrote {out / name}")
    print(format_report(cs))
    return 0


def cmd_inspect(args) -> int:
    from .compiler import compile_source
    from .core.ir import format_graph, to_dot

    cs = compile_source(args.spec)
    g = cs.integral_ir if args.graph == "integral" else cs.grad_ir
    if args.format == "text":
        text = format_graph(g)
    else:
        text = to_dot(g)
    if args.format == "svg":
        dot = shutil.which("dot")
        if dot is None:
            print(
                "error: --format svg needs Graphviz's `dot` program, which is not installed "
                "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
                "or use --format dot and render it elsewhere)",
                file=sys.stderr,
            )
            return 2
        target = Path(args.out or f"{cs.name}.{args.graph}.svg")
        res = subprocess.run([dot, "-Tsvg", "-o", str(target)], input=text, text=True, capture_output=True)
        if res.returncode != 0:
            print(f"error: dot failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 2
        print(f"wrote {target}")
        return 0
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_rules(args) -> int:
    from .core import activations as A
    from .core.ops import OPS

    print("IR ops and their forward-mode rules (ops.py):")
    for op in sorted(OPS):
        print(f"  {op:10s} {OPS[op].doc}  [rule: {OPS[op].jvp.__name__.lstrip('_')}]")
    print("\nActivations (derived once with sympy):")
    for name in sorted(A.ACTIVATIONS):
        fn = A.activation(name)
        d = A.derivative(fn)
        smooth = "" if d.smooth else "   (not smooth)"
        print(f"  {name:16s} f = {fn.key}\n  {'':16s} f' = {d.key}{smooth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
