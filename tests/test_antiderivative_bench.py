"""Smoke test of benchmarks/antiderivatives.py (issue 11's peer workload) at tiny sizes.

No timing assertions: the harness runs, writes the CSV and the markdown with the expected rows, the three
methods agree at the same weights, and a configuration the compiler cannot express is a 'skipped:' row.
"""

from __future__ import annotations

import csv
import math

import pytest

torch = pytest.importorskip("torch")

from benchmarks import antiderivatives as B  # noqa: E402

TINY = ["--width", "16", "--depth", "2", "--batches", "32,16,8", "--threads", "1", "--repeats", "1", "--warmup", "1"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_order_one_all_dims(tmp_path):
    assert B.main(["--quick", "--out", str(tmp_path), "--dims", "1,2,3", "--orders", "1", "--in-process", *TINY]) == 0
    rows = _rows(tmp_path / "antiderivatives.csv")
    assert [(r["dims"], r["method"]) for r in rows] == [
        (str(d), m) for d in (1, 2, 3) for m in (B.M_COMPILED, B.M_FUNC, B.M_AUTOGRAD)
    ]
    for r in rows:
        assert r["status"] == "ok", r
        assert math.isfinite(float(r["median_ms"])) and float(r["median_ms"]) > 0
        assert float(r["max_rel_diff_phi"]) < 1e-5
        assert float(r["max_rel_diff_pred"]) < 1e-4 and float(r["max_rel_diff_param_grad"]) < 1e-4
        assert r["cpu_model"] and r["torch_version"] and r["batch"] == {"1": "32", "2": "16", "3": "8"}[r["dims"]]
        if r["method"] != B.M_COMPILED:
            assert float(r["ratio_vs_ours"]) > 0
    md = (tmp_path / "README.md").read_text()
    assert md.startswith("# Peer workload") and md.count("| ok |") == 9


def test_higher_orders_skip_or_run(tmp_path):
    """2-D order 2 needs the mapping form of issue 11: a 'skipped:' row until it compiles, never a crash;
    1-D order 2 runs today through the u = t1 + t2 workaround, and the nested baselines agree with it."""
    argv = ["--quick", "--out", str(tmp_path), "--dims", "1,2", "--orders", "2", "--no-memory", "--in-process", *TINY]
    assert B.main(argv) == 0
    rows = {(r["dims"], r["method"]): r for r in _rows(tmp_path / "antiderivatives.csv")}
    assert set(rows) == {("1", m) for m in B.METHODS} | {("2", m) for m in (B.M_COMPILED, B.M_FUNC, B.M_AUTOGRAD)}
    for r in rows.values():
        assert r["status"] == "ok" or r["status"].startswith("skipped: "), r
    assert rows["1", B.M_WORKAROUND]["status"] == "ok"
    for dims in ("1", "2"):  # compile time and Taylor-mode node count of every compiled network
        assert float(rows[dims, B.M_COMPILED]["compile_s"]) > 0 and int(rows[dims, B.M_COMPILED]["grad_nodes"]) > 10
    for m in (B.M_FUNC, B.M_AUTOGRAD):
        assert rows["1", m]["status"] == "ok"
        assert float(rows["1", m]["max_rel_diff_pred"]) < 1e-4
        assert float(rows["1", m]["max_rel_diff_param_grad"]) < 1e-4


@pytest.mark.slow  # a long end-to-end run (make test-fast leaves it out)
def test_child_process_path(tmp_path):
    """The default path: every configuration in a fresh process (clean heap for the peak-memory reading)."""
    assert B.main(["--quick", "--out", str(tmp_path), "--dims", "1", "--orders", "1", *TINY]) == 0
    rows = _rows(tmp_path / "antiderivatives.csv")
    assert [r["method"] for r in rows] == [B.M_COMPILED, B.M_FUNC, B.M_AUTOGRAD]
    for r in rows:
        assert r["status"] == "ok", r
        assert float(r["peak_mb"]) >= 0 and "fresh process" in r["mem_method"]


def test_baselines_agree_mixed_higher_order_float64():
    """The two baselines are independent implementations: they agree for ∂⁴Φ/∂x²∂y² (and with central
    finite differences of Φ) in float64."""
    torch.manual_seed(0)
    mlp = B.SurveyMLP(2, width=12, depth=2).double()
    x = torch.rand(5, 2, dtype=torch.float64) * 2 - 1
    a = B.func_pred(mlp, 2, 2)(x)
    b = B.autograd_pred(mlp, 2, 2)(x)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # 4th mixed central difference: truncation ~ h^2/12 * (∂x² + ∂y²) ≈ 2e-4 relative here (the 8π posenc
    # octave makes each extra derivative ~25x larger); rounding ~ 9 eps |Φ| / h^4 ≈ 1e-4 absolute
    h = 2e-3
    with torch.no_grad():
        fd = (
            sum(
                wi * wj * mlp(x + torch.tensor([i * h, j * h], dtype=torch.float64))
                for i, wi in ((-1, 1.0), (0, -2.0), (1, 1.0))
                for j, wj in ((-1, 1.0), (0, -2.0), (1, 1.0))
            )
            / h**4
        )
    a = a.detach()
    torch.testing.assert_close(fd, a, rtol=2e-3, atol=2e-3 * float(a.abs().max()))
