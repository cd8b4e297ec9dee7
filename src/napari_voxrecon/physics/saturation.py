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


def saturated_pixels(images: np.ndarray) -> np.ndarray:
    """Boolean mask (K, H, W) of the pixels at the stack's maximum when they pile up there, as
    clipping does (none otherwise)."""
    images = np.asarray(images)
    top = images.max()
    at_top = images == top
    n_top = int(at_top.sum())
    if n_top < MIN_PLATEAU:
        return np.zeros(images.shape, dtype=bool)
    below = images[~at_top]
    n_next = int((below == below.max()).sum()) if below.size else 0
    return at_top if n_top >= PILE_UP * max(n_next, 1) else np.zeros(images.shape, dtype=bool)
