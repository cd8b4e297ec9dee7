"""Isolated pixels brighter than the optics allow: hot camera pixels and cosmic rays.

An image formed through a pupil of numerical aperture NA is band-limited: no feature is
narrower than the in-focus spot, whose intensity one camera pixel p from its peak is still
(2 J1(v) / v)^2 of it, v = 2π NA p / λ (the Airy pattern). A pixel many times brighter than all
eight of its neighbours cannot be light that came through the objective. A cosmic ray often lights
two or three adjacent pixels, each of which then has a bright neighbour: those are held to their
second or third brightest neighbour, against the least an in-focus spot at any sub-pixel position
leaves there (``spot_neighbour_ratios``).

One such pixel matters to a diffraction fit: the images are scaled by their maximum and the
exposure is solved by least squares, so a hot pixel ten times the spots' peak shrinks the data
against the priors and pulls the exposure (held-out cells and tubes: -1.3 dB at ten times the peak, -6.7 dB at thirty;
docs/benchmarks.md, "Faulty images").
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .optics import Optics
from .pixel_noise import neighbours, pixel_noise

#: How much brighter than the in-focus spot allows, relative to its k-th brightest neighbour, a
#: pixel must be to count as hot (a margin for pixel integration, noise and aberrations).
SAFETY = 2.0
#: ... and by how much of the images' robust peak (0.25 flagged a few noisy pixels) ...
NOISE_MARGIN = 0.5
#: ... plus this many times the images' pixel noise: a noise spike in the dark has dark second
#: and third neighbours too (noise level 0.3, read noise 15 % of the peak: pixels flagged in 17
#: of 36 simulated sets without it; level 0.5: 35 of 36; none with 3 or 5; the brightest
#: neighbour alone, before this term: 1 and 9 of 36. benchmarks/diffraction_models.py hot-noise).
NOISE_SIGMAS = 5.0
#: Clusters of up to this many bright pixels are found where each touches at most CLUSTER - 1 of
#: the others (pairs, lines and corners of three). A 2 x 2 block is not: a spot centred on a pixel
#: corner lights four pixels alike, and its fourth brightest neighbour falls near the Airy zero
#: at coarse pixels (no bound left that a hot block would break and the spot would not).
CLUSTER = 3
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


def spot_neighbour_ratios(optics: Optics, cluster: int = CLUSTER) -> np.ndarray:
    """For k = 1 .. ``cluster``: the least ratio of a pixel's k-th brightest neighbour to the pixel
    itself on an in-focus Airy spot, over sub-pixel positions of the spot (a grid of 11 x 11 over
    half a pixel, by symmetry) and over the pixels of at least a quarter of the spot's brightest
    (dimmer ones stay under the noise margin). k = 1 is the centred spot's neighbour ratio."""
    from scipy.special import j1

    pixel = optics.voxel_size[2] * optics.binning
    v_pixel = 2 * math.pi * optics.na * pixel / optics.wavelength
    offsets = np.linspace(0.0, 0.5, 11)
    oy, ox = (a.reshape(-1, 1, 1) for a in np.meshgrid(offsets, offsets, indexing="ij"))
    yy, xx = np.mgrid[-4:5, -4:5]
    v = v_pixel * np.hypot(yy - oy, xx - ox)  # (121, 9, 9): the spot at each sub-pixel position
    spot = np.ones_like(v)
    spot[v > 1e-9] = (2 * j1(v[v > 1e-9]) / v[v > 1e-9]) ** 2
    inner = spot[:, 1:-1, 1:-1]
    near = np.stack([spot[:, 1 + dy:8 + dy, 1 + dx:8 + dx]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)])
    kth = -np.sort(-near, axis=0)[:cluster] / inner  # (cluster, 121, 7, 7)
    counted = inner >= 0.25 * spot.max(axis=(1, 2), keepdims=True)
    return np.array([float(r[counted].min()) for r in kth])


def find_hot_pixels(images: np.ndarray, optics: Optics) -> np.ndarray:
    """Boolean mask (K, H, W) of the pixels no image through these optics can hold: for some
    k <= ``CLUSTER``, brighter than ``SAFETY`` / ``spot_neighbour_ratios``[k] times their k-th
    brightest neighbour, plus ``NOISE_MARGIN`` of the images' robust peak (the largest median of
    a pixel's eight neighbours, which a cluster of up to three hot pixels cannot raise) and
    ``NOISE_SIGMAS`` times their pixel noise."""
    images = np.asarray(images, dtype=np.float32)
    mask = np.zeros(images.shape, dtype=bool)
    ratios = spot_neighbour_ratios(optics)
    if ratios[0] < MIN_NEIGHBOUR_RATIO or min(images.shape[1:]) < 3:
        return mask
    factors = (SAFETY / ratios).reshape(-1, 1, 1)
    peak = max(float(np.median(neighbours(im, 0.0)[:, 1:-1, 1:-1], axis=0).max()) for im in images)
    if not peak > 0:
        return mask
    margin = NOISE_MARGIN * peak + NOISE_SIGMAS * pixel_noise(images)
    for k, im in enumerate(images):  # one image's neighbours at a time: 8 x H x W, not 8 x K x H x W
        near = -np.sort(-neighbours(im, -np.inf), axis=0)[:len(factors)]  # brightest first; outside last
        mask[k] = (im > factors * np.maximum(near, 0.0) + margin).any(axis=0)
    return mask


def replace_hot_pixels(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``images`` with the masked pixels set to the median of their unmasked neighbours
    (of all eight where every one is masked)."""
    out = np.array(images, dtype=np.float32, copy=True)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        near = neighbours(out[k], np.nan)  # outside the image: not a neighbour
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: filled below
            median = np.nanmedian(np.where(neighbours(mask[k], False), np.nan, near), axis=0)
        median = np.where(np.isnan(median), np.nanmedian(near, axis=0), median)
        out[k][mask[k]] = median[mask[k]]
    return out
