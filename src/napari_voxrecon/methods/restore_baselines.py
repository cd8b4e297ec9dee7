"""Classical baselines of the ``restore`` task: trilinear and tricubic upsampling.

Input voxel (k, i, j) sits at output voxel (k*a, i*l, j*l); output planes beyond the last input
plane repeat the edge (clamped coordinates). Planes are computed one at a time.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..engine.events import SliceResult
from ..engine.registry import Method, register


class Upsampler:
    """Output planes of a low-quality volume upsampled by (a, l, l) on the task's grid.

    Used by the baselines and as the input of the learned methods (``care``, ``dit``), which
    restore the residual over the trilinear upsampling. ``order`` 1: trilinear, 3: tricubic spline.
    """

    def __init__(self, volume: np.ndarray, axial_factor: int, lateral_factor: int, order: int = 1) -> None:
        from scipy import ndimage

        self.a, self.l, self.order = int(axial_factor), int(lateral_factor), order
        self.volume = volume
        self.shape = (volume.shape[0] * self.a, volume.shape[1] * self.l, volume.shape[2] * self.l)
        ys = np.clip(np.arange(self.shape[1]) / self.l, 0, volume.shape[1] - 1)
        xs = np.clip(np.arange(self.shape[2]) / self.l, 0, volume.shape[2] - 1)
        self._yy, self._xx = np.meshgrid(ys, xs, indexing="ij")
        self._coeffs = ndimage.spline_filter(volume, order=3, mode="mirror", output=np.float32) if order == 3 else volume

    def plane(self, z: int) -> np.ndarray:
        from scipy import ndimage

        if self.order == 1 and self.l == 1:  # fast path: a blend of two input planes
            zc = min(z / self.a, self.volume.shape[0] - 1)
            k = int(np.floor(zc))
            f = np.float32(zc - k)
            if f == 0:
                return np.array(self.volume[k], dtype=np.float32)
            return ((1 - f) * self.volume[k] + f * self.volume[k + 1]).astype(np.float32)
        zc = np.full_like(self._yy, min(z / self.a, self.volume.shape[0] - 1))
        return ndimage.map_coordinates(self._coeffs, (zc, self._yy, self._xx), order=self.order, mode="mirror",
                                       prefilter=False, output=np.float32)

    def planes(self, z0: int, z1: int) -> np.ndarray:
        return np.stack([self.plane(z) for z in range(z0, z1)])


def _run(ctx, order: int) -> Iterator[SliceResult]:
    a, l = ctx.params["axial_factor"], ctx.params["lateral_factor"]
    up = Upsampler(ctx.volume, a, l, order)
    for z in range(ctx.output_shape[0]):
        if z in ctx.skip:
            continue
        yield SliceResult(z, up.plane(z))


# Chunked runs (engine/chunks.py): trilinear reads one neighbour in each direction; the spline's
# prefilter is global, so tricubic gets a wider context (its influence decays by ~0.27 per voxel).
register(Method("restore", "trilinear", "trilinear upsampling", lambda ctx: _run(ctx, 1), extra={"z_halo": 1, "lateral_margin": 2}))
register(Method("restore", "tricubic", "tricubic-spline upsampling", lambda ctx: _run(ctx, 3), extra={"z_halo": 8, "lateral_margin": 12}))
