"""The 1-D AutoInt experiment: fit f with the grad network, integrate with the integral network."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

import autoint_compiler as ac
from autoint_compiler.apps import oned
from autoint_compiler.apps.signals1d import SIGNALS, get_signal
from autoint_compiler.runtime.train import TrainConfig

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

FAST = dict(steps=1500, lr=5e-3, batch_size=512, seed=0, progress=False, threads=1)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_antiderivatives_are_exact(name):
    sig = get_signal(name)
    t = torch.linspace(*sig.domain, 101, dtype=torch.float64, requires_grad=True)
    (dF,) = torch.autograd.grad(sig.F(t).sum(), t)
    torch.testing.assert_close(dF, sig.f(t), rtol=1e-12, atol=1e-12)


def test_polynomial_is_autoints():
    sig = get_signal("poly")
    t = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    expected = 0.1 * t**5 - 0.2 * t**4 + 0.2 * t**3 - 0.4 * t**2 + 0.1 * t
    torch.testing.assert_close(sig.f(t), expected)
    # int_{-1}^{2} f = F(2) - F(-1) = -0.28 - 0.29
    assert sig.definite(
        torch.tensor(-1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    ).item() == pytest.approx(-0.57, abs=1e-12)


@pytest.mark.slow  # a long end-to-end run (make test-fast leaves it out)
def test_poly_integral_error_below_threshold():
    """Measured (hidden 32x3, 1,500 steps, 2 cores, seeds 0/1/2): max abs error over 1,000 random
    intervals 8.4e-4 / 1.1e-3 / 7.3e-4, mean 2.9e-4 / 3.8e-4 / 2.0e-4; the untrained network is
    off by > 0.1. Thresholds: max < 3e-3, mean < 1e-3."""
    untrained = ac.compile(oned.make_spec("poly", hidden=(32, 32, 32)))
    before = oned.evaluate_integrals(untrained, get_signal("poly"))
    assert before["max_abs_err"] > 0.1
    net, hist, res = oned.fit_signal("poly", TrainConfig(**FAST), hidden=(32, 32, 32))
    assert res["max_abs_err"] < 3e-3, res
    assert res["mean_abs_err"] < 1e-3, res
    assert res["n_intervals"] == 1000
    assert res["integral_domain_learned"] == pytest.approx(-0.57, abs=2e-3)
    assert sum(hist.losses[-50:]) < 1e-3 * sum(hist.losses[:50])


@pytest.mark.slow  # a long end-to-end run (make test-fast leaves it out)
def test_gaussians_integral_error_below_threshold():
    """Measured (same settings, seeds 0/1/2): max abs error 9.3e-3 / 1.6e-3 / 4.3e-3. Threshold 2e-2."""
    net, hist, res = oned.fit_signal("gaussians", TrainConfig(**FAST), hidden=(32, 32, 32))
    assert res["max_abs_err"] < 2e-2, res
    assert res["mean_abs_err"] < 5e-3, res


def test_evaluate_uses_net_integrate():
    """evaluate_integrals measures net.integrate: a network whose integral is exact up to a shift
    would score 0; here we check the error equals |(Phi(b) - Phi(a)) - (F(b) - F(a))| directly."""
    net = ac.compile(oned.make_spec("poly", hidden=(8,), dtype="float64"))
    sig = get_signal("poly")
    res = oned.evaluate_integrals(net, sig, n_intervals=50, seed=3)
    gen = torch.Generator().manual_seed(3)
    ab = -1 + 3 * torch.rand(50, 2, generator=gen, dtype=torch.float64)
    a, b = ab.min(1).values, ab.max(1).values
    with torch.no_grad():
        learned = (net.integral(b[:, None]) - net.integral(a[:, None]))[:, 0]
    err = (learned - sig.definite(a, b)).abs()
    assert res["max_abs_err"] == pytest.approx(err.max().item(), rel=1e-9)
    assert res["mean_abs_err"] == pytest.approx(err.mean().item(), rel=1e-9)


def test_example_spec_matches_builtin():
    assert ac.compile(EXAMPLES / "oned_poly.yaml").spec_hash == ac.compile(oned.make_spec("poly")).spec_hash


def test_cli_train_1d_writes_outputs(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    oned.add_parser(sub)
    args = parser.parse_args(
        [
            "train-1d",
            "--signal",
            "all",
            "--steps",
            "40",
            "--batch",
            "64",
            "--hidden",
            "16,16",
            "--activation",
            "tanh",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--intervals",
            "100",
            "--mc-seeds",
            "20",
            "--mc-samples",
            "8",
        ]
    )
    assert args.func is oned.run_cli
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "exact -0.570000" in out and "| poly |" in out and "| gaussians |" in out
    assert "variance reduction" in out and "| poly | sobol | 8 |" in out
    results = json.loads((tmp_path / "oned_results.json").read_text())
    assert [r["signal"] for r in results] == ["poly", "gaussians"]
    for r in results:  # the Monte Carlo study: 20 intervals x 20 seeds, every sampler, and its curve
        mc = r["mc"]
        assert mc["seeds"] == 20 and set(mc["samplers"]) == {"uniform", "stratified", "sobol"}
        for s in mc["samplers"].values():
            assert 0.5 < s["coverage_95"] <= 1 and s["variance_reduction"] > 0 and s["corrected_rmse"] > 0
        assert len(mc["curve"]["samples"]) == len(mc["curve"]["plain_uniform"]) == 5
    assert (tmp_path / "oned_mc_error.png").stat().st_size > 10_000
    for name in ("poly", "gaussians"):
        assert (tmp_path / f"oned_{name}.png").stat().st_size > 10_000
        assert (tmp_path / f"oned_{name}.safetensors").exists()


def test_cli_rejects_bad_hidden():
    parser = argparse.ArgumentParser()
    oned.add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["train-1d", "--hidden", "a,b"])


def test_parse_activation_forms():
    assert oned.parse_activation("swish") == "swish"
    assert oned.parse_activation("sine:30") == {"name": "sine", "w0": 30.0}
    assert oned.parse_activation("{formula: x*tanh(x)}") == {"formula": "x*tanh(x)"}
    assert oned.make_spec("poly", activation="sine")["init"] == "siren"


def test_demo_prints_integral_against_exact(capsys):
    res = oned.demo(steps=50, mc_seeds=10)
    out = capsys.readouterr().out
    assert "[poly]" in out and "exact -0.570000" in out and "MC uniform" in out
    assert res["signal"] == "poly" and res["steps"] == 50


def test_cli_unavailable_device_is_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    parser = argparse.ArgumentParser()
    oned.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-1d", "--device", "cuda", "--steps", "1"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "Traceback" not in err
