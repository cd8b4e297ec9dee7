"""Saturated pixels: where the camera clipped a spot, the image says only "at least this bright".

A clipped spot has a flat top the wave-optics model cannot produce, so a fit that compares those
pixels pushes the index to flatten its spots. Left out of the loss instead (``fit_steps``'
``valid`` mask), the pixels around the plateau still pin each spot (held-out cells and tubes:
docs/benchmarks.md, "Faulty images").
"""

from __future__ import annotations

import numpy as np

#: At least this many pixels at the stack's maximum ...
MIN_PLATEAU = 3
#: ... and this many times as many as at the next value below it. Noisy float images hold their
#: maximum once; integer images with few counts hold the top values ever more rarely towards the
#: maximum (a tail); clipping piles every brighter pixel onto the maximum.
PILE_UP = 2.0
#: One frame's own maximum needs a larger plateau: frames clipped at levels of their own
#: (background subtracted or divided by the exposure after the camera clipped) are found, but
#: one frame of few photon counts ties at its top by chance far more often than a whole stack
#: (400 frames of spots with 10 counts at the peak: 2.5 % of them at 3 pixels, 0.25 % at 5;
#: tests/test_camera_faults.py).
MIN_PLATEAU_FRAME = 5


def _piled_up(values: np.ndarray, min_plateau: int) -> np.ndarray:
    """Mask of ``values`` at their maximum when at least ``min_plateau`` pixels and ``PILE_UP``
    times those at the next value below sit there (none for a constant array)."""
    top = values.max()
    at_top = values == top
    n_top = int(at_top.sum())
    if n_top < min_plateau or n_top == values.size:
        return np.zeros(values.shape, dtype=bool)
    below = values[~at_top]
    n_next = int((below == below.max()).sum())
    return at_top if n_top >= PILE_UP * n_next else np.zeros(values.shape, dtype=bool)


def saturated_pixels(images: np.ndarray) -> np.ndarray:
    """Boolean mask (K, H, W) of the pixels that pile up, as clipping makes them, at the stack's
    maximum (one camera, one clip level) or at their own frame's maximum (frames clipped and
    then shifted or scaled one by one); none otherwise."""
    images = np.asarray(images)
    mask = _piled_up(images, MIN_PLATEAU)
    for k, frame in enumerate(images):
        if not mask[k].any():
            mask[k] = _piled_up(frame, MIN_PLATEAU_FRAME)
    return mask
