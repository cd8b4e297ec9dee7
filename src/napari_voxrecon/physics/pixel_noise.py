"""How noisy camera images are, measured from the images themselves.

Spots through a pupil are smooth on the scale of a pixel, noise is not: the spread of each pixel
about the median of its eight neighbours is the pixels' noise (read noise and shot noise alike),
and the median over all pixels keeps the spots' edges and a few hot pixels from counting. Used to
keep noise from being taken for hot pixels (``hot_pixels``) and to tell a frame that holds only
noise (``source_fit.blank_frames``). ``noise_share`` and ``signal_share`` set against each other
the noise and what the specimen does to the spots, for a fit's prior weight
(``models.diffraction_fit.noise_tv_scale``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: The median absolute deviation of a Gaussian, in standard deviations.
MAD_TO_SIGMA = 1.4826


def neighbours(image: np.ndarray, fill: Any) -> np.ndarray:
    """The eight neighbours of every pixel of a 2D image, (8, H, W); ``fill`` where a neighbour
    lies outside the image (mirroring would count an edge pixel's inner neighbours twice)."""
    h, w = image.shape
    padded = np.pad(image, 1, mode="constant", constant_values=fill)
    return np.stack([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)])


def pixel_noise(images: np.ndarray) -> float:
    """The pixels' noise (a standard deviation, in the images' units) of one image (H, W) or a
    stack (K, H, W): the robust spread of each inner pixel about its eight neighbours' median.
    0 for images under 3 x 3 pixels, or where most pixels equal that median (noiseless)."""
    stack = np.asarray(images, dtype=np.float32)
    stack = stack[None] if stack.ndim == 2 else stack
    if min(stack.shape[1:]) < 3:
        return 0.0
    residual = np.concatenate([
        (im[1:-1, 1:-1] - np.median(neighbours(im, 0.0)[:, 1:-1, 1:-1], axis=0)).ravel() for im in stack])
    return MAD_TO_SIGMA * float(np.median(np.abs(residual)))


def smoothed_noise(noise: float, sigma: float) -> float:
    """The standard deviation white pixel noise of ``noise`` keeps after a Gaussian of ``sigma``
    pixels (its 2D kernel's root sum of squares: 1 / (2 √π σ))."""
    return noise / (2 * math.sqrt(math.pi) * sigma)


def _bright_span(stack: np.ndarray) -> float:
    """The images' bright range: their 99.9th percentile over their median (the background)."""
    return float(np.percentile(stack, 99.9) - np.median(stack))


def noise_share(images: np.ndarray, noiseless: np.ndarray | None = None) -> float:
    """The typical pixel's noise as a share of the images' bright range (99.9th percentile over
    the median), one number for a stack (K, H, W) or an image: the noise the image terms of a fit
    see, on the scale they compare at.

    Spots whose fringes are about a camera pixel apart leave some spread about the neighbours'
    median even without noise (3-4 % of the range for 0.2 µm pixels at NA 0.8). With
    ``noiseless``, images of the same kind rendered without noise (the views through the bare
    medium), that share is taken out in quadrature, so that clean images give about 0 whatever
    their sampling. Poisson-Gaussian noise of relative level l at the bright level gives less
    than l, the more so the more of the field is dark (its pixels carry the read noise and little
    shot noise): about 0.09 for l = 0.1 and 0.17 for l = 0.3 on 64 x 64 fields of six views."""
    def share(stack: np.ndarray) -> float:
        stack = np.asarray(stack, dtype=np.float32)
        span = _bright_span(stack)
        return pixel_noise(stack) / span if span > 0 else 0.0

    measured = share(images)
    if noiseless is None:
        return measured
    return float(np.sqrt(max(0.0, measured ** 2 - share(noiseless) ** 2)))


#: ``signal_share``: Gaussian smoothing (pixels) before images and reference are compared.
SIGNAL_SMOOTHING = 2.0


def signal_share(images: np.ndarray, reference: np.ndarray) -> float:
    """How far images (K, H, W) depart from a reference of the same views (the views through the
    bare medium), as a share of the images' bright range: what the specimen does to the spots,
    the signal a fit of the index has to go on.

    Both are smoothed by ``SIGNAL_SMOOTHING`` pixels (the spots' shifts and distortions survive,
    most of the pixel noise does not) and the reference is fitted to the images with an exposure
    and an offset by least squares; the root-mean-square of what is left, less in quadrature
    what the smoothed noise (``pixel_noise``) leaves, is the signal. A dense cell changes its
    spots by 4-9 % of the range, a few thin tubes of Δn 0.01-0.03 by 0-2 %."""
    from scipy.ndimage import gaussian_filter

    stack = np.asarray(images, dtype=np.float64).reshape((-1,) + np.shape(images)[-2:])
    ref = np.asarray(reference, dtype=np.float64).reshape(stack.shape)
    span = _bright_span(stack)
    if span <= 0:
        return 0.0
    a = np.stack([gaussian_filter(v, SIGNAL_SMOOTHING, mode="nearest") for v in stack]).ravel()
    b = np.stack([gaussian_filter(v, SIGNAL_SMOOTHING, mode="nearest") for v in ref]).ravel()
    design = np.stack([b, np.ones_like(b)], 1)
    coef, *_ = np.linalg.lstsq(design, a, rcond=None)
    departure = float(np.sqrt(np.mean((a - design @ coef) ** 2))) / span
    left = smoothed_noise(pixel_noise(stack), SIGNAL_SMOOTHING) / span
    return float(np.sqrt(max(0.0, departure ** 2 - left ** 2)))
