"""The volume-rendering models: settings, the AutoInt field (compiled integral networks, sampling
network, section model) and the NeRF-style quadrature baseline. See :mod:`.render` for the
experiment and the formulas; :mod:`.render_train` trains these models, :mod:`.render_eval` renders
and scores them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .render_scenes import SCENES, composite, get_scene

__all__ = [
    "RenderSettings",
    "QUICK",
    "PAPER",
    "field_spec",
    "posenc",
    "SamplingNet",
    "uniform_cuts",
    "jitter_cuts",
    "section_render",
    "stratified_in_sections",
    "AutoIntField",
    "QuadratureField",
    "build_model",
    "method_names",
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
    ray_encoding: str = "point"  # point: Phi reads posenc(o + t d), d; plucker: posenc(o x d), posenc(o.d + t), d
    dir_frequencies: int = 0  # posenc octaves of the direction d in the AutoInt networks (0: raw d)
    skips: tuple[int, ...] = ()  # hidden layers that also get the encoded input (the paper: 4)
    activation: str = "swish"
    sampler_hidden: tuple[int, ...] = (64, 64)
    sampler_frequencies: int = 3
    section_eps: float = 0.2  # share of each ray spread uniformly over the sections
    uniform_sections: bool = True  # equal sections; False: the learned sampling network places the cuts
    cut_jitter: float = 0.25  # AutoInt training only: interior cuts moved by up to +-this share of a section
    samples_per_ray: int = 64  # grad-network samples per ray in the AutoInt 'samples' loss
    loss: str = "section"  # section | both | samples (see the module docstring)
    neg_penalty: float = 0.01
    sigma_scale: float = 10.0
    density_act: str = "relu"  # relu | softplus: applied to raw density (per sample or section average)
    color_act: str = "linear"  # linear | sigmoid
    density_bias: float = 0.1  # added to the raw section density before the relu: no dead sections at the start
    bias_decay: float = 0.1  # ... decayed linearly to 0 over this share of the steps (0: kept; see render_train)
    color_mode: str = "uniform"  # uniform: c_i = section mean of c; weighted: density-weighted mean (Phi of sigma*c)
    steps: int = 3000
    batch_rays: int = 256
    lr: float = 1e-2  # one rate for every method (picked on training-view PSNR; see docs/results/render)
    lr_min_factor: float = 0.05
    grad_clip: float | None = 1.0  # max gradient norm (None: none); without it AutoInt at lr 1e-2 can collapse
    guard: bool = True  # divergence detection and recovery in the training loop (runtime DivergenceGuard)
    max_restarts: int = 2  # retrain from scratch (lr halved) a model that ends no better than a constant image
    restart_min_steps: int = 200  # ... if it trained at least this many steps (a short run has not converged)
    consistency_weight: float = 0.0  # ray-consistency regulariser (AutoInt; see render_train.consistency_penalty)
    consistency_points: int = 64  # points per step of the regulariser (two directions each)
    time_matched: tuple[int, ...] = (8,)  # K of the AutoInt models that also get a train-time-matched row
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
        if not 0.0 <= self.cut_jitter < 0.5:
            raise ValueError(f"cut_jitter must be in [0, 0.5), got {self.cut_jitter!r}")
        if self.loss not in ("both", "samples", "section"):
            raise ValueError(f"loss must be 'both', 'samples' or 'section', got {self.loss!r}")
        if self.ray_encoding not in ("point", "plucker"):
            raise ValueError(f"ray_encoding must be 'point' or 'plucker', got {self.ray_encoding!r}")
        if self.color_mode not in ("uniform", "weighted"):
            raise ValueError(f"color_mode must be 'uniform' or 'weighted', got {self.color_mode!r}")
        if not 0.0 <= self.bias_decay <= 1.0:
            raise ValueError(f"bias_decay must be in [0, 1], got {self.bias_decay}")
        if self.consistency_weight < 0 or self.consistency_points < 1:
            raise ValueError("consistency_weight must be >= 0 and consistency_points >= 1")
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
QUICK = dict(
    size=32,
    n_train=40,
    n_test=3,
    gt_samples=512,
    steps=600,
    batch_rays=128,
    samples_per_ray=32,
    sections=(8, 16),
    quad_samples=(128,),
)

#: ``--paper-size``: the original's field network (8 x 256 swish, posenc 10 octaves, skip at layer 4).
PAPER = dict(hidden_sigma=(256,) * 8, hidden_color=(256,) * 8, frequencies=10, skips=(4,))


def _dtype(s: RenderSettings) -> torch.dtype:
    return torch.float64 if s.dtype == "float64" else torch.float32


# ----------------------------------------------------------------------------- the compiled field networks


def field_spec(kind: str, settings: RenderSettings | None = None) -> dict[str, Any]:
    """Spec of the density (``kind="sigma"``, 1 output) or colour (``"color"``, 3) network; the
    defaults are ``examples/render_sigma.yaml`` and ``examples/render_color.yaml``.

    ``ray_encoding="point"``: inputs ``o, d, t``; the graph forms ``x = o + t d`` and reads
    ``[posenc(x), d]``. ``"plucker"``: inputs ``m = o x d`` (the ray's moment, the same for every
    point of the ray), ``d`` and ``s = o.d + t`` (the signed distance along the ray from its point
    closest to the origin); the graph reads ``[posenc(m), posenc(s), d]`` and integrates over ``s``.
    Both describe the 3-D point ``x = d x m + s d`` seen along ``d``; in Plucker form the edge of
    the shadow a thin object casts along ``d`` is a linear function of the input (``a . m`` for a
    rod along ``a``), which the ``point`` form must build from products of ``x`` and ``d``."""
    s = settings or RenderSettings()
    if kind not in ("sigma", "color"):
        raise ValueError(f"kind must be 'sigma' or 'color', got {kind!r}")
    hidden = s.hidden_sigma if kind == "sigma" else s.hidden_color
    if s.ray_encoding == "plucker":
        inputs = {"m": 3, "d": 3, "s": 1}
        graph: list[dict[str, Any]] = [
            {"name": "encm", "op": "posenc", "in": ["m"], "frequencies": int(s.frequencies), "include_input": True},
            {"name": "encs", "op": "posenc", "in": ["s"], "frequencies": int(s.frequencies), "include_input": True},
            {"name": "enc", "op": "concat", "in": ["encm", "encs"]},
        ]
        integrate = ["s"]
    else:
        inputs = {"o": 3, "d": 3, "t": 1}
        graph = [
            {"name": "ttt", "op": "concat", "in": ["t", "t", "t"]},
            {"name": "td", "op": "mul", "in": ["ttt", "d"]},
            {"name": "x", "op": "add", "in": ["o", "td"]},
            {"name": "enc", "op": "posenc", "in": ["x"], "frequencies": int(s.frequencies), "include_input": True},
        ]
        integrate = ["t"]
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
        "inputs": inputs,
        "integrate": integrate,
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


def jitter_cuts(cuts: torch.Tensor, amount: float, gen: torch.Generator | None) -> torch.Tensor:
    """Move each interior cut of ``cuts [R, K + 1]`` uniformly by up to ``amount`` (< 0.5) of its
    neighbouring sections' mean length (ends fixed): random sections every step, none shorter than
    (1 − 2·amount) of the shortest, so Φ is asked for its antiderivative along the whole ray."""
    if amount <= 0:
        return cuts
    inner = cuts[:, 1:-1]
    half = 0.5 * (cuts[:, 2:] - cuts[:, :-2])
    u = torch.rand(inner.shape, generator=gen, dtype=cuts.dtype, device=cuts.device)
    moved = inner + (2 * u - 1) * amount * half
    return torch.cat([cuts[:, :1], moved, cuts[:, -1:]], 1)


def _ray_inputs(o: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Network input rows ``[o, d, t]`` for every ``t [R, M]``: ``[R * M, 7]``."""
    r, m = t.shape
    od = torch.cat([o, d], 1)[:, None, :].expand(r, m, 6)
    return torch.cat([od, t[..., None]], 2).reshape(r * m, 7)


def _plucker_inputs(o: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Network input rows ``[o x d, d, o.d + t]`` for every ``t [R, M]``: ``[R * M, 7]``."""
    r, m = t.shape
    md = torch.cat([torch.linalg.cross(o, d, dim=1), d], 1)[:, None, :].expand(r, m, 6)
    s = (o * d).sum(1, keepdim=True) + t
    return torch.cat([md, s[..., None]], 2).reshape(r * m, 7)


RAY_ROWS = {"point": _ray_inputs, "plucker": _plucker_inputs}


def section_render(
    phi_sigma: Callable[[torch.Tensor], torch.Tensor],
    phi_color: Callable[[torch.Tensor], torch.Tensor],
    o: torch.Tensor,
    d: torch.Tensor,
    cuts: torch.Tensor,
    sigma_scale: float = 1.0,
    density_act: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
    color_act: Callable[[torch.Tensor], torch.Tensor] = COLOR_ACTS["linear"],
    weighted: bool = False,
    density_bias: float = 0.0,
    rows: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = _ray_inputs,
) -> torch.Tensor:
    """The piecewise model: section averages from the integral networks at the cut points
    ``cuts [R, K + 1]``, through the output non-linearities, composited. ``phi_*`` take rows
    ``[o, d, t]``. Returns ``[R, 3]``."""
    r, kp1 = cuts.shape
    x = rows(o, d, cuts)
    ps = phi_sigma(x).reshape(r, kp1)
    pc = phi_color(x).reshape(r, kp1, 3)
    delta = cuts[:, 1:] - cuts[:, :-1]
    dsig = ps[:, 1:] - ps[:, :-1]
    sigma = sigma_scale * density_act(dsig / delta + density_bias)
    if weighted:  # Phi_c integrates sigma_raw * c: the section colour is the density-weighted mean
        color = color_act((pc[:, 1:] - pc[:, :-1]) / (torch.relu(dsig) + 1e-4 * delta)[..., None])
    else:
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
        self.weighted = s.color_mode == "weighted"
        self.density_bias = s.density_bias
        self.rows = RAY_ROWS[s.ray_encoding]
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
            self.sigma_phi,
            self.color_phi,
            o,
            d,
            cuts,
            self.sigma_scale,
            self.density_act,
            self.color_act,
            self.weighted,
            self.density_bias,
            self.rows,
        )

    def sample_render(
        self, o: torch.Tensor, d: torch.Tensor, cuts: torch.Tensor, per_section: int, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Quadrature of the grad networks at ``per_section`` stratified samples inside each section:
        ``(rgb [R, 3], raw density g_sigma [R, M])``."""
        t = stratified_in_sections(cuts, per_section, gen)
        r, m = t.shape
        x = self.rows(o, d, t)
        g = self.sigma_net.grad(x).reshape(r, m)
        c = self.color_net.grad(x).reshape(r, m, 3)
        delta = ((cuts[:, 1:] - cuts[:, :-1]) / per_section).repeat_interleave(per_section, dim=1)
        if self.weighted:  # the colour network's integrand is g_sigma * c
            c = c / (torch.relu(g) + 1e-4)[..., None]
        return composite(self.sigma_scale * self.density_act(g + self.density_bias) * delta, self.color_act(c)), g

    def point_density(self, o: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The density the ray ``(o, d)`` assigns to its point at ``t`` (the density network's
        integrand, through the density activation): ``[R]``."""
        g = self.sigma_net.grad(self.rows(o, d, t)).reshape(-1)
        return self.sigma_scale * self.density_act(g + self.density_bias)

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

    def point_density(self, o: torch.Tensor, d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The density at ``o + t d`` (a function of the point only): ``[R]``."""
        g = self.sigma_mlp(posenc(o + t * d, self.frequencies)).reshape(-1)
        return self.sigma_scale * self.density_act(g)

    @property
    def evals_per_ray(self) -> int:
        return self.n


def build_model(method: str, settings: RenderSettings) -> nn.Module:
    """``quadrature-N<N>`` or ``autoint-K<K>``."""
    import autoint_compiler as ac

    kind, _, num = method.split("@")[0].partition("-")
    n = int(num[1:])
    if kind == "quadrature":
        return QuadratureField(n, settings)
    if kind == "autoint":
        sigma = ac.compile(field_spec("sigma", settings))
        color = ac.compile(field_spec("color", settings))
        torch.manual_seed(settings.seed + 2)
        return AutoIntField(sigma, color, n, settings)
    raise ValueError(f"unknown method {method!r} (quadrature-N<N> or autoint-K<K>)")


def method_names(s: RenderSettings) -> list[str]:
    """The methods of an experiment, baselines first: ``quadrature-N<N>``, ``autoint-K<K>``."""
    return [f"quadrature-N{n}" for n in s.quad_samples] + [f"autoint-K{k}" for k in s.sections]
