"""Neural volume rendering with AutoInt (Lindell et al., CVPR 2021, Sec. 5.2), against a NeRF-style
quadrature baseline, on procedural scenes (:mod:`.render_scenes`).

The radiance field
------------------
Density and colour are two compiled AutoInt networks over the ray (``examples/render_sigma.yaml``,
``examples/render_color.yaml``): inputs ``o`` (ray origin, 3), ``d`` (unit direction, 3) and ``t``
(1), ``integrate: [t]``. Inside the graph the point ``x = o + t d`` is formed (``concat``, ``mul``,
``add``), positionally encoded and concatenated with ``d``; an MLP maps that to the output. So
``Phi(o, d, t) = G(o + t d, d)`` and the grad network is ``dPhi/dt = d . grad_x G``: the integrand
lives at 3-D points (which is what lets it generalise to new views), while ``Phi`` stays a function
of the ray, as an antiderivative along rays must.

Piecewise (section) model, used to render
-----------------------------------------
A sampling network (small MLP of the ray: its point closest to the origin and its direction) gives
``K`` section weights ``w = (1 - eps) softmax(logits) + eps / K``; the ``K + 1`` cut points are
``t_0 = near``, ``t_i = near + (far - near) cumsum(w)_i`` (sorted, ``t_K = far``, no section
narrower than ``eps (far - near) / K``). With ``delta_i = t_{i+1} - t_i``:

    sigma_i = s * relu((Phi_sigma(t_{i+1}) - Phi_sigma(t_i)) / delta_i),
    c_i     = (Phi_c(t_{i+1}) - Phi_c(t_i)) / delta_i,
    alpha_i = 1 - exp(-sigma_i delta_i),  T_i = prod_{j<i} (1 - alpha_j),  C = sum_i T_i alpha_i c_i,

``2 (K + 1)`` integral-network evaluations per ray (``s`` = ``sigma_scale``; colours are clipped to
[0, 1] only for the images and metrics). ``--uniform-sections`` uses equal sections instead.

Training (first-order backprop only)
------------------------------------
Each step draws a batch of training rays. Two image losses are implemented (``--loss``):

* ``section`` (default): the section model above, with the integral networks at the sampler's cut
  points; MSE to the pixel colour. This is exactly what is rendered at test time, so what is
  measured is what is optimised; it trains the sampling network (the cut points move the sections)
  and it is cheap (``2 (K + 1)`` integral-network rows per ray, a plain backward pass through Phi).
* ``samples``: the paper's scheme: ``S`` stratified samples of ``t`` inside every section (128 per
  ray, 4 per section at K = 32 in the original); the grad networks give ``sigma = s relu(g_sigma)``
  and ``c = g_c`` there, composited as a quadrature with ``delta = delta_i / S``; MSE to the pixel
  colour; a small penalty on ``relu(-g_sigma)`` keeps the raw density non-negative (relu of a section
  average is the average of the relus only where nothing is negative). The grad networks learn the
  integrand sample by sample, but the colour of empty space is left unconstrained, and a section
  average of colour averages it in: rendering with sections then goes wrong.
* ``both``: the sum (cut points detached in the samples term: the sampler is trained by the term
  that renders).

In our measurements (docs/results/render/README.md) ``section`` gave the best held-out PSNR at the
same number of steps and 3-5x less training time than ``both``; ``samples`` alone renders badly
with sections, for the reason above, although its grad networks form a fair quadrature field.

Baseline: NeRF-style quadrature with plain MLPs of the same widths on the encoded 3-D point,
``N`` stratified samples per ray in training, bin midpoints at test time, same steps, batch, lr.

CLI: ``autoint-compile render [--quick] --out DIR`` writes ``DIR/metrics.json`` (scene -> method ->
``{psnr, ssim, render_ms, evals_per_ray, train_s}``, methods ``quadrature-N<N>`` and
``autoint-K<K>``), ``DIR/settings.json``, ``DIR/results.md``, the test views
``DIR/<scene>/<method>_view<i>.png`` and ``DIR/<scene>_compare.png``; checkpoints (safetensors) go to
``DIR/checkpoints`` and an interrupted run resumes from them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..runtime.train import device_error, resolve_device, show_progress
from ._argtypes import SEED, int_list, int_range, positive_float
from .render_scenes import SCENES, Views, composite, get_scene, make_views

__all__ = [
    "RenderSettings",
    "QUICK",
    "field_spec",
    "posenc",
    "SamplingNet",
    "uniform_cuts",
    "section_render",
    "AutoIntField",
    "QuadratureField",
    "build_model",
    "train_model",
    "render_views",
    "evaluate",
    "run",
    "add_parser",
    "run_cli",
    "main",
]


DENSITY_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "softplus": nn.functional.softplus,
}
COLOR_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"linear": lambda c: c, "sigmoid": torch.sigmoid}


@dataclass
class RenderSettings:
    """Sizes and options of the rendering experiment (defaults: the full CPU run; see :data:`QUICK`)."""

    scenes: tuple[str, ...] = tuple(SCENES)
    size: int = 48  # image side (pixels)
    n_train: int = 40  # training views
    n_test: int = 4  # held-out test views
    gt_samples: int = 1024  # midpoint samples per ray of the ground truth (>= 512)
    radius: float = 3.5  # camera distance from the origin
    fov: float = 30.0  # degrees
    near: float = 2.5
    far: float = 4.5
    sections: tuple[int, ...] = (8, 16, 32)  # K of the AutoInt models
    quad_samples: tuple[int, ...] = (64, 128)  # N of the quadrature baselines
    hidden_sigma: tuple[int, ...] = (64, 64, 64)
    hidden_color: tuple[int, ...] = (64, 64, 64)
    frequencies: int = 6  # posenc octaves of the point x
    dir_frequencies: int = 0  # posenc octaves of the direction d in the AutoInt networks (0: raw d)
    skips: tuple[int, ...] = ()  # hidden layers that also get the encoded input (the paper: 4)
    activation: str = "swish"
    sampler_hidden: tuple[int, ...] = (64, 64)
    sampler_frequencies: int = 3
    section_eps: float = 0.2  # share of each ray spread uniformly over the sections
    uniform_sections: bool = False
    samples_per_ray: int = 64  # grad-network samples per ray in the AutoInt 'samples' loss
    loss: str = "section"  # section | both | samples (see the module docstring)
    neg_penalty: float = 0.01
    sigma_scale: float = 10.0
    density_act: str = "relu"  # relu | softplus: applied to raw density (per sample or section average)
    color_act: str = "linear"  # linear | sigmoid
    steps: int = 3000
    batch_rays: int = 256
    lr: float = 1e-2  # one rate for every method (picked on training-view PSNR; see docs/results/render)
    lr_min_factor: float = 0.05
    grad_clip: float | None = 1.0  # max gradient norm (None: none); without it AutoInt at lr 1e-2 can collapse
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    progress: bool | None = None
    checkpoint_every: int = 250
    render_chunk: int = 4096  # network evaluations (rows) per forward pass when rendering
    timing_repeats: int = 7
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss not in ("both", "samples", "section"):
            raise ValueError(f"loss must be 'both', 'samples' or 'section', got {self.loss!r}")
        if self.gt_samples < 512:
            raise ValueError(f"gt_samples must be >= 512, got {self.gt_samples}")
        if not 0.0 <= self.section_eps < 1.0:
            raise ValueError(f"section_eps must be in [0, 1), got {self.section_eps}")
        if not self.near < self.far:
            raise ValueError(f"near must be < far, got {self.near}, {self.far}")
        for name in self.scenes:
            get_scene(name)
        if self.density_act not in DENSITY_ACTS or self.color_act not in COLOR_ACTS:
            raise ValueError(
                f"density_act must be one of {sorted(DENSITY_ACTS)} and color_act one of {sorted(COLOR_ACTS)}, "
                f"got {self.density_act!r}, {self.color_act!r}"
            )


#: ``--quick``: a few minutes per scene on a 2-core CPU, same outputs.
QUICK = dict(size=32, n_train=40, n_test=3, gt_samples=512, steps=600, batch_rays=128, samples_per_ray=32)

#: ``--paper-size``: the original's field network (8 x 256 swish, posenc 10 octaves, skip at layer 4).
PAPER = dict(hidden_sigma=(256,) * 8, hidden_color=(256,) * 8, frequencies=10, skips=(4,))


def _dtype(s: RenderSettings) -> torch.dtype:
    return torch.float64 if s.dtype == "float64" else torch.float32


# ----------------------------------------------------------------------------- the compiled field networks


def field_spec(kind: str, settings: RenderSettings | None = None) -> dict[str, Any]:
    """Spec of the density (``kind="sigma"``, 1 output) or colour (``"color"``, 3) network; the
    defaults are ``examples/render_sigma.yaml`` and ``examples/render_color.yaml``."""
    s = settings or RenderSettings()
    if kind not in ("sigma", "color"):
        raise ValueError(f"kind must be 'sigma' or 'color', got {kind!r}")
    hidden = s.hidden_sigma if kind == "sigma" else s.hidden_color
    graph: list[dict[str, Any]] = [
        {"name": "ttt", "op": "concat", "in": ["t", "t", "t"]},
        {"name": "td", "op": "mul", "in": ["ttt", "d"]},
        {"name": "x", "op": "add", "in": ["o", "td"]},
        {"name": "enc", "op": "posenc", "in": ["x"], "frequencies": int(s.frequencies), "include_input": True},
    ]
    dname = "d"
    if s.dir_frequencies > 0:
        graph.append(
            {"name": "encd", "op": "posenc", "in": ["d"], "frequencies": int(s.dir_frequencies), "include_input": True}
        )
        dname = "encd"
    h = ["enc", dname]
    for i, width in enumerate(hidden):
        if i in s.skips and i > 0:
            h = [*h, "enc", dname]
        graph.append({"name": f"fc{i}", "op": "linear", "in": h, "out": int(width)})
        graph.append({"name": f"act{i}", "op": s.activation, "in": [f"fc{i}"]})
        h = [f"act{i}"]
    graph.append({"name": "out", "op": "linear", "in": h, "out": 1 if kind == "sigma" else 3})
    return {
        "name": f"render_{kind}",
        "inputs": {"o": 3, "d": 3, "t": 1},
        "integrate": ["t"],
        "graph": graph,
        "seed": int(s.seed) + (0 if kind == "sigma" else 1),
        "dtype": s.dtype,
    }


def posenc(x: torch.Tensor, frequencies: int) -> torch.Tensor:
    """``[x, sin(2^k pi x), cos(2^k pi x)]`` for k < frequencies (the compiler's posenc layout)."""
    if frequencies <= 0:
        return x
    freq = (2.0 ** torch.arange(frequencies, dtype=x.dtype, device=x.device)) * math.pi
    u = (x[:, None, :] * freq[:, None]).reshape(x.shape[0], -1)
    return torch.cat([x, torch.sin(u), torch.cos(u)], 1)


def _mlp(n_in: int, hidden: Sequence[int], n_out: int, dtype: torch.dtype) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in hidden:
        layers += [nn.Linear(n_in, w, dtype=dtype), nn.SiLU()]
        n_in = w
    layers.append(nn.Linear(n_in, n_out, dtype=dtype))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- sections


class SamplingNet(nn.Module):
    """Ray -> ``K + 1`` sorted cut points in ``[near, far]``.

    Input: the ray's point closest to the origin ``p = o - (o.d) d`` and ``d`` (a ray is determined
    by them), positionally encoded; output: ``K`` logits. The last layer starts near zero (almost
    uniform sections at initialisation)."""

    def __init__(self, k: int, hidden: Sequence[int], frequencies: int, eps: float, dtype=torch.float32):
        super().__init__()
        self.k, self.frequencies, self.eps = int(k), int(frequencies), float(eps)
        n_in = 6 * (1 + 2 * self.frequencies) if self.frequencies > 0 else 6
        self.mlp = _mlp(n_in, hidden, self.k, dtype)
        with torch.no_grad():  # small, not zero: gradients reach every layer from the first step
            self.mlp[-1].weight.mul_(0.01)
            self.mlp[-1].bias.zero_()

    def forward(self, o: torch.Tensor, d: torch.Tensor, near: float, far: float) -> torch.Tensor:
        p = o - (o * d).sum(1, keepdim=True) * d
        logits = self.mlp(posenc(torch.cat([p, d], 1), self.frequencies))
        w = (1.0 - self.eps) * torch.softmax(logits, dim=1) + self.eps / self.k
        c = torch.cumsum(w, dim=1)
        c = c / c[:, -1:]  # exactly 1 at the end
        zero = torch.zeros_like(c[:, :1])
        return near + (far - near) * torch.cat([zero, c], 1)


def uniform_cuts(n_rays: int, k: int, near: float, far: float, like: torch.Tensor) -> torch.Tensor:
    """Equal sections: ``[n_rays, k + 1]``."""
    t = torch.linspace(near, far, k + 1, dtype=like.dtype, device=like.device)
    return t[None].expand(n_rays, k + 1)


def _ray_inputs(o: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Network input rows ``[o, d, t]`` for every ``t [R, M]``: ``[R * M, 7]``."""
    r, m = t.shape
    od = torch.cat([o, d], 1)[:, None, :].expand(r, m, 6)
    return torch.cat([od, t[..., None]], 2).reshape(r * m, 7)


def section_render(
    phi_sigma: Callable[[torch.Tensor], torch.Tensor],
    phi_color: Callable[[torch.Tensor], torch.Tensor],
    o: torch.Tensor,
    d: torch.Tensor,
    cuts: torch.Tensor,
    sigma_scale: float = 1.0,
    density_act: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
    color_act: Callable[[torch.Tensor], torch.Tensor] = COLOR_ACTS["linear"],
) -> torch.Tensor:
    """The piecewise model: section averages from the integral networks at the cut points
    ``cuts [R, K + 1]``, through the output non-linearities, composited. ``phi_*`` take rows
    ``[o, d, t]``. Returns ``[R, 3]``."""
    r, kp1 = cuts.shape
    x = _ray_inputs(o, d, cuts)
    ps = phi_sigma(x).reshape(r, kp1)
    pc = phi_color(x).reshape(r, kp1, 3)
    delta = cuts[:, 1:] - cuts[:, :-1]
    sigma = sigma_scale * density_act((ps[:, 1:] - ps[:, :-1]) / delta)
    color = color_act((pc[:, 1:] - pc[:, :-1]) / delta[..., None])
    return composite(sigma * delta, color)


def stratified_in_sections(cuts: torch.Tensor, per_section: int, gen: torch.Generator | None) -> torch.Tensor:
    """``per_section`` stratified samples in each section: ``[R, K * per_section]`` (sorted).
    ``gen=None``: the midpoints of the sub-bins (deterministic)."""
    r, kp1 = cuts.shape
    k = kp1 - 1
    delta = cuts[:, 1:] - cuts[:, :-1]
    j = torch.arange(per_section, dtype=cuts.dtype, device=cuts.device)
    if gen is None:
        u = torch.full((r, k, per_section), 0.5, dtype=cuts.dtype, device=cuts.device)
    else:
        u = torch.rand(r, k, per_section, generator=gen, dtype=cuts.dtype, device=cuts.device)
    t = cuts[:, :-1, None] + delta[..., None] * (j + u) / per_section
    return t.reshape(r, k * per_section)


class AutoIntField(nn.Module):
    """Density and colour AutoInt networks (compiled from specs) plus the sampling network."""

    def __init__(self, sigma_net: Any, color_net: Any, k: int, settings: RenderSettings):
        super().__init__()
        s = settings
        self.sigma_net, self.color_net = sigma_net, color_net  # the compiled networks (not modules)
        self.sigma_phi = sigma_net.integral  # registered: owns the shared parameters
        self.color_phi = color_net.integral
        self.k = int(k)
        self.near, self.far, self.sigma_scale = s.near, s.far, s.sigma_scale
        self.density_act, self.color_act = DENSITY_ACTS[s.density_act], COLOR_ACTS[s.color_act]
        self.sampler = (
            None
            if s.uniform_sections
            else SamplingNet(k, s.sampler_hidden, s.sampler_frequencies, s.section_eps, _dtype(s))
        )

    def cuts(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        if self.sampler is None:
            return uniform_cuts(o.shape[0], self.k, self.near, self.far, o)
        return self.sampler(o, d, self.near, self.far)

    def forward(self, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Render with the section model (integral networks at the cut points)."""
        return self.section(o, d, self.cuts(o, d))

    def section(self, o: torch.Tensor, d: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
        return section_render(
            self.sigma_phi, self.color_phi, o, d, cuts, self.sigma_scale, self.density_act, self.color_act
        )

    def sample_render(
        self, o: torch.Tensor, d: torch.Tensor, cuts: torch.Tensor, per_section: int, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Quadrature of the grad networks at ``per_section`` stratified samples inside each section:
        ``(rgb [R, 3], raw density g_sigma [R, M])``."""
        t = stratified_in_sections(cuts, per_section, gen)
        r, m = t.shape
        x = _ray_inputs(o, d, t)
        g = self.sigma_net.grad(x).reshape(r, m)
        c = self.color_net.grad(x).reshape(r, m, 3)
        delta = ((cuts[:, 1:] - cuts[:, :-1]) / per_section).repeat_interleave(per_section, dim=1)
        return composite(self.sigma_scale * self.density_act(g) * delta, self.color_act(c)), g

    @property
    def evals_per_ray(self) -> int:
        return self.k + 1


class QuadratureField(nn.Module):
    """NeRF-style baseline: plain MLPs (the same widths) of the encoded point, ``N`` samples/ray."""

    def __init__(self, n: int, settings: RenderSettings):
        super().__init__()
        s = settings
        torch.manual_seed(s.seed)
        n_in = 3 * (1 + 2 * s.frequencies)
        self.frequencies = s.frequencies
        self.sigma_mlp = _mlp(n_in, s.hidden_sigma, 1, _dtype(s))
        self.color_mlp = _mlp(n_in, s.hidden_color, 3, _dtype(s))
        self.n = int(n)
        self.near, self.far, self.sigma_scale = s.near, s.far, s.sigma_scale
        self.density_act, self.color_act = DENSITY_ACTS[s.density_act], COLOR_ACTS[s.color_act]

    def forward(self, o: torch.Tensor, d: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Stratified samples in ``N`` equal bins (``gen``), or the bin midpoints (``gen=None``)."""
        cuts = uniform_cuts(o.shape[0], self.n, self.near, self.far, o)
        t = stratified_in_sections(cuts, 1, gen)
        r, m = t.shape
        x = (o[:, None, :] + t[..., None] * d[:, None, :]).reshape(r * m, 3)
        e = posenc(x, self.frequencies)
        g = self.sigma_mlp(e).reshape(r, m)
        c = self.color_mlp(e).reshape(r, m, 3)
        delta = (self.far - self.near) / self.n
        return composite(self.sigma_scale * self.density_act(g) * delta, self.color_act(c))

    @property
    def evals_per_ray(self) -> int:
        return self.n


def build_model(method: str, settings: RenderSettings) -> nn.Module:
    """``quadrature-N<N>`` or ``autoint-K<K>``."""
    import autoint_compiler as ac

    kind, _, num = method.partition("-")
    n = int(num[1:])
    if kind == "quadrature":
        return QuadratureField(n, settings)
    if kind == "autoint":
        sigma = ac.compile(field_spec("sigma", settings))
        color = ac.compile(field_spec("color", settings))
        torch.manual_seed(settings.seed + 2)
        return AutoIntField(sigma, color, n, settings)
    raise ValueError(f"unknown method {method!r} (quadrature-N<N> or autoint-K<K>)")


def _method_names(s: RenderSettings) -> list[str]:
    return [f"quadrature-N{n}" for n in s.quad_samples] + [f"autoint-K{k}" for k in s.sections]


# ----------------------------------------------------------------------------- training


def _loss(model: nn.Module, o, d, rgb, gen, s: RenderSettings) -> tuple[torch.Tensor, dict[str, float]]:
    if isinstance(model, QuadratureField):
        loss = torch.mean((model(o, d, gen) - rgb) ** 2)
        return loss, {"loss": float(loss.detach())}
    assert isinstance(model, AutoIntField)
    cuts = model.cuts(o, d)
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
    stats["loss"] = float(loss.detach())
    return loss, stats


class _Bundle:
    """What :func:`autoint_compiler.runtime.checkpoint.save_checkpoint` needs: ``.integral`` (the module
    whose state dict is saved: every network of the method, sampler included), ``.spec_hash`` and
    ``.name``."""

    def __init__(self, model: nn.Module, name: str, arch: dict[str, Any]):
        self.integral = model
        self.name = name
        self.spec_hash = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()


def _arch(model: nn.Module, method: str, s: RenderSettings) -> dict[str, Any]:
    keys = (
        "size hidden_sigma hidden_color frequencies dir_frequencies skips activation sampler_hidden "
        "sampler_frequencies "
        "section_eps uniform_sections samples_per_ray loss neg_penalty sigma_scale density_act color_act steps "
        "batch_rays lr grad_clip "
        "lr_min_factor seed near far dtype"
    ).split()
    arch = {k: getattr(s, k) for k in keys}
    arch["method"] = method
    if isinstance(model, AutoIntField):
        arch["spec_hashes"] = [model.sigma_net.spec_hash, model.color_net.spec_hash]
    return arch


def _save_adam(path: Path, opt: torch.optim.Optimizer) -> None:
    from safetensors.torch import save

    from ..runtime.checkpoint import atomic_write_bytes

    tensors = {}
    for i, st in opt.state_dict()["state"].items():
        for key, v in st.items():
            tensors[f"{i}.{key}"] = torch.as_tensor(v).detach().cpu().contiguous().clone()
    atomic_write_bytes(path, save(tensors, metadata={"format": "adam-state"}))


def _load_adam(path: Path, opt: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in tensors.items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def _lr_at(s: RenderSettings, step: int) -> float:
    if s.steps <= 1:
        return s.lr
    lo = s.lr * s.lr_min_factor
    return lo + 0.5 * (s.lr - lo) * (1.0 + math.cos(math.pi * step / (s.steps - 1)))


def train_model(
    model: nn.Module,
    train: Views,
    s: RenderSettings,
    *,
    method: str = "",
    checkpoint: str | Path | None = None,
    desc: str = "render",
) -> dict[str, Any]:
    """Adam with cosine decay on random batches of training rays. With ``checkpoint`` the state is
    saved every ``checkpoint_every`` steps and at the end (safetensors: the package's checkpoint
    format for the networks, plus ``<name>.adam.safetensors``), and a run resumes from it (a
    finished one is just loaded). Returns ``{"train_s", "steps", "final_loss", "resumed_from"}``.
    Batches are drawn from a generator seeded per step, so a resumed run draws the same batches."""
    from tqdm.auto import tqdm

    from ..runtime.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint

    device = resolve_device(s.device)
    dtype = _dtype(s)
    model.to(device)
    o_all, d_all, rgb_all = (v.to(device, dtype) for v in train.flat())
    n_rays = o_all.shape[0]
    params = [p for p in model.parameters()]
    opt = torch.optim.Adam(params, lr=s.lr)
    bundle = _Bundle(model, f"render/{method}", _arch(model, method, s))
    start, prev_s, prev_loss = 0, 0.0, float("nan")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    adam_path = ckpt.with_suffix(".adam.safetensors") if ckpt is not None else None
    if ckpt is not None and ckpt.exists():
        try:
            meta = read_metadata(ckpt)
            load_checkpoint(ckpt, bundle)
            start, prev_s = int(meta.get("step", "0")), float(meta.get("train_s", "0"))
            prev_loss = float(meta.get("final_loss", "nan"))
            if start < s.steps and adam_path is not None and adam_path.exists():
                _load_adam(adam_path, opt)
        except CheckpointError as exc:  # another configuration: start over (and overwrite it)
            print(f"note: not resuming {desc}: {exc}", file=sys.stderr)
            start, prev_s = 0, 0.0
    gen = torch.Generator(device=device)
    bar = tqdm(
        total=s.steps, initial=start, desc=desc, disable=not show_progress(s.progress), dynamic_ncols=True, unit="step"
    )
    model.train()
    t0 = time.perf_counter()
    last_post, stats = t0, {"loss": float("nan")}
    losses: list[float] = []

    def final_loss() -> float:  # mean of the last 50 steps' losses (the checkpoint's, if none ran here)
        tail = losses[-50:]
        return sum(tail) / len(tail) if tail else prev_loss

    def save(step: int) -> None:
        if ckpt is None:
            return
        elapsed = prev_s + time.perf_counter() - t0
        extra = {"step": step, "train_s": f"{elapsed:.3f}", "method": method, "final_loss": repr(final_loss())}
        save_checkpoint(ckpt, bundle, extra=extra)
        if adam_path is not None:
            _save_adam(adam_path, opt)

    try:
        for step in range(start, s.steps):
            for group in opt.param_groups:
                group["lr"] = _lr_at(s, step)
            gen.manual_seed(s.seed * 1_000_003 + step)
            idx = torch.randint(0, n_rays, (s.batch_rays,), generator=gen, device=device)
            opt.zero_grad(set_to_none=True)
            loss, stats = _loss(model, o_all[idx], d_all[idx], rgb_all[idx], gen, s)
            loss.backward()
            if s.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            opt.step()
            losses.append(stats["loss"])
            bar.update(1)
            now = time.perf_counter()
            if now - last_post > 0.5 or step == s.steps - 1:
                psnr = -10 * math.log10(max(stats.get("sec", stats["loss"]), 1e-12))
                bar.set_postfix({k: f"{v:.2e}" for k, v in stats.items()} | {"psnr": f"{psnr:.1f}"})
                last_post = now
            if ckpt is not None and (step + 1) % s.checkpoint_every == 0 and step + 1 < s.steps:
                save(step + 1)
    finally:
        bar.close()
    model.eval()
    train_s = prev_s + time.perf_counter() - t0
    if start < s.steps:
        save(s.steps)
    return {
        "train_s": train_s,
        "steps": s.steps,
        "final_loss": final_loss(),
        "resumed_from": start,
    }


# ----------------------------------------------------------------------------- rendering and metrics


@torch.no_grad()
def render_rays(model: nn.Module, o: torch.Tensor, d: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """Test-time render of rays ``[R, 3]`` (sections for AutoInt, midpoints for quadrature), clipped
    to [0, 1]. Rays go through in chunks of about ``chunk_rows`` network evaluations (the same
    working-set size for every method: large batches of rows run slower once they leave the cache)."""
    chunk = max(1, chunk_rows // int(model.evals_per_ray))
    out = [model(o[i : i + chunk], d[i : i + chunk]) for i in range(0, o.shape[0], chunk)]
    return torch.cat(out).clamp(0.0, 1.0)


def render_views(model: nn.Module, views: Views, s: RenderSettings) -> tuple[list[np.ndarray], list[float]]:
    """Every view as an ``[H, W, 3]`` image, and the wall time of each render (ms, after one warm-up
    render; the fastest of ``timing_repeats``)."""
    device = resolve_device(s.device)
    dtype = _dtype(s)
    model.eval()
    images, times = [], []
    for i in range(len(views)):
        o = views.origins[i].to(device, dtype)
        d = views.directions[i].to(device, dtype)
        best = float("inf")
        img = render_rays(model, o, d, s.render_chunk)  # warm-up
        for _ in range(max(1, s.timing_repeats)):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            img = render_rays(model, o, d, s.render_chunk)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
        images.append(img.reshape(views.size, views.size, 3).double().cpu().numpy())
        times.append(best * 1000.0)
    return images, times


def interleaved_render_ms(models: dict[str, nn.Module], views: Views, s: RenderSettings) -> dict[str, float]:
    """Render time per image (ms) of each model: ``timing_repeats`` rounds, each rendering every view
    with every model in turn; per view the fastest round; the median over views."""
    device = resolve_device(s.device)
    dtype = _dtype(s)
    best = {m: [float("inf")] * len(views) for m in models}
    rays = [(views.origins[i].to(device, dtype), views.directions[i].to(device, dtype)) for i in range(len(views))]
    for model in models.values():  # warm-up
        model.eval()
        render_rays(model, *rays[0], s.render_chunk)
    for _ in range(max(1, s.timing_repeats)):
        for name, model in models.items():
            for i, (o, d) in enumerate(rays):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                render_rays(model, o, d, s.render_chunk)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best[name][i] = min(best[name][i], time.perf_counter() - t0)
    return {name: 1000.0 * float(statistics.median(v)) for name, v in best.items()}


def image_metrics(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM (scikit-image, data range 1, colour channels) of one image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gt = np.clip(gt, 0.0, 1.0)
    psnr = float(peak_signal_noise_ratio(gt, pred, data_range=1.0))
    ssim = float(structural_similarity(gt, pred, data_range=1.0, channel_axis=2))
    return psnr, ssim


def evaluate(model: nn.Module, test: Views, s: RenderSettings) -> tuple[dict[str, float], list[np.ndarray]]:
    """Mean PSNR/SSIM over the test views, median render time per image, evaluations per ray."""
    images, times = render_views(model, test, s)
    scores = [image_metrics(img, test.image(i)) for i, img in enumerate(images)]
    m = {
        "psnr": float(np.mean([p for p, _ in scores])),
        "ssim": float(np.mean([q for _, q in scores])),
        "render_ms": float(statistics.median(times)),
        "evals_per_ray": int(model.evals_per_ray),
    }
    return m, images


def constant_image_psnr(train: Views, test: Views) -> float:
    """PSNR of the mean training colour as every test pixel (the floor a model must beat)."""
    mean = train.rgb.reshape(-1, 3).mean(0).numpy()
    vals = [
        image_metrics(np.broadcast_to(mean, test.image(i).shape).copy(), test.image(i))[0] for i in range(len(test))
    ]
    return float(np.mean(vals))


# ----------------------------------------------------------------------------- the experiment


def _views(scene: str, s: RenderSettings, cache: Path | None) -> tuple[Views, Views]:
    key = dict(
        scene=scene, size=s.size, n_train=s.n_train, n_test=s.n_test, gt=s.gt_samples, radius=s.radius, fov=s.fov
    )
    key.update(near=s.near, far=s.far, seed=s.seed)
    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"{scene}_{tag}.safetensors" if cache is not None else None
    fields = ("origins", "directions", "rgb")
    if path is not None and path.exists():  # tensors only (safetensors: no pickle)
        from safetensors.torch import load_file

        data = load_file(str(path))
        return tuple(  # type: ignore[return-value]
            Views(*(data[f"{part}.{f}"] for f in fields), data[f"{part}.positions"].numpy(), s.size)
            for part in ("train", "test")
        )
    train, test = make_views(
        get_scene(scene),
        s.n_train,
        s.n_test,
        s.size,
        radius=s.radius,
        fov_deg=s.fov,
        near=s.near,
        far=s.far,
        gt_samples=s.gt_samples,
        seed=s.seed,
    )
    if path is not None:
        from safetensors.torch import save

        from ..runtime.checkpoint import atomic_write_bytes

        tensors = {}
        for part, v in (("train", train), ("test", test)):
            tensors.update({f"{part}.{f}": getattr(v, f).contiguous() for f in fields})
            tensors[f"{part}.positions"] = torch.from_numpy(np.ascontiguousarray(v.positions))
        atomic_write_bytes(path, save(tensors, metadata={"key": json.dumps(key, sort_keys=True)}))
    return train, test


def _save_png(path: Path, img: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.clip(img, 0.0, 1.0))


def plot_compare(
    scene: str, test: Views, images: dict[str, list[np.ndarray]], metrics: dict[str, dict], path: Path, views=(0,)
) -> Path:
    """Side by side: ground truth, each method, and under each method its error map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(images)
    ncol = 1 + len(methods)
    views = [v for v in views if v < len(test)]
    fig, axes = plt.subplots(2 * len(views), ncol, figsize=(2.0 * ncol, 4.1 * len(views)), dpi=110, squeeze=False)
    for r, v in enumerate(views):
        gt = np.clip(test.image(v), 0, 1)
        ax = axes[2 * r, 0]
        ax.imshow(gt, interpolation="nearest")
        ax.set_title(f"ground truth\nview {v}", fontsize=7)
        axes[2 * r + 1, 0].axis("off")
        axes[2 * r + 1, 0].text(0.05, 0.5, "|error|\n(mean over RGB,\nscale 0-0.25)", fontsize=7)
        for j, m in enumerate(methods, start=1):
            img = images[m][v]
            met = metrics[m]
            axes[2 * r, j].imshow(img, interpolation="nearest")
            axes[2 * r, j].set_title(f"{m}\n{met['psnr']:.1f} dB, {met['render_ms']:.0f} ms", fontsize=7)
            err = np.abs(img - gt).mean(2)
            axes[2 * r + 1, j].imshow(err, cmap="inferno", vmin=0, vmax=0.25, interpolation="nearest")
        for ax in axes[2 * r : 2 * r + 2].ravel():
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"scene '{scene}' (held-out views; PSNR and render time per image are test-set means/medians)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def format_table(metrics: dict[str, dict[str, dict[str, float]]], baseline: str = "quadrature-N128") -> str:
    """Markdown: per scene and method, PSNR, SSIM, render ms, speed-up over ``baseline``, dB below it."""
    head = (
        f"| scene | method | evals/ray | PSNR dB | SSIM | render ms | speed-up vs {baseline} "
        f"| PSNR - {baseline} | train s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for scene, by in metrics.items():
        base = by.get(baseline)
        for m, v in by.items():
            speed = f"{base['render_ms'] / v['render_ms']:.1f}x" if base else ""
            dpsnr = f"{v['psnr'] - base['psnr']:+.2f}" if base else ""
            rows.append(
                f"| {scene} | {m} | {v['evals_per_ray']} | {v['psnr']:.2f} | {v['ssim']:.3f} | {v['render_ms']:.1f} "
                f"| {speed} | {dpsnr} | {v['train_s']:.1f} |"
            )
    return head + "\n".join(rows) + "\n"


def run(s: RenderSettings, out: str | Path, *, verbose: bool = True, resume: bool = True) -> dict[str, Any]:
    """Train every method on every scene, render the test views, write the outputs to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    extra: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    settings_d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items() if k != "extra"}
    try:
        for scene in s.scenes:
            t0 = time.perf_counter()
            train, test = _views(scene, s, out / "data")
            if verbose:
                print(
                    f"[{scene}] {len(train)} train / {len(test)} test views, {s.size}x{s.size}, "
                    f"ground truth ({s.gt_samples} samples/ray) in {time.perf_counter() - t0:.1f} s",
                    flush=True,
                )
            metrics[scene], images, models = {}, {}, {}
            const = constant_image_psnr(train, test)
            extra[scene] = {"constant_color_psnr": const, "final_loss": {}}
            for method in _method_names(s):
                model = build_model(method, s)
                ckpt = out / "checkpoints" / scene / f"{method}.safetensors" if resume else None
                info = train_model(model, train, s, method=method, checkpoint=ckpt, desc=f"{scene} {method}")
                m, imgs = evaluate(model, test, replace(s, timing_repeats=1))  # timed again below
                m["train_s"] = float(info["train_s"])
                metrics[scene][method] = {k: m[k] for k in ("psnr", "ssim", "render_ms", "evals_per_ray", "train_s")}
                extra[scene]["final_loss"][method] = info["final_loss"]
                images[method] = imgs
                models[method] = model
                for i, img in enumerate(imgs):
                    _save_png(out / scene / f"{method}_view{i}.png", img)
                if verbose:
                    print(
                        f"[{scene}] {method:<16} PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.3f}  "
                        f"{m['render_ms']:8.1f} ms/image  train {m['train_s']:6.1f} s"
                        + (f" (resumed at step {info['resumed_from']})" if info["resumed_from"] else ""),
                        flush=True,
                    )
                # written after every method: a partial run leaves valid (partial) results
                (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            # render times again, all methods interleaved (round-robin), fastest of the rounds per view:
            # on a shared machine a burst of load then hits every method alike, not one of them
            for method, ms in interleaved_render_ms(models, test, s).items():
                metrics[scene][method]["render_ms"] = ms
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            if verbose:
                print(
                    f"[{scene}] render ms/image, interleaved timing: "
                    + ", ".join(f"{k} {v['render_ms']:.1f}" for k, v in metrics[scene].items()),
                    flush=True,
                )
            for i in range(len(test)):
                _save_png(out / scene / f"gt_view{i}.png", test.image(i))
            plot_compare(scene, test, images, metrics[scene], out / f"{scene}_compare.png", views=(0, 1))
    finally:
        torch.set_num_threads(old_threads)
    total = time.perf_counter() - t_start
    info = {
        "settings": settings_d,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cpu": _cpu_name(),
        "torch": torch.__version__,
        "threads": s.threads,
        "total_s": total,
        "scenes": extra,
    }
    (out / "settings.json").write_text(json.dumps(info, indent=2) + "\n")
    table = format_table(metrics)
    (out / "results.md").write_text(
        table + f"\nCPU: {info['cpu']}, torch {torch.__version__}, {s.threads} thread(s); whole run {total:.0f} s.\n"
    )
    if verbose:
        print()
        print(table)
        print(f"total {total:.1f} s")
    return {"metrics": metrics, "info": info}


# ----------------------------------------------------------------------------- CLI


def _int_list(text: str) -> tuple[int, ...]:
    if text.strip().lower() == "none":
        return ()
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _scene_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [n for n in names if n not in SCENES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown scene(s) {bad or text!r}; choose from {', '.join(SCENES)}")
    return names


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``render`` subcommand (handler in ``func``)."""
    p = subparsers.add_parser(
        "render",
        help="volume rendering: AutoInt section model vs quadrature on procedural scenes",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--out", required=True, help="output directory (metrics.json, PNGs, checkpoints)")
    p.add_argument("--quick", action="store_true", help="small configuration (minutes on a 2-core CPU)")
    p.add_argument("--paper-size", action="store_true", help="the original's 8x256 field networks, posenc 10, skip 4")
    p.add_argument("--scenes", type=_scene_list, default=None, help=f"comma-separated from {','.join(SCENES)}")
    p.add_argument("--sections", type=int_list(1, 1024, tuple_type=True), default=None, help="K values, e.g. 8,16,32")
    p.add_argument(
        "--quad-samples",
        type=int_list(1, 65536, allow_none=True, tuple_type=True),
        default=None,
        help="N values of the baseline, e.g. 64,128 (none: skip it)",
    )
    p.add_argument("--uniform-sections", action="store_true", help="equal sections instead of the sampling network")
    p.add_argument("--loss", choices=["both", "samples", "section"], default=None, help="AutoInt training loss")
    p.add_argument("--size", type=int_range(4, 2048), default=None, help="image side in pixels")
    p.add_argument("--train-views", type=int_range(1, 10_000), default=None)
    p.add_argument("--test-views", type=int_range(1, 10_000), default=None)
    p.add_argument(
        "--gt-samples", type=int_range(512, 2**20), default=None, help="ground-truth samples per ray (>= 512)"
    )
    p.add_argument("--steps", type=int_range(1, 10**9), default=None)
    p.add_argument("--batch", type=int_range(1, 2**24), default=None, help="rays per step")
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument(
        "--samples-per-ray", type=int_range(1, 4096), default=None, help="grad-network samples per ray (AutoInt)"
    )
    p.add_argument(
        "--hidden",
        type=int_list(1, 65536, what="widths", tuple_type=True),
        default=None,
        help="widths of both field networks, e.g. 64,64,64",
    )
    p.add_argument("--frequencies", type=int_range(1, 32), default=None, help="posenc octaves of the point")
    p.add_argument("--seed", type=SEED, default=None)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--threads", type=int_range(0, 4096), default=1, help="CPU threads (default 1; 0: torch's default)")
    p.add_argument("--no-resume", action="store_true", help="ignore and do not write checkpoints")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_cli)
    return p


def settings_from_args(args: argparse.Namespace) -> RenderSettings:
    kw: dict[str, Any] = {}
    if args.quick:
        kw.update(QUICK)
    if args.paper_size:
        kw.update(PAPER)
    direct = {
        "scenes": args.scenes,
        "sections": args.sections,
        "quad_samples": args.quad_samples,
        "loss": args.loss,
        "size": args.size,
        "n_train": args.train_views,
        "n_test": args.test_views,
        "gt_samples": args.gt_samples,
        "steps": args.steps,
        "batch_rays": args.batch,
        "lr": args.lr,
        "samples_per_ray": args.samples_per_ray,
        "frequencies": args.frequencies,
        "seed": args.seed,
    }
    kw.update({k: v for k, v in direct.items() if v is not None})
    if args.hidden is not None:
        kw["hidden_sigma"] = kw["hidden_color"] = tuple(args.hidden)
    kw.update(
        uniform_sections=args.uniform_sections,
        device=args.device,
        threads=args.threads or None,
        progress=False if args.no_progress else None,
    )
    return replace(RenderSettings(), **kw)


def run_cli(args: argparse.Namespace) -> int:
    if (error := device_error(args.device)) is not None:
        print(f"autoint-compile: error: {error}", file=sys.stderr)
        return 2
    try:
        s = settings_from_args(args)
    except ValueError as exc:
        print(f"autoint-compile: error: {exc}", file=sys.stderr)
        return 2
    run(s, args.out, resume=not args.no_resume)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoint_compiler.apps.render")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["render", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
