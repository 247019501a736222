"""Spec features beyond the basic forms: per-input encoding octaves, SIREN init in the graph form,
and what the architecture hash covers."""

from __future__ import annotations

import math

import pytest

import autoint_compiler as ac
from autoint_compiler.frontends.spec import load_spec
from autoint_compiler.frontends.spec_build import build_integral

BASE = {"name": "f", "inputs": {"rho": 1, "theta": 1, "t": 1}, "integrate": ["t"], "output": 1}


def test_per_input_encoding_octaves():
    spec = dict(
        BASE, mlp={"hidden": [8], "encoding": {"inputs": ["rho", "theta"], "frequencies": {"rho": 3, "theta": 1}}}
    )
    g = build_integral(load_spec(spec))
    freqs = {g.attrs(g.inputs_of(n)[0])["name"]: len(g.attrs(n)["freqs"]) for n in g.order() if g.op(n) == "posenc"}
    assert freqs == {"rho": 3, "theta": 1}
    assert g.graph["params"]["layer0"].inp == (1 + 6) + (1 + 2) + 1


@pytest.mark.parametrize(
    ("frequencies", "message"),
    [
        ({"rho": 3}, "mlp.encoding.frequencies: missing the number of octaves for 'theta'"),
        ({"rho": 3, "theta": 1, "t": 2}, "mlp.encoding.frequencies.t: 't' is not in encoding.inputs"),
        (
            {"rho": 0, "theta": 1},
            "mlp.encoding.frequencies['rho']: expected a number of octaves between 1 and 32, got 0",
        ),
    ],
)
def test_per_input_encoding_octaves_errors(frequencies, message):
    spec = dict(BASE, mlp={"hidden": [8], "encoding": {"inputs": ["rho", "theta"], "frequencies": frequencies}})
    with pytest.raises(ac.SpecError) as err:
        load_spec(spec)
    assert str(err.value) == f"<dict>: {message}"


def test_graph_form_siren_init_uses_the_sine_w0():
    spec = {
        "name": "g",
        "inputs": {"t": 1},
        "integrate": ["t"],
        "init": "siren",
        "graph": [
            {"name": "h0", "op": "linear", "in": ["t"], "out": 16},
            {"name": "s0", "op": "sine", "in": ["h0"], "w0": 10},
            {"name": "h1", "op": "linear", "in": ["s0"], "out": 16},
            {"name": "s1", "op": "sine", "in": ["h1"], "w0": 10},
            {"name": "o", "op": "linear", "in": ["s1"], "out": 1},
        ],
    }
    p = build_integral(load_spec(spec)).graph["params"]
    assert p["h0"].weight_bound == 1.0  # SIREN's first layer: U(-1/fan_in, 1/fan_in)
    assert p["h1"].weight_bound == pytest.approx(math.sqrt(6 / 16) / 10)
    assert p["o"].weight_bound == pytest.approx(math.sqrt(6 / 16) / 10)


def test_hash_covers_the_architecture_not_seed_or_dtype():
    """The architecture hash (Program.hash, a network's spec_hash) is the IR of Φ and the variables."""
    from autoint_compiler.compiler import compile_source

    a = compile_source(dict(BASE, mlp={"hidden": [8]}, seed=1, dtype="float32")).program
    b = compile_source(dict(BASE, mlp={"hidden": [8]}, seed=2, dtype="float64")).program
    c = compile_source(dict(BASE, mlp={"hidden": [9]}, seed=1)).program
    assert a.hash == b.hash != c.hash
