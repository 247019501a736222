"""Training the rendering models (:mod:`.render_model`) on the package's one training loop,
:func:`autoint_compiler.runtime.train.train`: Adam with cosine decay, gradient clipping, a progress bar,
resumable run directories (:mod:`autoint_compiler.runtime.runs`: parameters, optimizer, generator and
losses restored exactly, cumulative training time) and the divergence guard
(:class:`autoint_compiler.runtime.train.DivergenceGuard`: a non-finite or blown-up loss restores the last
good state and backs the learning rate off).

On top of that, one check the loop cannot make: a model that ends no better than the mean training
colour as a constant image (a collapse at the start: the density died and never came back), or
whose training the guard stopped, is trained again from scratch at half the learning rate
(``restarts`` in the result), up to ``max_restarts`` times.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runtime.checkpoint import CheckpointError
from ..runtime.train import TrainConfig, resolve_device, train
from .render_model import AutoIntField, QuadratureField, RenderSettings, _dtype, jitter_cuts
from .render_scenes import Views

__all__ = ["loss_terms", "consistency_penalty", "density_bias_at", "train_config", "train_model", "step_seconds"]


def loss_terms(model: nn.Module, o, d, rgb, gen, s: RenderSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one batch of rays (see :mod:`.render` for the three AutoInt losses)."""
    if isinstance(model, QuadratureField):
        loss = torch.mean((model(o, d, gen) - rgb) ** 2)
        return loss, {"loss": float(loss.detach())}
    assert isinstance(model, AutoIntField)
    cuts = model.cuts(o, d)
    if s.cut_jitter > 0 and model.sampler is None:
        cuts = jitter_cuts(cuts, s.cut_jitter, gen)
    loss = o.new_zeros(())
    stats: dict[str, float] = {}
    if s.loss in ("both", "section"):
        sec = torch.mean((model.section(o, d, cuts) - rgb) ** 2)
        loss = loss + sec
        stats["sec"] = float(sec.detach())
    if s.loss in ("both", "samples"):
        per = max(1, s.samples_per_ray // model.k)
        c_in = cuts.detach() if s.loss == "both" else cuts
        pred, g = model.sample_render(o, d, c_in, per, gen)
        smp = torch.mean((pred - rgb) ** 2)
        loss = loss + smp
        if s.density_act == "relu":
            loss = loss + s.neg_penalty * torch.relu(-g).mean()
        stats["smp"] = float(smp.detach())
    if s.consistency_weight > 0:
        loss = loss + s.consistency_weight * consistency_penalty(model, gen, s.consistency_points)
    stats["loss"] = float(loss.detach())
    return loss, stats


def consistency_penalty(model: AutoIntField, gen: torch.Generator, n_points: int) -> torch.Tensor:
    """The ray-consistency regulariser: for ``n_points`` random points of the unit ball (the scene),
    two random directions each, the mean squared difference of the densities the two rays assign
    to the point (grad network of the density), relative to the mean squared density."""
    sig = model.point_density(*_random_points_and_directions(n_points, 2, gen, model.near, model.far))
    sig = sig.reshape(n_points, 2)
    return ((sig[:, 0] - sig[:, 1]) ** 2).mean() / (sig.detach().pow(2).mean() + 1e-6)


def _random_points_and_directions(
    n_points: int, n_dirs: int, gen: torch.Generator | None, near: float, far: float, dtype=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``[o, d, t]`` for ``n_dirs`` random unit directions through each of ``n_points`` random
    points of the unit ball (``x = o + t d`` with ``t`` mid-segment): ``(o, d, t)``."""
    device = gen.device if gen is not None else torch.device("cpu")
    dtype = dtype or torch.get_default_dtype()
    kw = dict(generator=gen, device=device, dtype=dtype)
    u = torch.randn(n_points, 3, **kw)
    r = torch.rand(n_points, 1, **kw) ** (1.0 / 3.0)
    x = (u / u.norm(dim=1, keepdim=True) * r).repeat_interleave(n_dirs, 0)
    d = torch.randn(n_points * n_dirs, 3, **kw)
    d = d / d.norm(dim=1, keepdim=True)
    t = torch.full((n_points * n_dirs, 1), 0.5 * (near + far), device=device, dtype=dtype)
    return x - t * d, d, t


class _Bundle:
    """What the runtime's loop and checkpoints need of a network: ``.integral`` (the module whose
    parameters are trained and saved: every network of the method, sampler included), ``.grad``
    (the module handed to the loss: the same), ``.spec_hash`` (here: a hash of the settings that
    shape the model and its training, so a run directory of another configuration is not resumed)
    and ``.name``."""

    def __init__(self, model: nn.Module, name: str, arch: dict[str, Any]):
        self.integral = self.grad = model
        self.name = name
        self.spec_hash = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()


_ARCH_KEYS = (
    "size hidden_sigma hidden_color frequencies dir_frequencies skips activation sampler_hidden sampler_frequencies "
    "section_eps uniform_sections samples_per_ray loss neg_penalty sigma_scale density_act color_act color_mode "
    "density_bias bias_decay consistency_weight consistency_points batch_rays near far dtype n_train cut_jitter"
).split()


def _arch(model: nn.Module, method: str, s: RenderSettings) -> dict[str, Any]:
    arch = {k: getattr(s, k) for k in _ARCH_KEYS}
    arch["method"] = method
    if isinstance(model, AutoIntField):
        arch["spec_hashes"] = [model.sigma_net.spec_hash, model.color_net.spec_hash]
    return arch


def train_config(
    s: RenderSettings,
    *,
    steps: int | None = None,
    lr: float | None = None,
    run_dir=None,
    checkpoint_every: int | None = None,
) -> TrainConfig:
    """The runtime's :class:`TrainConfig` for these settings (divergence guard on)."""
    return TrainConfig(
        steps=int(s.steps if steps is None else steps),
        lr=float(s.lr if lr is None else lr),
        batch_size=s.batch_rays,
        seed=s.seed,
        device=s.device,
        progress=s.progress,
        lr_min_factor=s.lr_min_factor,
        grad_clip=s.grad_clip,
        threads=s.threads,
        run_dir=None if run_dir is None else str(run_dir),
        checkpoint_every=(s.checkpoint_every if checkpoint_every is None else checkpoint_every) if run_dir else 0,
        keep_checkpoints=1,
        resume=run_dir is not None,
        guard=s.guard,
    )


def density_bias_at(s: RenderSettings, step: int, steps: int) -> float:
    """AutoInt's density bias at ``step`` of ``steps``: ``s.density_bias``, decayed linearly to 0
    over the first ``s.bias_decay`` of the steps (``bias_decay=0``: constant). The bias keeps every
    section's relu alive while the networks are random (a negative section average has no gradient:
    at initialisation about half the sections are dead); kept to the end it makes empty space need a
    negative slope of Phi along each ray, which held-out views do not get (floaters)."""
    if s.bias_decay <= 0:
        return float(s.density_bias)
    return float(s.density_bias) * max(0.0, 1.0 - step / (s.bias_decay * max(1, steps)))


def _smoothed(losses: list[float], window: int = 50) -> float:
    tail = [v for v in losses if math.isfinite(v)][-window:]
    return sum(tail) / len(tail) if tail else float("nan")


def train_model(
    model: nn.Module,
    train_views: Views,
    s: RenderSettings,
    *,
    method: str = "",
    run_dir: str | Path | None = None,
    desc: str = "render",
    steps: int | None = None,
    checkpoint_every: int | None = None,
    rebuild=None,
) -> dict[str, Any]:
    """Train ``model`` on random batches of the training rays with the runtime's loop.

    ``run_dir``: a run directory (checkpoints every ``checkpoint_every`` steps and at the end); a run
    found there resumes (a finished one is just loaded; one of another configuration is started
    over). ``steps`` and ``checkpoint_every`` override ``s.steps`` and ``s.checkpoint_every``
    (time-matched runs: as many checkpoints as the run they are matched to). ``rebuild()``, if given, builds a
    fresh model for a restart after a collapse (without it there is none). Returns ``{"train_s",
    "steps", "final_loss", "resumed_from", "recoveries", "restarts", "stopped_early", "collapsed", "model"}``
    (a restart needs ``s.restart_min_steps`` steps: a short run that has not learned yet is no collapse)
    (``model``: the trained one, a rebuilt one after a restart)."""
    device = resolve_device(s.device)
    dtype = _dtype(s)
    o_all, d_all, rgb_all = (v.to(device, dtype) for v in train_views.flat())
    n_rays = o_all.shape[0]
    # the floor: the mean training colour as a constant image
    const_mse = float(((rgb_all - rgb_all.mean(0)) ** 2).mean())
    restarts: list[dict[str, Any]] = []
    lr = s.lr
    while True:
        model.to(device)
        bundle = _Bundle(model, f"render/{method}", _arch(model, method, s))

        rd = None if run_dir is None else Path(run_dir) / (f"restart{len(restarts)}" if restarts else "")
        cfg = train_config(s, steps=steps, lr=lr, run_dir=rd, checkpoint_every=checkpoint_every)

        def loss_fn(module, gen, step, _model=model, _steps=cfg.steps):
            if isinstance(_model, AutoIntField):
                _model.density_bias = density_bias_at(s, step, _steps)
            idx = torch.randint(0, n_rays, (s.batch_rays,), generator=gen, device=device)
            return loss_terms(module, o_all[idx], d_all[idx], rgb_all[idx], gen, s)[0]

        try:
            hist = train(bundle, loss_fn, cfg, desc=desc, module="grad")
        except CheckpointError as exc:  # another configuration in the run directory: start over
            print(f"note: not resuming {desc}: {exc}", file=sys.stderr)
            shutil.rmtree(Path(rd) / "checkpoints", ignore_errors=True)
            hist = train(bundle, loss_fn, cfg, desc=desc, module="grad")
        if isinstance(model, AutoIntField):  # what it renders with (also after loading a finished run)
            model.density_bias = density_bias_at(s, cfg.steps, cfg.steps)
        final = _smoothed(hist.losses)
        collapsed = hist.stopped_early or (  # the guard gave up, or it never beat a constant image
            cfg.steps >= s.restart_min_steps and (not math.isfinite(final) or final > 0.8 * const_mse)
        )
        if not collapsed or rebuild is None or len(restarts) >= s.max_restarts:
            break
        restarts.append({"final_loss": final, "constant_loss": const_mse, "lr": lr, "train_s": hist.train_s})
        print(f"note: {desc} collapsed (loss {final:.3g}, constant image {const_mse:.3g}); restarting at lr {lr / 2:g}")
        lr *= 0.5
        model = rebuild()
    model.eval()
    return {
        "train_s": float(hist.train_s + sum(r["train_s"] for r in restarts)),
        "steps": cfg.steps,
        "final_loss": final,
        "resumed_from": hist.resumed_from,
        "recoveries": hist.recoveries,
        "restarts": restarts,
        "stopped_early": hist.stopped_early,
        "collapsed": collapsed,  # still, after the restarts (not recovered)
        "model": model,
    }


def step_seconds(
    models: dict[str, nn.Module], train_views: Views, s: RenderSettings, steps: int = 16, rounds: int = 3
) -> dict[str, float]:
    """Seconds per training step of each model in the training loop itself (the runtime's
    :func:`train`, as :func:`train_model` runs it, without checkpoints), measured interleaved:
    every model in turn, ``rounds`` times ``steps`` steps, the fastest round; on a shared machine a
    burst of load then hits every model alike. The models are trained (pass fresh ones)."""
    device = resolve_device(s.device)
    dtype = _dtype(s)
    o_all, d_all, rgb_all = (v.to(device, dtype) for v in train_views.flat())
    n_rays = o_all.shape[0]
    best = {name: math.inf for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            bundle = _Bundle(model, name, {})

            def loss_fn(module, gen, step, _model=model):
                if isinstance(_model, AutoIntField):
                    _model.density_bias = density_bias_at(s, step, steps)
                idx = torch.randint(0, n_rays, (s.batch_rays,), generator=gen, device=device)
                return loss_terms(module, o_all[idx], d_all[idx], rgb_all[idx], gen, s)[0]

            hist = train(bundle, loss_fn, replace(train_config(s, steps=steps), progress=False), module="grad")
            best[name] = min(best[name], hist.wall_time / steps)
    return best
