"""Classical baselines of the ``projection`` task.

Projection k is the mean of planes k*n .. k*n+n-1, so it is placed at their centre
c_k = k*n + (n-1)/2. The sequence of projections is interpolated along z (linear or cubic; the
half group beyond the first and last centre is extrapolated from the end segment, so a linear
ramp is recovered exactly) and each group is then corrected so that its mean equals its projection
exactly (the least-squares correction that creates no negative intensity): the result is
consistent with the measurement.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..engine.events import SliceResult
from ..engine.registry import Method, register


def measurement_floor(projections: np.ndarray) -> float:
    """The lowest value a reconstruction may take: 0, or the lowest measured value if the data
    are offset below zero (background-subtracted stacks)."""
    return float(min(0.0, np.nanmin(projections)))


def enforce_group_means(group: np.ndarray, projection: np.ndarray, floor: float | None = None) -> np.ndarray:
    """The nearest group (least squares, per pixel) whose n planes average to the projection.

    ``floor=None``: a uniform shift of the n values. With a ``floor`` (e.g. 0, so that no negative
    intensity is created) it is the Euclidean projection onto {mean = p, values >= floor}: values
    are shifted by a common lambda and clipped at the floor, lambda chosen so the mean is exact
    (the simplex projection of Held et al.; sort, then a closed form per active count). Where the
    projection itself is below the floor, all n planes take its value.
    """
    g = group.astype(np.float64)
    p = projection.astype(np.float64)
    if floor is None:
        return (g + (p - g.mean(axis=0))).astype(np.float32)
    n = g.shape[0]
    f = np.minimum(floor, p)  # (H, W)
    shift = p - g.mean(axis=0)
    out = g + shift
    need = (out < f).any(axis=0)
    if need.any():
        gs = -np.sort(-g[:, need], axis=0)  # descending, (n, K)
        fk, pk = f[need], p[need]
        j = np.arange(1, n + 1)[:, None]
        # lambda_j keeps the top j values free and the others at the floor: j*lam + sum_top_j = n p - (n-j) f
        lam = (n * pk - (n - j) * fk - np.cumsum(gs, axis=0)) / j
        valid = gs + lam > fk  # the j-th largest stays above the floor
        # largest valid j (as an index); none valid only where p <= floor: then all planes = p
        jstar = np.where(valid.any(axis=0), n - 1 - np.argmax(valid[::-1], axis=0), 0)
        lam_star = lam[jstar, np.arange(gs.shape[1])]
        out[:, need] = np.maximum(g[:, need] + lam_star, fk)
    return out.astype(np.float32)


def _run(ctx, order: int) -> Iterator[SliceResult]:
    n = ctx.params["interval"]
    proj = ctx.volume
    m = proj.shape[0]
    floor = measurement_floor(proj)
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
        group = enforce_group_means(group, proj[k], floor)
        for i, z in enumerate(planes):
            if z not in ctx.skip:
                yield SliceResult(z, group[i])
        ctx.check_cancel()


# Chunked runs (engine/chunks.py): pixels are independent; linear needs the neighbouring
# projections, the global spline a few more.
register(Method("projection", "linear", "linear interpolation of the projection sequence, group means kept equal to the projections", lambda ctx: _run(ctx, 1),
                extra={"z_halo": 1, "lateral_margin": 0}))
register(Method("projection", "cubic", "cubic-spline interpolation of the projection sequence, group means kept equal to the projections", lambda ctx: _run(ctx, 3),
                extra={"z_halo": 6, "lateral_margin": 0}))
