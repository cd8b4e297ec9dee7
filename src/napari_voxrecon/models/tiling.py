"""Lateral tiling with overlap and linear blending, for any plane size at bounded memory."""

from __future__ import annotations

from typing import Any, Callable, Sequence

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


def fill_by_tiles(fill: Callable[[list[np.ndarray], int], tuple[Any, Any]], inputs: Sequence[np.ndarray], out_planes: int,
                  tile: int, overlap: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Run ``fill(tile_inputs, tile_seed) -> (mean (P, h, w), std or None)`` on every lateral tile
    of ``inputs`` (arrays whose last two axes are the plane) and blend the tiles linearly.

    Each tile's seed comes from (seed, tile position), so a tile's noise does not depend on which
    other tiles or windows were computed before. Tensors are accepted as outputs (moved to numpy).
    """
    h, w = inputs[0].shape[-2:]
    acc = np.zeros((out_planes, h, w), np.float32)
    acc_sd = np.zeros((out_planes, h, w), np.float32)
    wsum = np.zeros((h, w), np.float32)
    has_sd = False
    for y0, x0, th, tw, weight in tiles(h, w, tile, overlap):
        tile_seed = int(np.random.SeedSequence([seed, y0, x0]).generate_state(1)[0])
        parts = [np.ascontiguousarray(a[..., y0:y0 + th, x0:x0 + tw]) for a in inputs]
        mean, sd = fill(parts, tile_seed)
        acc[:, y0:y0 + th, x0:x0 + tw] += _numpy(mean) * weight
        if sd is not None:
            has_sd = True
            acc_sd[:, y0:y0 + th, x0:x0 + tw] += _numpy(sd) * weight
        wsum[y0:y0 + th, x0:x0 + tw] += weight
    return acc / wsum, (acc_sd / wsum if has_sd else None)


def _numpy(x: Any) -> np.ndarray:
    return x.float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, np.float32)
