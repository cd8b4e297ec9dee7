"""Lateral tiling with overlap and linear blending, for any plane size at bounded memory."""

from __future__ import annotations

import numpy as np


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``size`` with tiles of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


def blend_ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1D weights: linear ramps over the overlap on sides that touch another tile."""
    w = np.ones(length, np.float32)
    ramp = np.linspace(0, 1, overlap + 2, dtype=np.float32)[1:-1]
    if overlap > 0 and not at_start:
        w[:overlap] = ramp
    if overlap > 0 and not at_end:
        w[-overlap:] = ramp[::-1]
    return w


def tiles(height: int, width: int, tile: int, overlap: int):
    """Yield (y0, x0, h, w, weight (h, w)) for every tile of a plane."""
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    for iy, y0 in enumerate(ys):
        h = min(tile, height)
        wy = blend_ramp(h, overlap, iy == 0, iy == len(ys) - 1)
        for ix, x0 in enumerate(xs):
            w = min(tile, width)
            wx = blend_ramp(w, overlap, ix == 0, ix == len(xs) - 1)
            yield y0, x0, h, w, wy[:, None] * wx[None, :]
