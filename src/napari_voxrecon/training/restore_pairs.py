"""Training pairs of the ``restore`` task: a clean window and its simulated low-quality twin.

A window of D consecutive planes (``WindowSampler``, [-1, 1] units, augmented) is degraded the
way ``simulate_restore`` degrades a whole volume: axial Gaussian blur (sigma a/2 planes, the
thick optical section of fast axial sampling), axial subsampling by a, optional lateral blur
and subsampling by l, Poisson-Gaussian noise. The low-quality window is then upsampled back to
the window's grid exactly as at inference (``Upsampler``, trilinear), so the networks see the
same input in training and use.

Pre-training (MicroDiffuse3D, "masked pre-training"): with probability ``mask_prob`` a random
50-75 % of 3D blocks of the upsampled input are masked (set to 0 and flagged in a mask
channel), so the model must also restore structure it cannot see from local evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..methods.restore_baselines import Upsampler
from ..normalize import percentile_range
from ..simulate.degrade import poisson_gaussian_noise


@dataclass(frozen=True)
class Degradation:
    """What the low-quality input of a training pair looks like (ranges are sampled per window)."""

    axial_factors: tuple[int, ...] = (4,)
    lateral_factors: tuple[int, ...] = (1,)
    #: Relative noise level at the bright level (``poisson_gaussian_noise``), uniform in this range.
    noise: tuple[float, float] = (0.02, 0.08)
    #: Axial blur in planes; None = a/2, as ``simulate_restore``.
    axial_blur: float | None = None
    mask_prob: float = 0.0
    mask_ratio: tuple[float, float] = (0.5, 0.75)
    #: Masked block size (planes, pixels, pixels) on the output grid.
    mask_block: tuple[int, int, int] = (4, 8, 8)


#: The shipped fine-tuning tasks and the pre-training mixture.
DEGRADATIONS: dict[str, Degradation] = {
    "axial4": Degradation((4,), (1,), (0.02, 0.08)),
    "denoise": Degradation((1,), (1,), (0.05, 0.3)),
    "pretrain": Degradation((1, 2, 3, 4, 6, 8), (1, 1, 2), (0.0, 0.3), mask_prob=0.9),
}


def degrade_window(window: np.ndarray, a: int, l: int, noise: float, rng: np.random.Generator,
                   axial_blur: float | None = None) -> np.ndarray:
    """The low-quality acquisition of a window (D, H, W) in [-1, 1] units: (ceil(D/a), H/l, W/l)."""
    from scipy import ndimage

    unit = (window + 1) / 2
    sz = (a / 2 if a > 1 else 0.0) if axial_blur is None else axial_blur
    sxy = l / 2 if l > 1 else 0.0
    if sz > 0 or sxy > 0:
        unit = ndimage.gaussian_filter(unit, sigma=(sz, sxy, sxy), mode="reflect")
    low = unit[::a, ::l, ::l]
    low = poisson_gaussian_noise(low, noise, rng) if noise > 0 else low.astype(np.float32)
    return 2 * low - 1


def block_mask(shape: tuple[int, int, int], block: tuple[int, int, int], ratio: float, rng: np.random.Generator) -> np.ndarray:
    """1 where visible, 0 in ``ratio`` of the (block-sized) cells of a (D, H, W) grid."""
    cells = tuple(-(-s // b) for s, b in zip(shape, block))
    total = int(np.prod(cells))
    hidden = rng.permutation(total) < int(round(ratio * total))
    keep = (~hidden).reshape(cells).astype(np.float32)
    for axis, b in enumerate(block):
        keep = np.repeat(keep, b, axis=axis)
    return keep[: shape[0], : shape[1], : shape[2]]


def make_pair(window: np.ndarray, deg: Degradation, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input upsampled to the window's grid (D, H, W), mask (D, H, W), target = window), [-1, 1] units.

    The window's first plane is an acquired one; planes after the last acquired one are clamped,
    as at the end of a stack at inference.
    """
    a = int(rng.choice(deg.axial_factors))
    l = int(rng.choice(deg.lateral_factors))
    d, h, w = window.shape
    if h % l or w % l:
        l = 1
    noise = float(rng.uniform(*deg.noise))
    low = degrade_window(window, a, l, noise, rng, deg.axial_blur)
    # At inference the intensity window comes from the low-quality input (its percentiles,
    # noise included); map input and target with the low window's own percentiles likewise.
    lo, hi = percentile_range(low)
    scale = np.float32(2.0 / (hi - lo))
    low = (low - np.float32(lo)) * scale - 1
    window = (window - np.float32(lo)) * scale - 1
    up = Upsampler(low, a, l).planes(0, d)
    mask = np.ones_like(up)
    if deg.mask_prob and rng.random() < deg.mask_prob:
        mask = block_mask(up.shape, deg.mask_block, float(rng.uniform(*deg.mask_ratio)), rng)
        up = up * mask
    return up.astype(np.float32), mask, window.astype(np.float32)


def pair_batch(windows: np.ndarray, deg: Degradation, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacked ``make_pair`` over (B, D, H, W) windows: (inputs, masks, targets)."""
    ins, masks, outs = zip(*(make_pair(w, deg, rng) for w in windows))
    return np.stack(ins), np.stack(masks), np.stack(outs)
