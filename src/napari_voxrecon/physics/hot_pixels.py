"""Isolated pixels brighter than the optics allow: hot camera pixels and cosmic rays.

An image formed through a pupil of numerical aperture NA is band-limited: no feature is
narrower than the in-focus spot, whose intensity one camera pixel p from its peak is still
(2 J1(v) / v)^2 of it, v = 2π NA p / λ (the Airy pattern). A pixel many times brighter than all
eight of its neighbours cannot be light that came through the objective. One such pixel matters
to a diffraction fit: the images are scaled by their maximum and the exposure is solved by least
squares, so a hot pixel ten times the spots' peak shrinks the data against the priors and pulls
the exposure (held-out cells and tubes: -1.3 dB at ten times the peak, -6.7 dB at thirty;
docs/benchmarks.md, "Faulty images").
"""

from __future__ import annotations

import math

import numpy as np

from .optics import Optics

#: How much brighter than the in-focus spot allows, relative to its brightest neighbour, a pixel
#: must be to count as hot (a margin for pixel integration, noise and aberrations).
SAFETY = 2.0
#: ... and by how much of the images' robust peak, so that photon noise is not taken for a hot
#: pixel (none flagged on simulations with 30 % Poisson noise at the peak; 0.25 flagged a few).
NOISE_MARGIN = 0.5
#: Below this neighbour-to-peak ratio of the in-focus spot (pixels coarse for the NA, v > 2.3),
#: a real spot can itself be almost one bright pixel and the simulated ratio falls below the
#: Airy value near its first zero: nothing is flagged.
MIN_NEIGHBOUR_RATIO = 0.2


def spot_neighbour_ratio(optics: Optics) -> float:
    """Intensity of the in-focus Airy spot one camera pixel from its peak, relative to the peak."""
    from scipy.special import j1

    pixel = optics.voxel_size[2] * optics.binning
    v = 2 * math.pi * optics.na * pixel / optics.wavelength
    return float((2 * j1(v) / v) ** 2) if v > 0 else 1.0


def _neighbours(image: np.ndarray) -> np.ndarray:
    """The eight neighbours of every pixel, (8, H, W) (edges mirrored)."""
    h, w = image.shape
    padded = np.pad(image, 1, mode="reflect") if min(h, w) > 1 else np.pad(image, 1, mode="edge")
    return np.stack([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)])


def find_hot_pixels(images: np.ndarray, optics: Optics) -> np.ndarray:
    """Boolean mask (K, H, W) of the pixels no image through these optics can hold: brighter than
    ``SAFETY`` / ``spot_neighbour_ratio`` times their brightest neighbour plus ``NOISE_MARGIN`` of
    the images' robust peak (the largest neighbour-median, which one hot pixel cannot raise)."""
    images = np.asarray(images, dtype=np.float32)
    mask = np.zeros(images.shape, dtype=bool)
    ratio = spot_neighbour_ratio(optics)
    if ratio < MIN_NEIGHBOUR_RATIO or min(images.shape[1:]) < 3:
        return mask
    brightest = np.empty_like(images)
    peak = 0.0
    for k, im in enumerate(images):  # one image's neighbours at a time: 8 x H x W, not 8 x K x H x W
        near = _neighbours(im)
        brightest[k] = np.maximum(near.max(axis=0), 0.0)
        peak = max(peak, float(np.median(near, axis=0).max()))
    if not peak > 0:
        return mask
    return images > (SAFETY / ratio) * brightest + NOISE_MARGIN * peak


def replace_hot_pixels(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``images`` with the masked pixels set to the median of their eight neighbours."""
    out = np.array(images, dtype=np.float32, copy=True)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        median = np.median(_neighbours(out[k]), axis=0)
        out[k][mask[k]] = median[mask[k]]
    return out
