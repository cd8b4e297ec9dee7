"""Classical baselines of the ``projection`` task.

Projection k is the mean of planes k*n .. k*n+n-1, so it is placed at their centre
c_k = k*n + (n-1)/2. The sequence of projections is interpolated along z (linear or cubic; the
half group beyond the first and last centre is extrapolated from the end segment, so a linear
ramp is recovered exactly) and each group is then shifted so that its mean equals its projection
exactly: the result is consistent with the measurement.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..engine.events import SliceResult
from ..engine.registry import Method, register


def enforce_group_means(group: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Shift the n planes of a group so their mean equals the measured projection."""
    group = group.astype(np.float64)
    group += projection.astype(np.float64) - group.mean(axis=0)
    return group.astype(np.float32)


def _run(ctx, order: int) -> Iterator[SliceResult]:
    n = ctx.params["interval"]
    proj = ctx.volume
    m = proj.shape[0]
    centres = np.arange(m, dtype=np.float64) * n + (n - 1) / 2
    spline = None
    if order == 3 and m >= 2:
        from scipy.interpolate import CubicSpline

        spline = CubicSpline(centres, proj.astype(np.float64), axis=0, bc_type="not-a-knot" if m > 3 else "natural")
    for k in range(m):
        planes = range(k * n, (k + 1) * n)
        if all(z in ctx.skip for z in planes):
            continue
        group = np.empty((n, *proj.shape[1:]), np.float64)
        for i, z in enumerate(planes):
            c = float(z)
            if m == 1:
                group[i] = proj[0]
            elif spline is not None:
                group[i] = spline(c)
            else:
                j = int(np.clip(np.searchsorted(centres, c, side="right") - 1, 0, m - 2))
                t = (c - centres[j]) / n
                group[i] = (1 - t) * proj[j] + t * proj[j + 1]
        group = enforce_group_means(group, proj[k])
        for i, z in enumerate(planes):
            if z not in ctx.skip:
                yield SliceResult(z, group[i])
        ctx.check_cancel()


register(Method("projection", "linear", "linear interpolation of the projection sequence, group means kept equal to the projections", lambda ctx: _run(ctx, 1)))
register(Method("projection", "cubic", "cubic-spline interpolation of the projection sequence, group means kept equal to the projections", lambda ctx: _run(ctx, 3)))
