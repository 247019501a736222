"""Data and baselines for the sparse-view CT experiment (no download: the phantom ships with
scikit-image).

Conventions
-----------
* The image is ``size x size`` pixels, values in [0, 1] (Shepp-Logan).
* ``skimage.transform.radon(image, theta, circle=True)`` gives a sinogram of shape
  ``[size, n_angles]``: row ``i`` is the detector offset ``s_i = i - size // 2`` (pixels from the
  rotation centre), column ``j`` the angle ``theta_j`` in degrees. Each value is a line integral in
  *pixel units* (a sum of pixel values along the line: every column sums to the image sum).
* Normalised line coordinates used by the network: ``rho = s / (size / 2)`` in [-1, 1), and
  ``t`` in ``[-sqrt(1 - rho^2), +sqrt(1 - rho^2)]`` (the chord of the reconstruction circle).
  A pixel is ``2 / size`` long in these units, so the line integral in normalised units is
  ``sinogram / (size / 2)``: the network learns ``mu(t)`` with the pixel values' scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "phantom",
    "circle_mask",
    "full_angles",
    "sinogram",
    "subsample_indices",
    "detector_rho",
    "chord_half_length",
    "fbp_baseline",
    "nearest_baseline",
    "psnr",
    "CTProblem",
    "make_problem",
]


def phantom(size: int = 64) -> np.ndarray:
    """Shepp-Logan phantom resized to ``size x size`` (float64, values in [0, 1])."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    img = shepp_logan_phantom()
    if img.shape != (size, size):
        img = resize(img, (size, size), anti_aliasing=True, preserve_range=True)
    return circle_mask(np.clip(img.astype(np.float64), 0.0, None))


def circle_mask(img: np.ndarray) -> np.ndarray:
    """Zero outside the inscribed circle (what ``radon(circle=True)`` assumes; resizing can leak
    a little intensity there)."""
    n = img.shape[0]
    c = n // 2
    yy, xx = np.mgrid[:n, :n]
    out = img.copy()
    out[(yy - c) ** 2 + (xx - c) ** 2 > c**2] = 0.0
    return out


def full_angles(n_angles: int = 64) -> np.ndarray:
    """``n_angles`` equispaced angles over [0, 180) degrees."""
    return np.arange(n_angles, dtype=np.float64) * (180.0 / n_angles)


def sinogram(image: np.ndarray, theta_deg: np.ndarray) -> np.ndarray:
    """Parallel-beam sinogram ``[size, len(theta)]`` (pixel units), ``circle=True``."""
    from skimage.transform import radon

    return radon(image, theta=theta_deg, circle=True)


def subsample_indices(n_angles: int, factor: int) -> np.ndarray:
    """Indices of the measured angles when keeping every ``factor``-th one."""
    if factor < 1 or factor > n_angles:
        raise ValueError(f"subsampling factor must be in [1, {n_angles}], got {factor}")
    return np.arange(0, n_angles, factor)


def detector_rho(n_det: int) -> np.ndarray:
    """Normalised detector offsets ``(i - n_det // 2) / (n_det / 2)`` for rows ``i``."""
    return (np.arange(n_det, dtype=np.float64) - n_det // 2) / (n_det / 2.0)


def chord_half_length(rho: np.ndarray) -> np.ndarray:
    """Half length of the line ``rho`` inside the unit circle (0 outside)."""
    return np.sqrt(np.clip(1.0 - rho**2, 0.0, None))


def fbp_baseline(sub_sino: np.ndarray, sub_theta: np.ndarray, theta_full: np.ndarray) -> np.ndarray:
    """Filtered back-projection of the sparse sinogram, re-projected at all angles."""
    from skimage.transform import iradon, radon

    size = sub_sino.shape[0]
    recon = iradon(sub_sino, theta=sub_theta, output_size=size, filter_name="ramp", circle=True)
    return radon(circle_mask(recon), theta=theta_full, circle=True)


def _flip_detector(col: np.ndarray) -> np.ndarray:
    """The projection at theta + 180 deg: ``p(s, theta + 180) = p(-s, theta)``.

    Row ``i`` (offset ``s = i - n//2``) maps to row ``n - i``; row 0 (``s = -n/2``, on the circle's
    edge, where the line integral is ~0) has no mirror on the grid and keeps its value."""
    n = col.shape[0]
    idx = (n - np.arange(n)) % n
    return col[idx]


def nearest_baseline(
    sub_sino: np.ndarray, sub_theta: np.ndarray, theta_full: np.ndarray, wrap: bool = True
) -> np.ndarray:
    """Repeat, for every angle, the measured projection at the nearest measured angle.

    With ``wrap`` the measured angles also count at ``theta + 180`` (detector flipped), so angles
    near 180 deg use the projection at 0 deg mirrored, as the physics allows.
    """
    n_det = sub_sino.shape[0]
    cands = [(float(th), sub_sino[:, j]) for j, th in enumerate(sub_theta)]
    if wrap:
        cands += [(float(th) + 180.0, _flip_detector(sub_sino[:, j])) for j, th in enumerate(sub_theta)]
        cands += [(float(th) - 180.0, _flip_detector(sub_sino[:, j])) for j, th in enumerate(sub_theta)]
    cand_theta = np.array([c[0] for c in cands])
    out = np.empty((n_det, len(theta_full)))
    for k, th in enumerate(theta_full):
        out[:, k] = cands[int(np.argmin(np.abs(cand_theta - th)))][1]
    return out


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float | None = None) -> float:
    """PSNR in dB with ``data_range = ref.max() - ref.min()`` unless given."""
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if data_range is None:
        data_range = float(ref.max() - ref.min())
    mse = float(np.mean((pred - ref) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(data_range**2 / mse)


@dataclass
class CTProblem:
    """A phantom, its full sinogram and a sparse-view subset of it."""

    image: np.ndarray  # [size, size]
    theta: np.ndarray  # [n_angles] degrees, full set
    sino: np.ndarray  # [size, n_angles] full sinogram (pixel units), the reference
    factor: int
    sub_idx: np.ndarray  # measured angle indices

    @property
    def size(self) -> int:
        return self.image.shape[0]

    @property
    def scale(self) -> float:
        """Pixel-unit line integral = normalised line integral x ``scale``."""
        return self.size / 2.0

    @property
    def sub_theta(self) -> np.ndarray:
        return self.theta[self.sub_idx]

    @property
    def sub_sino(self) -> np.ndarray:
        return self.sino[:, self.sub_idx]

    @property
    def heldout_mask(self) -> np.ndarray:
        mask = np.ones(len(self.theta), dtype=bool)
        mask[self.sub_idx] = False
        return mask


def make_problem(size: int = 64, n_angles: int = 64, factor: int = 4) -> CTProblem:
    img = phantom(size)
    theta = full_angles(n_angles)
    sino = sinogram(img, theta)
    return CTProblem(img, theta, sino, factor, subsample_indices(n_angles, factor))
