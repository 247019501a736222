"""The training loop: first-order fitting of compiled grad networks."""

from __future__ import annotations

import math

import pytest
import torch

import autoint_compiler as ac
from autoint_compiler.runtime.train import (
    History,
    LineData,
    TrainConfig,
    fit_line_integrals,
    fit_samples,
    line_integral_mc,
    train,
)


def _net(hidden=(32, 32), act="swish", inputs=None, name="train_net", **extra):
    spec = {
        "name": name,
        "inputs": inputs or {"t": 1},
        "integrate": ["t"],
        "output": 1,
        "mlp": {"hidden": list(hidden), "activation": act},
        "seed": 0,
        **extra,
    }
    return ac.compile(spec)


def _sin_sampler(n, gen):
    t = torch.rand(n, 1, generator=gen, device=gen.device) * 4 - 2
    return t, torch.sin(2 * t)


def _head_tail(h: History, k: int = 20) -> tuple[float, float]:
    return sum(h.losses[:k]) / k, sum(h.losses[-k:]) / k


def test_fit_samples_decreases_loss_and_fits():
    net = _net()
    cfg = TrainConfig(steps=400, lr=5e-3, batch_size=256, progress=False, threads=1)
    hist = fit_samples(net, _sin_sampler, cfg)
    head, tail = _head_tail(hist)
    assert len(hist.losses) == 400 and all(math.isfinite(v) for v in hist.losses)
    assert tail < 0.05 * head, (head, tail)
    assert hist.wall_time > 0 and hist.steps_per_s > 0 and hist.device == "cpu"
    # the fitted grad network integrates: int_0^1 sin(2t) dt = (1 - cos 2) / 2
    got = net.integrate(torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1, 1)).item()
    assert abs(got - (1 - math.cos(2.0)) / 2) < 0.05


def test_training_is_reproducible_with_seed():
    cfg = TrainConfig(steps=30, lr=1e-2, batch_size=64, seed=3, progress=False, threads=1)
    h1 = fit_samples(_net(), _sin_sampler, cfg)
    h2 = fit_samples(_net(), _sin_sampler, cfg)
    assert h1.losses == h2.losses


def test_train_updates_shared_parameters_first_order_only(monkeypatch):
    """The grad network trains with plain backward: creating a double-backward graph is forbidden."""
    net = _net(hidden=(8,))
    before = [p.detach().clone() for p in net.integral.parameters()]
    real_grad = torch.autograd.grad

    def no_double_backward(*args, **kwargs):
        if kwargs.get("create_graph"):
            raise AssertionError("training must not use create_graph=True")
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_double_backward)
    seen = []
    hist = train(
        net,
        lambda grad, gen, step: (grad(torch.rand(16, 1, generator=gen)) - 1.0).pow(2).mean(),
        TrainConfig(steps=5, progress=False, threads=1),
        callback=lambda step, loss: seen.append(step),
    )
    assert seen == [0, 1, 2, 3, 4] and hist.steps == 5
    after = list(net.integral.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_progress_bar_can_be_forced(capsys):
    fit_samples(_net(hidden=(4,)), _sin_sampler, TrainConfig(steps=3, batch_size=8, progress=True, threads=1))
    err = capsys.readouterr().err
    assert "3/3" in err


def test_config_validation():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_cuda_request_without_cuda_is_clear():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        fit_samples(_net(hidden=(4,)), _sin_sampler, TrainConfig(steps=1, device="cuda", progress=False, threads=1))


def test_line_integral_mc_midpoint_and_stratified():
    # a fake grad network: g(y, t) = y * t^2 -> int_a^b = y (b^3 - a^3) / 3
    def g(x):
        return x[:, :1] * x[:, 1:2] ** 2

    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    a = torch.tensor([0.0, -1.0, 0.5], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 0.75], dtype=torch.float64)
    exact = x[:, 0] * (b**3 - a**3) / 3
    mid = line_integral_mc(g, x, a, b, column=1, n_samples=200, stratified=False)[:, 0]
    assert torch.allclose(mid, exact, rtol=1e-4)
    gen = torch.Generator().manual_seed(0)
    strat = line_integral_mc(g, x, a, b, column=1, n_samples=64, generator=gen)[:, 0]
    assert torch.allclose(strat, exact, rtol=2e-3)
    assert not torch.equal(strat, mid)


@pytest.mark.parametrize("mode", ["grad", "integral"])
def test_fit_line_integrals(mode):
    """Measurements are integrals of f(y, t) = 1 + y*t over [a, b] in t; the fit recovers them."""
    net = _net(hidden=(32, 32), inputs={"y": 1, "t": 1}, name="lines")
    g = torch.Generator().manual_seed(0)
    n = 512
    y = torch.rand(n, generator=g) * 2 - 1
    a = torch.rand(n, generator=g) - 1
    b = a + 0.2 + torch.rand(n, generator=g)
    value = (b - a) + y * (b**2 - a**2) / 2
    x = torch.stack([y, torch.zeros(n)], 1)
    lines = LineData(x=x, lower=a, upper=b, value=value)
    hist = fit_line_integrals(
        net, lines, TrainConfig(steps=300, lr=5e-3, batch_size=128, progress=False, threads=1), n_samples=16, mode=mode
    )
    head, tail = _head_tail(hist)
    assert tail < 0.02 * head, (head, tail)
    with torch.no_grad():
        pred = net.integrate(a[:, None], b[:, None], x)[:, 0]
    assert (pred - value).abs().mean() < 0.03
    # the grad network approximates f itself
    with torch.no_grad():
        xs = torch.tensor([[0.5, 0.2], [-0.5, -0.4]])
        assert torch.allclose(net.grad(xs)[:, 0], 1 + xs[:, 0] * xs[:, 1], atol=0.15)


def test_line_data_validation():
    with pytest.raises(ValueError, match="rows"):
        LineData(x=torch.zeros(3, 2), lower=torch.zeros(2), upper=torch.ones(3), value=torch.ones(3))


def test_torch_compile_of_grad_network_trains():
    """torch.compile works on the grad network (no double backward); aot_eager keeps it fast on CPU."""
    net = _net(hidden=(8, 8), name="compiled_grad")
    cfg = TrainConfig(
        steps=20, lr=1e-2, batch_size=64, progress=False, threads=1, compile=True, compile_backend="aot_eager"
    )
    hist = fit_samples(net, _sin_sampler, cfg)
    assert hist.compiled and all(math.isfinite(v) for v in hist.losses)
    assert sum(hist.losses[-5:]) < sum(hist.losses[:5])


def test_threads_setting_is_restored():
    before = torch.get_num_threads()
    seen = []
    train(
        _net(hidden=(4,)),
        lambda grad, gen, step: (seen.append(torch.get_num_threads()), grad(torch.rand(4, 1)).pow(2).mean())[1],
        TrainConfig(steps=2, progress=False, threads=1),
    )
    assert seen == [1, 1]
    assert torch.get_num_threads() == before
