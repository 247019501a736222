"""Every numeric option of every ``autoint-compile`` subcommand is bounded at parse time: a value out
of range is a usage error (exit status 2) whose last line names the option, before any work starts.
The table is built from the parsers themselves, so an option added without bounds fails here. Also:
the CLI in a pipe whose reader goes away exits quietly."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from conftest import ac_subprocess_env

from autoint_compiler import cli
from autoint_compiler.apps import _argtypes

#: value parsers that take no numbers (names, activations, scene lists)
NON_NUMERIC = {"parse_activation", "_act_list", "_scene_list"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    out = {}
    for name in [*sorted(cli.COMMANDS), *cli.EXPERIMENTS]:
        p = cli._parser(name if name in cli.EXPERIMENTS else None)
        (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        out[name] = sub.choices[name]
    return out


def _numeric_options() -> list[tuple[str, str, object]]:
    rows = []
    for cmd, parser in _subparsers().items():
        for action in parser._actions:
            if action.type is None or not action.option_strings:
                continue
            flag = max(action.option_strings, key=len)
            assert action.type not in (int, float), f"{cmd} {flag}: a bare {action.type.__name__} has no bounds"
            if getattr(action.type, "__name__", "") in NON_NUMERIC:
                continue
            assert hasattr(action.type, "bounds"), f"{cmd} {flag}: type {action.type!r} declares no bounds"
            rows.append((cmd, flag, action.type))
    return rows


ROWS = _numeric_options()


def _bad_values(parse) -> list[str]:
    lo, hi = parse.bounds
    is_float = parse.__name__ == "float"
    bad = ["", "x", "1x" if parse.__name__ != "list" else "8,x"]
    if lo is not None:
        bad.append(str(lo) if getattr(parse, "open_lo", False) else str(lo - (1e-3 if is_float else 1)))
    if hi is not None:
        bad.append(str(hi * 1.001 if is_float else hi + 1))
    if is_float:
        bad += ["nan", "inf", "-inf"]
    else:
        bad += ["1.5", "9" * 400]
    if parse.__name__ == "list":
        bad += ["1,,2", ",", "1," * 300 + "1"]
    return bad


def test_every_subcommand_has_bounded_numbers():
    """The table covers the options the issue names (and its size guards against a silent empty table)."""
    flags = {(c, f) for c, f, _ in ROWS}
    for c, f in [
        ("render", "--batch"),
        ("render", "--size"),
        ("render", "--train-views"),
        ("render", "--samples-per-ray"),
        ("render", "--frequencies"),
        ("render", "--sections"),
        ("train-1d", "--intervals"),
        ("ct", "--factors"),
    ]:
        assert (c, f) in flags
    assert len(ROWS) >= 35


@pytest.mark.parametrize("cmd,flag,parse", ROWS, ids=[f"{c}{f}" for c, f, _ in ROWS])
def test_out_of_range_is_a_usage_error_naming_the_option(cmd, flag, parse, capsys):
    lo, hi = parse.bounds
    for value in _bad_values(parse):
        with pytest.raises(SystemExit) as info:
            cli.main([cmd, f"{flag}={value}"])
        assert info.value.code == 2, (flag, value)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert lines[0].startswith("usage: autoint-compile"), err
        assert "error:" in lines[-1] and flag in lines[-1], (flag, value, err)
        assert len(lines[-1]) < 300 and "Traceback" not in err
    # the bounds themselves are accepted (no error from the value parser)
    for v in (lo, hi):
        if v is not None and not (v == lo and getattr(parse, "open_lo", False)):
            assert parse(str(v)) in (v, [v], (v,))


def test_int_list_reads_every_item():
    parse = _argtypes.int_list(1, 64)
    assert parse("8,16, 32") == [8, 16, 32]
    assert parse("64x64") == [64, 64]
    for bad in ("8,x", "8,", "a", "0", "65", "none"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
    assert _argtypes.int_list(allow_none=True, tuple_type=True)("None") == ()


@pytest.mark.parametrize("args", [["rules"], ["--help"], ["inspect", "--help"], ["render", "--help"]])
def test_closed_pipe_exits_quietly(args):
    """``autoint-compile rules | head -1``: no message, no traceback, status 141 (or 0 when all of the
    output fitted in the pipe before the reader left)."""
    code = "import sys; from autoint_compiler.cli import main; sys.exit(main(sys.argv[1:]))"
    env = ac_subprocess_env()
    producer = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    producer.stdout.read(10)
    producer.stdout.close()  # the reader goes away after its first bytes
    err = producer.stderr.read().decode()
    rc = producer.wait(60)
    assert err == "" and rc in (0, cli.EXIT_BROKEN_PIPE), (rc, err)


def test_closed_pipe_on_large_output_is_status_141():
    code = (
        "import sys; from autoint_compiler import cli\n"
        "def big(args):\n"
        "    for i in range(200000): print('line', i)\n"
        "cli.cmd_rules = big\n"
        "sys.exit(cli.main(['rules']))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ac_subprocess_env()
    )
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == cli.EXIT_BROKEN_PIPE and err == ""


def test_readme_limits_table_lists_every_option():
    """README's limits table has a row per numeric option, with the message its parser gives."""
    from conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    for cmd, flag, parse in ROWS:
        row = [line for line in readme if line.startswith(f"| `{cmd} {flag}` |")]
        assert len(row) == 1, f"README's limits table has no row for {cmd} {flag}"
        lo, hi = parse.bounds
        bad = str(lo) if getattr(parse, "open_lo", False) else str(lo - 1)
        with pytest.raises(argparse.ArgumentTypeError) as info:
            parse(bad)
        assert str(info.value).split(", got ")[0] in row[0], (row[0], str(info.value))


@pytest.mark.parametrize(
    "cmd,value,match",
    [
        ("train-1d", "sine:1e5", "w0 must be > 0 and <= 10000"),
        ("train-1d", "{name: elu, alpha: 5000}", "alpha must be between"),
        ("train-1d", "{formula: 'log(0)*x'}", "bad formula"),
        ("ct", "[swish, {name: sine, w0: 0}]", "w0 must be > 0"),
        ("ct", "sine:0", "w0 must be"),
    ],
)
def test_numbers_inside_activation_flags_are_bounded_at_parse_time(cmd, value, match, capsys):
    flag = "--activation" if cmd == "train-1d" else "--activations"
    with pytest.raises(SystemExit) as info:
        cli.main([cmd, f"{flag}={value}"])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in last and match in last, last
