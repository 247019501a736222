"""Procedural scenes for the volume-rendering experiment (no data to download).

Each scene is an analytic emission-absorption field inside the unit ball: a density
``sigma(x) >= 0`` (per unit length) and a colour ``c(x)`` in [0, 1]^3, both functions of the 3-D
point ``x``. Ground-truth images are the volume-rendering integral along each pixel's ray,

    C(r) = \u222b_near^far T(t) sigma(r(t)) c(r(t)) dt,   T(t) = exp(-\u222b_near^t sigma(r(s)) ds),

evaluated by a dense midpoint quadrature (``gt_samples >= 512`` per ray, float64), on a black
background. The field networks, the baseline and the tests all use the same rays and cameras.

Scenes (:data:`SCENES`):

* ``blobs``   -- six coloured Gaussian blobs (smooth density and colour), cameras on the sphere;
* ``spheres`` -- four soft-edged spheres of different colours (sharp-ish boundaries), sphere;
* ``thin``    -- a thin torus ring, three thin rods and a ball with high-frequency colour stripes;
  cameras on the upper hemisphere.

Cameras are pinhole cameras at distance ``radius`` from the origin looking at it; views are points
of a Fibonacci sphere (or hemisphere), shuffled with a fixed seed and split into train and test
views, so the test views are held-out viewpoints between the training ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = [
    "Scene",
    "SCENES",
    "get_scene",
    "Views",
    "camera_positions",
    "look_at_rays",
    "composite",
    "render_gt",
    "make_views",
]

Field = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Scene:
    name: str
    density: Field  # x [N, 3] -> [N]
    color: Field  # x [N, 3] -> [N, 3]
    hemisphere: bool = False  # cameras only above the z = 0.15 plane
    description: str = ""


def _blend(weights: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """Colour as the density-weighted mix of the parts' colours: ``weights [N, P]``, ``colors [P, 3]``."""
    w = weights + 1e-12
    return (w @ colors) / w.sum(1, keepdim=True)


# ----------------------------------------------------------------------------- blobs

_BLOB_MU = torch.tensor(
    [[0.35, 0.0, 0.1], [-0.3, 0.35, -0.1], [-0.25, -0.35, 0.25], [0.0, 0.1, -0.45], [0.1, -0.1, 0.5], [0.5, 0.4, -0.3]],
    dtype=torch.float64,
)
_BLOB_STD = torch.tensor([0.2, 0.17, 0.15, 0.22, 0.12, 0.13], dtype=torch.float64)
_BLOB_AMP = torch.tensor([12.0, 14.0, 16.0, 10.0, 18.0, 15.0], dtype=torch.float64)
_BLOB_RGB = torch.tensor(
    [[0.95, 0.25, 0.2], [0.2, 0.8, 0.3], [0.25, 0.35, 0.95], [0.95, 0.85, 0.2], [0.85, 0.3, 0.85], [0.2, 0.85, 0.9]],
    dtype=torch.float64,
)


def _blob_parts(x: torch.Tensor) -> torch.Tensor:
    mu, std, amp = (v.to(x) for v in (_BLOB_MU, _BLOB_STD, _BLOB_AMP))
    d2 = ((x[:, None, :] - mu[None]) ** 2).sum(-1)
    return amp * torch.exp(-0.5 * d2 / std**2)  # [N, 6]


def _blobs_density(x: torch.Tensor) -> torch.Tensor:
    return _blob_parts(x).sum(1)


def _blobs_color(x: torch.Tensor) -> torch.Tensor:
    return _blend(_blob_parts(x), _BLOB_RGB.to(x))


# ----------------------------------------------------------------------------- soft spheres

_SPH_C = torch.tensor(
    [[0.3, 0.25, 0.0], [-0.35, 0.2, 0.2], [0.0, -0.4, -0.15], [-0.1, 0.0, -0.55]], dtype=torch.float64
)
_SPH_R = torch.tensor([0.3, 0.25, 0.28, 0.2], dtype=torch.float64)
_SPH_RGB = torch.tensor([[0.9, 0.3, 0.15], [0.2, 0.5, 0.95], [0.3, 0.9, 0.35], [0.95, 0.9, 0.9]], dtype=torch.float64)
_SPH_SIGMA = 20.0
_SPH_EDGE = 0.02  # width of the soft edge (logistic)


def _sphere_parts(x: torch.Tensor) -> torch.Tensor:
    c, r = _SPH_C.to(x), _SPH_R.to(x)
    dist = torch.sqrt(((x[:, None, :] - c[None]) ** 2).sum(-1))
    return _SPH_SIGMA * torch.sigmoid((r - dist) / _SPH_EDGE)


def _spheres_density(x: torch.Tensor) -> torch.Tensor:
    return _sphere_parts(x).sum(1)


def _spheres_color(x: torch.Tensor) -> torch.Tensor:
    return _blend(_sphere_parts(x), _SPH_RGB.to(x))


# ----------------------------------------------------------------------------- thin structures

_THIN_SIGMA = 40.0
_TORUS_R, _TORUS_r = 0.7, 0.05
_ROD_r = 0.045
_BALL_C = torch.tensor([0.0, 0.0, 0.1], dtype=torch.float64)
_BALL_R = 0.32
_STRIPES = 5.0  # stripes per unit length along the ball's x


def _soft(dist_inside: torch.Tensor, edge: float = 0.012) -> torch.Tensor:
    return torch.sigmoid(dist_inside / edge)


def _thin_parts(x: torch.Tensor) -> torch.Tensor:
    px, py, pz = x[:, 0], x[:, 1], x[:, 2]
    ring = torch.sqrt((torch.sqrt(px**2 + py**2) - _TORUS_R) ** 2 + pz**2)  # torus in the z = 0 plane
    torus = _soft(_TORUS_r - ring)
    inside = (x.abs() <= 0.85).all(1).to(x)  # rods are 1.7 long, centred
    rod_z = _soft(_ROD_r - torch.sqrt((px - 0.45) ** 2 + (py + 0.45) ** 2)) * inside  # vertical rod
    rod_x = _soft(_ROD_r - torch.sqrt((py - 0.45) ** 2 + (pz + 0.35) ** 2)) * inside  # along x
    rod_y = _soft(_ROD_r - torch.sqrt((px + 0.5) ** 2 + (pz - 0.3) ** 2)) * inside  # along y
    ball = _soft(_BALL_R - torch.sqrt(((x - _BALL_C.to(x)) ** 2).sum(1)), edge=0.02)
    return _THIN_SIGMA * torch.stack([torus, rod_z, rod_x, rod_y, 0.5 * ball], 1)


def _thin_density(x: torch.Tensor) -> torch.Tensor:
    return _thin_parts(x).sum(1)


def _thin_color(x: torch.Tensor) -> torch.Tensor:
    parts = _thin_parts(x)
    # high-frequency colour: the ball is striped (yellow / blue) along x, the torus's hue turns with angle
    s = 0.5 + 0.5 * torch.sin(2 * math.pi * _STRIPES * x[:, 0])
    ball_rgb = torch.stack([0.15 + 0.8 * s, 0.2 + 0.6 * s, 0.9 - 0.7 * s], 1)
    ang = torch.atan2(x[:, 1], x[:, 0])
    torus_rgb = torch.stack(
        [0.55 + 0.4 * torch.cos(3 * ang), 0.55 + 0.4 * torch.cos(3 * ang + 2.1), 0.5 + 0.0 * ang], 1
    )
    fixed = torch.tensor([[0.95, 0.95, 0.95], [0.9, 0.2, 0.2], [0.2, 0.9, 0.3]], dtype=x.dtype, device=x.device)
    rgbs = torch.cat([torus_rgb[:, None], fixed[None].expand(x.shape[0], 3, 3), ball_rgb[:, None]], 1)  # [N, 5, 3]
    w = parts + 1e-12
    return (w[..., None] * rgbs).sum(1) / w.sum(1, keepdim=True)


SCENES: dict[str, Scene] = {
    "blobs": Scene("blobs", _blobs_density, _blobs_color, False, "six coloured Gaussian blobs"),
    "spheres": Scene("spheres", _spheres_density, _spheres_color, False, "four soft-edged coloured spheres"),
    "thin": Scene(
        "thin", _thin_density, _thin_color, True, "thin torus and rods, striped ball (high-frequency colour)"
    ),
}


def get_scene(name: str) -> Scene:
    try:
        return SCENES[name]
    except KeyError:
        raise ValueError(f"unknown scene {name!r}; choose from {', '.join(SCENES)}") from None


# ----------------------------------------------------------------------------- cameras and rays


def camera_positions(n: int, radius: float, hemisphere: bool = False, offset: float = 0.5) -> np.ndarray:
    """``n`` points of a Fibonacci sphere (or of the cap z >= 0.15 * radius) at ``radius``."""
    i = np.arange(n, dtype=np.float64) + offset
    z_lo = 0.15 if hemisphere else -1.0
    z = 1.0 - (1.0 - z_lo) * i / n  # from near 1 down to z_lo
    z = np.clip(z, -0.95, 0.95)  # keep off the poles (the up vector is +z)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    rho = np.sqrt(1.0 - z**2)
    return radius * np.stack([rho * np.cos(phi), rho * np.sin(phi), z], 1)


def look_at_rays(position: np.ndarray, size: int, fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Rays of a ``size x size`` pinhole camera at ``position`` looking at the origin (up = +z).

    Returns ``origins [size*size, 3]`` and unit ``directions [size*size, 3]``, row-major pixels
    (row 0 at the top), one ray through each pixel's centre."""
    pos = np.asarray(position, dtype=np.float64)
    fwd = -pos / np.linalg.norm(pos)
    right = np.cross(fwd, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    half = math.tan(math.radians(fov_deg) / 2)
    u = ((np.arange(size) + 0.5) / size * 2 - 1) * half
    jj, ii = np.meshgrid(u, -u)  # x to the right, y up
    d = fwd[None] + jj.reshape(-1, 1) * right[None] + ii.reshape(-1, 1) * up[None]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = np.broadcast_to(pos, d.shape).copy()
    return o, d


def composite(sigma_delta: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """Emission-absorption compositing of piecewise-constant pieces along each ray.

    ``sigma_delta [R, M]``: optical depth of each piece (sigma_i * delta_i); ``color [R, M, 3]``.
    ``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = prod_{j<i} (1 - alpha_j)``;
    returns ``sum_i T_i alpha_i c_i`` ``[R, 3]`` (black background)."""
    alpha = 1.0 - torch.exp(-sigma_delta)
    # T_i = exp(-sum_{j<i} sigma_j delta_j): an exclusive cumulative sum (stable, no cumprod of 1-alpha)
    depth = torch.cumsum(sigma_delta, dim=1) - sigma_delta
    weights = torch.exp(-depth) * alpha
    return (weights[..., None] * color).sum(1)


@torch.no_grad()
def render_gt(
    scene: Scene,
    origins: torch.Tensor,
    directions: torch.Tensor,
    near: float,
    far: float,
    n_samples: int = 1024,
    chunk: int = 1024,
) -> torch.Tensor:
    """Ground truth: midpoint quadrature with ``n_samples`` per ray (float64). ``[R, 3]``."""
    if n_samples < 512:
        raise ValueError(f"ground truth needs at least 512 samples per ray, got {n_samples}")
    o = origins.to(torch.float64)
    d = directions.to(torch.float64)
    delta = (far - near) / n_samples
    t = near + delta * (torch.arange(n_samples, dtype=torch.float64) + 0.5)
    out = []
    for i in range(0, o.shape[0], chunk):
        oc, dc = o[i : i + chunk], d[i : i + chunk]
        x = (oc[:, None, :] + t[None, :, None] * dc[:, None, :]).reshape(-1, 3)
        sig = scene.density(x).reshape(oc.shape[0], n_samples)
        col = scene.color(x).reshape(oc.shape[0], n_samples, 3)
        out.append(composite(sig * delta, col))
    return torch.cat(out)


@dataclass
class Views:
    """Rays and ground-truth colours of a set of views: ``origins``, ``directions``, ``rgb``
    ``[V, H*W, 3]`` (float64), ``positions [V, 3]``."""

    origins: torch.Tensor
    directions: torch.Tensor
    rgb: torch.Tensor
    positions: np.ndarray
    size: int
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.origins.reshape(-1, 3), self.directions.reshape(-1, 3), self.rgb.reshape(-1, 3)

    def image(self, i: int) -> np.ndarray:
        return self.rgb[i].reshape(self.size, self.size, 3).numpy()


def make_views(
    scene: Scene,
    n_train: int,
    n_test: int,
    size: int,
    *,
    radius: float = 3.5,
    fov_deg: float = 30.0,
    near: float = 2.5,
    far: float = 4.5,
    gt_samples: int = 1024,
    seed: int = 0,
) -> tuple[Views, Views]:
    """Train and test views of ``scene``: ``n_train + n_test`` Fibonacci viewpoints, shuffled with
    ``seed``; the first ``n_test`` are the (held-out) test views."""
    pos = camera_positions(n_train + n_test, radius, scene.hemisphere)
    perm = np.random.default_rng(seed).permutation(len(pos))
    pos = pos[perm]

    def build(p: np.ndarray) -> Views:
        os_, ds = zip(*(look_at_rays(q, size, fov_deg) for q in p))
        o = torch.from_numpy(np.stack(os_))
        d = torch.from_numpy(np.stack(ds))
        rgb = render_gt(scene, o.reshape(-1, 3), d.reshape(-1, 3), near, far, gt_samples).reshape(o.shape)
        return Views(o, d, rgb, p, size)

    return build(pos[n_test:]), build(pos[:n_test])
