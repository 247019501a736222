"""Smoke test of the benchmark harness (issue 5): one tiny case through the real code path.

No timing assertions: only that the harness runs, writes CSVs with the expected columns and finite
positive timings, and that every method computes the same dPhi/dt (and gradients) as autograd.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import methods as M  # noqa: E402
from benchmarks import nets, quadrature, run  # noqa: E402

TIMING_COLS = {"median_ms", "q25_ms", "q75_ms", "min_ms", "repeats", "warmup"}
MACHINE_COLS = {"device", "cpu_model", "torch_version", "threads", "backend"}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = run.main(["--quick", "--out", str(out), "--sections", "forward,train,quad", "--activations", "swish",
                   "--threads", "1", "--no-plots"])
    assert rc == 0
    return out


def test_quick_run_writes_csvs(quick_run):
    for name in ("forward", "train", "quadrature", "summary"):
        assert (quick_run / f"{name}.csv").is_file(), name
    assert (quick_run / "README.md").read_text().startswith("# autoint_compiler benchmarks")
    fwd = _rows(quick_run / "forward.csv")
    train = _rows(quick_run / "train.csv")
    assert {r["method"] for r in fwd} >= {M.FWD_GENERATED, M.FWD_AUTOGRAD, M.FWD_JVP, M.FWD_HAND, M.FWD_PLAIN}
    assert {r["method"] for r in train} >= {M.TR_GENERATED, M.TR_DOUBLE, M.TR_FUNC, M.TR_HAND}
    for rows in (fwd, train, _rows(quick_run / "quadrature.csv")):
        assert TIMING_COLS | MACHINE_COLS <= set(rows[0]), set(rows[0])
        for r in rows:
            assert r["status"] == "ok", (r["method"], r["status"])
            for k in ("median_ms", "q25_ms", "q75_ms", "min_ms"):
                v = float(r[k])
                assert math.isfinite(v) and v > 0, (r["method"], k, v)
            assert int(r["repeats"]) >= 1 and r["cpu_model"] and r["torch_version"]


def test_quick_run_methods_agree(quick_run):
    for r in _rows(quick_run / "forward.csv"):
        if r["method"] != M.FWD_PLAIN:
            assert r["allclose_autograd"] == "True", r
    for r in _rows(quick_run / "train.csv"):
        assert float(r["loss_rel_diff_vs_double"]) < 1e-4, r
        if r.get("grad_rel_diff_vs_double"):
            assert float(r["grad_rel_diff_vs_double"]) < 1e-3, r


@pytest.mark.parametrize("activation", ["swish", "sine"])
def test_grad_methods_allclose_autograd(activation):
    b = nets.build("2x16", activation)
    x = nets.make_inputs(128, b.in_features, seed=3)
    ref = M.forward_fn(b, M.FWD_AUTOGRAD)(x)
    assert not b.hand_status, b.hand_status
    for m in M.FWD_METHODS:
        if m in (M.FWD_AUTOGRAD, M.FWD_PLAIN):
            continue
        try:
            y = M.forward_fn(b, m)(x)
        except M.NotApplicable:
            continue
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5 * (1 + ref.abs().max().item()), msg=m)
    with torch.no_grad():  # the hand-written primal is Phi itself
        torch.testing.assert_close(b.hand.primal(x), b.phi(x), rtol=1e-5, atol=1e-6)


def test_quadrature_reference_is_float64_closed_form(quick_run):
    rows = _rows(quick_run / "quadrature.csv")
    assert rows and all(r["precision_note"] == "errors in float64" for r in rows), rows[0]["precision_note"]
    closed = [r for r in rows if r["rule"] == "closed"]
    assert closed and float(closed[0]["rel_err_mean"]) == 0.0
    # Gauss-Legendre of the grad network converges to Phi(b) - Phi(a): g is Phi's exact t-derivative
    gl = sorted((int(r["n_samples"]), float(r["rel_err_mean"])) for r in rows if r["rule"] == "gauss-legendre")
    assert gl[-1][1] < 1e-6, gl


def test_quadrature_rules_exact_on_polynomials():
    for rule, n, deg in (("midpoint", 16, 1), ("trapezoid", 16, 1), ("gauss-legendre", 8, 15)):
        u, w = quadrature.rule_nodes(rule, n)
        assert math.isclose(w.sum(), 1.0, rel_tol=1e-12)
        assert np.isclose((w * u**deg).sum(), 1.0 / (deg + 1), rtol=1e-10), (rule, deg)
