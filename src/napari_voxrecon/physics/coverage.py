"""Which voxels the views see: each point source's light reaches the camera only within the
objective's acceptance cone, half-angle asin(NA / n), opening from the source towards +z.

A fit's image terms are means over every view's pixels, so a voxel's pull from the data grows
with the share of the views whose cone holds it, while the priors (means over the voxels) pull
every voxel alike. ``view_share`` (that share, averaged over the volume) is what the fit scales
its priors by (``models.diffraction_fit.prior_scale``): a field wide for its depth, where six
cones see half the volume, would otherwise be regularised as if every view saw all of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .optics import Optics


def _cones(shape: tuple[int, int, int], sources: np.ndarray, optics: Optics) -> Iterator[np.ndarray]:
    """Per source (z, y, x µm), the (D, H, W) bool mask of the grid's voxels in its acceptance cone
    (voxel (i, j, k) centred at (i dz, j dy, k dx) µm, the optics' frame): those above it within
    the cone. Voxels level with or below a source are not seen by it."""
    d, h, w = (int(s) for s in shape)
    tan = float(np.tan(np.arcsin(min(optics.na / optics.n_background, 1.0))))
    vz, vy, vx = optics.voxel_size
    z = (np.arange(d) * vz)[:, None, None]
    y = (np.arange(h) * vy)[None, :, None]
    x = (np.arange(w) * vx)[None, None, :]
    for s in np.asarray(sources, dtype=np.float64).reshape(-1, 3):
        height = z - s[0]
        yield (np.hypot(y - s[1], x - s[2]) <= tan * height) & (height > 0)


def views_per_voxel(shape: tuple[int, int, int], sources: np.ndarray, optics: Optics) -> np.ndarray:
    """(D, H, W) int32: how many of the (K, 3) sources see each voxel of the grid."""
    count = np.zeros(tuple(int(s) for s in shape), np.int32)
    for cone in _cones(shape, sources, optics):
        count += cone
    return count


def voxels_seen(shape: tuple[int, int, int], sources: np.ndarray, optics: Optics) -> np.ndarray:
    """(K,) int: how many voxels of the grid each source's cone holds (0: its image says nothing
    about the sample)."""
    return np.array([int(cone.sum()) for cone in _cones(shape, sources, optics)], dtype=np.int64)


def view_share(shape: tuple[int, int, int], sources: np.ndarray, optics: Optics) -> float:
    """The share of the views that see a voxel, averaged over the volume: 1 when every cone holds
    the whole grid, 0 when none reaches it (0 for no sources)."""
    sources = np.asarray(sources).reshape(-1, 3)
    if len(sources) == 0:
        return 0.0
    return float(views_per_voxel(shape, sources, optics).mean() / len(sources))
