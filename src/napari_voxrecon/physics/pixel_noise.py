"""How noisy camera images are, measured from the images themselves.

Spots through a pupil are smooth on the scale of a pixel, noise is not: the spread of each pixel
about the median of its eight neighbours is the pixels' noise (read noise and shot noise alike),
and the median over all pixels keeps the spots' edges and a few hot pixels from counting. Used to
keep noise from being taken for hot pixels (``hot_pixels``) and to tell a frame that holds only
noise (``source_fit.blank_frames``).
"""

from __future__ import annotations

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
