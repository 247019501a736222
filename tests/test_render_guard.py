"""Divergence detection and recovery (the runtime's training loop, and render's restart after a
collapse) and the ray-consistency metric and regulariser of the rendering experiment."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from autoint_compiler.apps import render as R
from autoint_compiler.apps import render_scenes as RS
from autoint_compiler.apps import render_train as RT
from autoint_compiler.runtime.train import History, TrainConfig, train

TINY = R.RenderSettings(
    scenes=("blobs",),
    size=6,
    n_train=2,
    n_test=1,
    gt_samples=512,
    sections=(4,),
    quad_samples=(8,),
    hidden_sigma=(16, 16),
    hidden_color=(16, 16),
    frequencies=2,
    sampler_hidden=(16,),
    sampler_frequencies=1,
    steps=20,
    batch_rays=32,
    progress=False,
    threads=1,
    timing_repeats=1,
)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class _Net:
    """The least a network needs for runtime.train: ``.integral`` and ``.grad`` sharing parameters."""

    def __init__(self):
        torch.manual_seed(0)
        self.integral = self.grad = nn.Linear(2, 1, dtype=torch.float64)


def _fit_loss(bad_at: dict[int, float]):
    """A least-squares fit whose loss is replaced by ``bad_at[step]`` (once per step) to fake a divergence."""
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = x @ torch.tensor([[1.5], [-0.5]], dtype=torch.float64)
    seen: set[int] = set()

    def loss_fn(module, gen, step):
        loss = ((module(x) - y) ** 2).mean()
        if step in bad_at and step not in seen:
            seen.add(step)
            return loss * 0 + bad_at[step]
        return loss

    return loss_fn


def test_guard_recovers_from_a_non_finite_loss():
    net = _Net()
    cfg = TrainConfig(steps=60, lr=0.05, batch_size=1, guard=True, guard_every=10, progress=False)
    hist = train(net, _fit_loss({37: float("nan")}), cfg)
    (event,) = hist.recoveries
    assert event["step"] == 37 and event["restored_to"] == 30 and event["reason"] == "non-finite loss"
    assert event["lr_factor"] == 0.5
    assert not hist.stopped_early and all(math.isfinite(v) for v in hist.losses)
    assert hist.losses[-1] < 0.02 * hist.losses[0]  # it went on training to the end
    assert all(torch.isfinite(p).all() for p in net.integral.parameters())


def test_guard_detects_a_blow_up_and_gives_up_after_guard_max():
    net = _Net()
    cfg = TrainConfig(steps=60, lr=0.05, batch_size=1, guard=True, guard_every=5, guard_max=1, progress=False)
    hist = train(net, _fit_loss({40: 1e6, 45: 1e6}), cfg)  # 1e6 >> 8x the best average: a blow-up
    assert [e["step"] for e in hist.recoveries] == [40, 45]
    assert "blew up" in hist.recoveries[0]["reason"] and hist.recoveries[0]["restored_to"] == 40
    assert hist.recoveries[1]["restored_to"] is None and hist.stopped_early  # the second: stop
    assert all(torch.isfinite(p).all() for p in net.integral.parameters())
    # without the guard the same fake blow-up passes unnoticed (the loss is only reported)
    plain = train(_Net(), _fit_loss({40: 1e6}), replace(cfg, guard=False))
    assert plain.recoveries == [] and plain.losses[40] == 1e6


def test_guard_is_off_by_default_and_leaves_training_unchanged():
    a, b = _Net(), _Net()
    h1 = train(a, _fit_loss({}), TrainConfig(steps=30, lr=0.05, batch_size=1, progress=False))
    h2 = train(b, _fit_loss({}), TrainConfig(steps=30, lr=0.05, batch_size=1, progress=False, guard=True))
    assert h1.losses == h2.losses and h2.recoveries == []


def test_render_restarts_a_collapsed_model(monkeypatch):
    """A model that ends no better than the constant image is trained again at half the rate."""
    train_views, _ = RS.make_views(RS.get_scene("blobs"), 2, 1, 6, gt_samples=512)
    calls = []
    real = RT.train

    def fake_train(bundle, loss_fn, cfg, **kw):
        calls.append(cfg.lr)
        if len(calls) == 1:  # the first attempt "collapsed": its loss never fell
            return History(losses=[1.0] * cfg.steps, steps=cfg.steps, train_s=2.0)
        return real(bundle, loss_fn, cfg, **kw)

    monkeypatch.setattr(RT, "train", fake_train)
    s = replace(TINY, steps=10, max_restarts=1, restart_min_steps=10)
    built = []

    def rebuild():
        built.append(R.build_model("autoint-K4", s))
        return built[-1]

    info = R.train_model(R.build_model("autoint-K4", s), train_views, s, method="autoint-K4", rebuild=rebuild)
    assert calls == [s.lr, s.lr / 2]
    (restart,) = info["restarts"]
    assert restart["final_loss"] == 1.0 and restart["constant_loss"] < 1.0
    assert info["model"] is built[0] and info["train_s"] > 2.0
    assert math.isfinite(info["final_loss"]) and info["final_loss"] < 1.0  # the real second run's
    assert info["steps"] == 10
    # after the last allowed restart the result says whether it is still collapsed (not recovered)
    assert info["collapsed"] == (info["final_loss"] > 0.8 * restart["constant_loss"])


class _Fake(nn.Module):
    """A density of the direction only: 1 + a d_z (a ray-inconsistent field with a known spread)."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.near, self.far = 2.5, 4.5

    def point_density(self, o, d, t):
        return (1.0 + self.a * d[:, 2]).reshape(-1)


def test_ray_consistency_metric():
    """For uniform random directions d_z is uniform on [-1, 1]: the density 1 + a d_z has mean 1 and
    standard deviation a / sqrt(3) over directions (times sqrt(7/8) for the population std of 8
    samples, on average), so the spread is about 0.54 a; a field of the position only has 0."""
    assert R.ray_consistency(_Fake(0.0)) == 0.0
    spread = R.ray_consistency(_Fake(0.5), n_points=512, n_dirs=8)
    assert 0.54 * 0.5 * 0.9 < spread < 0.54 * 0.5 * 1.1, spread
    quad = R.build_model("quadrature-N8", replace(TINY, dtype="float64"))
    assert R.ray_consistency(quad) < 1e-12  # sigma(x): the same from every direction (up to rounding of x)
    auto = R.build_model("autoint-K4", replace(TINY, dtype="float64", density_bias=1.0))
    assert R.ray_consistency(auto) > 0.01  # AutoInt's density network reads the direction


@pytest.mark.parametrize("encoding", ["point", "plucker"])
def test_consistency_regulariser_reduces_the_spread(encoding):
    """A few steps of the regulariser alone (image loss weight ~0 next to it) make the density
    networks' answers from different directions agree better than at initialisation."""
    s = replace(TINY, dtype="float64", ray_encoding=encoding, density_bias=1.0, uniform_sections=True)
    model = R.build_model("autoint-K4", s)
    before = R.ray_consistency(model, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        opt.zero_grad()
        R.consistency_penalty(model, gen, 64).backward()
        opt.step()
    after = R.ray_consistency(model, seed=3)
    assert after < 0.5 * before, (before, after)


def test_plucker_rows_describe_the_same_point():
    """Plucker rows [o x d, d, o.d + t]: the point d x m + s d is o + t d, and the grad network is
    the derivative along the ray (central differences of Phi in t)."""
    import autoint_compiler as ac
    from autoint_compiler.apps.render_model import _plucker_inputs

    g = torch.Generator().manual_seed(0)
    o = torch.randn(5, 3, generator=g, dtype=torch.float64) * 3
    d = torch.nn.functional.normalize(torch.randn(5, 3, generator=g, dtype=torch.float64), dim=1)
    t = torch.rand(5, 2, generator=g, dtype=torch.float64) * 2 + 2.5
    rows = _plucker_inputs(o, d, t).reshape(5, 2, 7)
    m, dd, s = rows[..., :3], rows[..., 3:6], rows[..., 6:]
    torch.testing.assert_close(torch.linalg.cross(dd, m, dim=-1) + s * dd, o[:, None] + t[..., None] * d[:, None])
    net = ac.compile(R.field_spec("sigma", replace(TINY, dtype="float64", ray_encoding="plucker")))
    x = rows.reshape(10, 7)
    h = 1e-5
    fd = (
        net.integral(x + torch.tensor([0.0] * 6 + [h], dtype=x.dtype))
        - net.integral(x - torch.tensor([0.0] * 6 + [h], dtype=x.dtype))
    ) / (2 * h)
    torch.testing.assert_close(net.grad(x), fd, rtol=1e-6, atol=1e-8)
