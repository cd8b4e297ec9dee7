"""Classical baselines of the ``restore`` task: trilinear and tricubic upsampling.

Input voxel (k, i, j) sits at output voxel (k*a, i*l, j*l); output planes beyond the last input
plane repeat the edge (clamped coordinates). Planes are computed one at a time.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..engine.events import SliceResult
from ..engine.registry import Method, register


def _run(ctx, order: int) -> Iterator[SliceResult]:
    from scipy import ndimage

    a, l = ctx.params["axial_factor"], ctx.params["lateral_factor"]
    vol = ctx.volume
    zo, ho, wo = ctx.output_shape
    ys = np.clip(np.arange(ho) / l, 0, vol.shape[1] - 1)
    xs = np.clip(np.arange(wo) / l, 0, vol.shape[2] - 1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    coeffs = ndimage.spline_filter(vol, order=3, mode="mirror", output=np.float32) if order == 3 else vol
    for z in range(zo):
        if z in ctx.skip:
            continue
        zc = np.full_like(yy, min(z / a, vol.shape[0] - 1))
        plane = ndimage.map_coordinates(coeffs, (zc, yy, xx), order=order, mode="mirror", prefilter=False, output=np.float32)
        yield SliceResult(z, plane)


register(Method("restore", "trilinear", "trilinear upsampling", lambda ctx: _run(ctx, 1)))
register(Method("restore", "tricubic", "tricubic-spline upsampling", lambda ctx: _run(ctx, 3)))
