"""Restoration degradation: axial blur + subsampling, optional lateral blur + subsampling, noise.

Low-quality plane k is ground-truth plane k*a after blurring (so it sits at output plane k*a),
and low-quality pixel (i, j) is ground-truth pixel (i*l, j*l) after lateral blurring.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..io.volume import check_volume


def poisson_gaussian_noise(volume: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian noise whose relative strength at the bright level is ``level``.

    The volume is scaled so that its 99.9th percentile holds 1/level^2 photons (shot noise of
    relative std ``level`` there), Poisson-sampled, then Gaussian read noise of std level/2 of
    the bright level is added; the result is mapped back to the input's units.
    """
    if level <= 0:
        return volume.astype(np.float32, copy=True)
    from ..normalize import percentile_range

    lo, hi = percentile_range(volume)
    scale = hi - lo
    photons_at_bright = 1.0 / level**2
    x = np.clip((volume.astype(np.float64) - lo) / scale, 0, None) * photons_at_bright
    noisy = rng.poisson(x).astype(np.float64) / photons_at_bright
    noisy += rng.normal(0.0, level / 2, size=noisy.shape)
    return (noisy * scale + lo).astype(np.float32)


def simulate_restore(
    gt: np.ndarray,
    axial_factor: int,
    lateral_factor: int = 1,
    noise_level: float = 0.0,
    seed: int = 0,
    axial_blur: float | None = None,
    lateral_blur: float | None = None,
) -> np.ndarray:
    """A low-quality acquisition of ``gt`` for the ``restore`` task.

    Axial blur is a Gaussian of sigma a/2 planes by default (the thick optical section that
    makes fast axial sampling possible); lateral blur sigma l/2 pixels when l > 1.
    """
    from scipy import ndimage

    check_volume(gt, "ground truth")
    a, l = int(axial_factor), int(lateral_factor)
    if a < 1 or l < 1:
        raise InputError("--axial-factor and --lateral-factor must be integers of at least 1.")
    if gt.shape[0] < 2 * a and a > 1:
        raise InputError(f"the axial factor {a} is too large for a stack of {gt.shape[0]} planes (at least {2 * a} needed).")
    if min(gt.shape[1:]) < 2 * l:
        raise InputError(f"the lateral factor {l} is too large for planes of {gt.shape[1]}x{gt.shape[2]} pixels.")
    sz = (a / 2 if a > 1 else 0.0) if axial_blur is None else axial_blur
    sxy = (l / 2 if l > 1 else 0.0) if lateral_blur is None else lateral_blur
    vol = np.asarray(gt, dtype=np.float32)
    if sz > 0 or sxy > 0:
        vol = ndimage.gaussian_filter(vol, sigma=(sz, sxy, sxy), mode="reflect")
    vol = vol[::a, ::l, ::l]
    rng = np.random.default_rng(seed)
    return poisson_gaussian_noise(vol, float(noise_level), rng)
