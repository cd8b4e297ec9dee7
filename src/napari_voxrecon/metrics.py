"""Image-quality metrics with the papers' protocol.

Both volumes are normalised with the ground truth's percentile window (``normalize.py``), so
scores do not depend on the camera's units and a prediction is never rescaled to fit. PSNR and
SSIM are computed per z-slice (data range 1) and averaged along z, as in the Sparse3Diff and
MicroDiffusion papers; MS-SSIM per slice likewise; Dice compares Otsu foregrounds (each volume
thresholded with its own Otsu level); CCC is Lin's concordance correlation coefficient over all
voxels.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .errors import InputError
from .normalize import normalize, percentile_range

METRICS = ("psnr", "ssim", "ms_ssim", "dice", "ccc")

# Wang, Simoncelli & Bovik 2003, MS-SSIM exponents for 5 scales.
_MS_SSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float32)
    gt = np.asarray(gt, dtype=np.float32)
    if pred.shape != gt.shape:
        raise InputError(f"prediction shape {pred.shape} and ground-truth shape {gt.shape} differ.")
    if pred.ndim != 3:
        raise InputError(f"metrics expect 3D volumes (Z, Y, X), got {pred.ndim}D.")
    lo, hi = percentile_range(gt)
    return normalize(pred, lo, hi), normalize(gt, lo, hi)


def psnr_slices(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """PSNR of each z-slice, data range 1 on normalised intensities (inf for identical slices)."""
    err = ((pred.astype(np.float64) - gt.astype(np.float64)) ** 2).mean(axis=(1, 2))
    with np.errstate(divide="ignore"):
        return 10 * np.log10(1.0 / err)


def ssim_slices(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """SSIM of each z-slice (scikit-image, Gaussian window sigma 1.5 as Wang et al. 2004)."""
    from skimage.metrics import structural_similarity

    return np.array(
        [
            structural_similarity(g, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for p, g in zip(pred, gt)
        ]
    )


def _ssim_components(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term of two 2D images (data range 1)."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01**2, 0.03**2
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    f = lambda a: gaussian_filter(a, 1.5, truncate=3.5)  # noqa: E731  (11x11 window as Wang et al.)
    mx, my = f(x), f(y)
    sxx = f(x * x) - mx * mx
    syy = f(y * y) - my * my
    sxy = f(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    pad = 5  # ignore the border where the window leaves the image
    sl = (slice(pad, -pad or None),) * 2 if min(x.shape) > 2 * pad + 1 else (slice(None),) * 2
    return float((lum * cs)[sl].mean()), float(cs[sl].mean())


def ms_ssim_2d(pred: np.ndarray, gt: np.ndarray) -> float:
    """Multi-scale SSIM (Wang et al. 2003) of a 2D pair; fewer scales for small images."""
    n_scales = 5
    while n_scales > 1 and min(gt.shape) / 2 ** (n_scales - 1) < 16:
        n_scales -= 1
    weights = _MS_SSIM_WEIGHTS[:n_scales] / _MS_SSIM_WEIGHTS[:n_scales].sum()
    x, y = pred.astype(np.float64), gt.astype(np.float64)
    values = []
    for s in range(n_scales):
        ssim, cs = _ssim_components(x, y)
        values.append(ssim if s == n_scales - 1 else cs)
        if s < n_scales - 1:
            h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
            x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            y = y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    # Negative cs values (anti-correlated structure) are clipped so the product stays defined.
    return float(np.prod(np.clip(values, 1e-6, None) ** weights))


def dice_otsu(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of the Otsu foregrounds (each volume with its own threshold)."""
    from skimage.filters import threshold_otsu

    a = pred > threshold_otsu(pred)
    b = gt > threshold_otsu(gt)
    denom = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / denom) if denom else 1.0


def ccc(pred: np.ndarray, gt: np.ndarray) -> float:
    """Lin's concordance correlation coefficient: 2 cov / (var_x + var_y + (mu_x - mu_y)^2)."""
    x = pred.astype(np.float64).ravel()
    y = gt.astype(np.float64).ravel()
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(2 * cov / (x.var() + y.var() + (mx - my) ** 2))


def evaluate(
    pred: np.ndarray,
    gt: np.ndarray,
    planes: Sequence[int] | Iterable[int] | None = None,
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """Scores of ``pred`` against ``gt``; ``planes`` restricts slice-wise metrics to those z.

    Normalisation uses the whole ground truth either way, so scores on a subset of planes are
    comparable with scores on the whole volume.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}.")
    p, g = _pair(pred, gt)
    if planes is not None:
        idx = np.array(sorted(set(int(z) for z in planes)), dtype=int)
        if idx.size == 0:
            raise InputError("no planes selected for scoring.")
        p, g = p[idx], g[idx]
    out: dict[str, float] = {}
    if "psnr" in metrics:
        out["psnr"] = float(np.mean(np.minimum(psnr_slices(p, g), 100.0)))  # identical slices count as 100 dB
    if "ssim" in metrics:
        out["ssim"] = float(np.mean(ssim_slices(p, g)))
    if "ms_ssim" in metrics:
        out["ms_ssim"] = float(np.mean([ms_ssim_2d(a, b) for a, b in zip(p, g)]))
    if "dice" in metrics:
        out["dice"] = dice_otsu(p, g)
    if "ccc" in metrics:
        out["ccc"] = ccc(p, g)
    return out


def missing_planes(n_planes: int, interval: int) -> list[int]:
    """Planes of a sparse task's output that were not acquired (z not a multiple of n)."""
    return [z for z in range(n_planes) if z % interval]
