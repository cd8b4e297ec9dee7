"""Classical baselines of the ``sparse`` task: nearest, linear and cubic interpolation along z.

Acquired plane k sits at output plane k*n and is copied bit-exact; the n-1 planes between are
interpolated. Planes stream out in z order, one at a time.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..engine.events import SliceResult
from ..engine.registry import Method, Param, register


def _acquired(ctx, z: int) -> tuple[int, int]:
    return divmod(z, ctx.params["interval"])


def _run_nearest(ctx) -> Iterator[SliceResult]:
    n = ctx.params["interval"]
    for z in range(ctx.output_shape[0]):
        if z in ctx.skip:
            continue
        k, r = _acquired(ctx, z)
        # Ties (r == n/2) go to the plane below, so the result does not depend on float rounding.
        src = k if r <= n / 2 else k + 1
        yield SliceResult(z, ctx.volume[src].copy())


def linear_plane(volume: np.ndarray, z: int, n: int) -> np.ndarray:
    """Plane z of the linear interpolation of a stack acquired every n planes."""
    k, r = divmod(z, n)
    if r == 0:
        return volume[k].copy()
    t = np.float32(r / n)
    return (np.float32(1) - t) * volume[k] + t * volume[k + 1]


def _run_linear(ctx) -> Iterator[SliceResult]:
    n = ctx.params["interval"]
    for z in range(ctx.output_shape[0]):
        if z in ctx.skip:
            continue
        yield SliceResult(z, linear_plane(ctx.volume, z, n))


def _run_linear_smooth(ctx) -> Iterator[SliceResult]:
    from scipy.ndimage import gaussian_filter

    n, sigma = ctx.params["interval"], ctx.params["sigma"]
    for z in range(ctx.output_shape[0]):
        if z in ctx.skip:
            continue
        plane = linear_plane(ctx.volume, z, n)
        # Interpolated planes average two noisy planes; a light lateral blur removes the rest of
        # the noise, which is most of what simple learned models gain (issue 3's trial).
        yield SliceResult(z, plane if z % n == 0 else gaussian_filter(plane, sigma, mode="reflect"))


def _run_cubic(ctx) -> Iterator[SliceResult]:
    from scipy.interpolate import CubicSpline

    n = ctx.params["interval"]
    vol = ctx.volume
    zs = np.arange(vol.shape[0], dtype=np.float64) * n
    # With two planes a cubic spline degenerates to the straight line, which is what we want.
    spline = CubicSpline(zs, vol.astype(np.float64), axis=0, bc_type="not-a-knot" if len(zs) > 3 else "natural")
    for z in range(ctx.output_shape[0]):
        if z in ctx.skip:
            continue
        k, r = _acquired(ctx, z)
        plane = vol[k].copy() if r == 0 else spline(float(z)).astype(np.float32)
        yield SliceResult(z, plane)


# Chunked runs (engine/chunks.py): these baselines read only the gap's two planes and each pixel
# alone, so chunks need no context and reproduce the whole-volume result exactly; the blur needs
# its 4-sigma support, the global cubic spline several planes on each side
# (a spline's reach decays by ~0.27 per knot: 6 planes leave < 0.1 % of it).
register(Method("sparse", "nearest", "copy the nearest acquired plane", _run_nearest, extra={"z_halo": 0, "lateral_margin": 0}))
register(Method("sparse", "linear", "linear interpolation between the two neighbouring acquired planes", _run_linear,
                extra={"z_halo": 0, "lateral_margin": 0}))
register(Method("sparse", "linear_smooth", "linear interpolation, then a lateral Gaussian blur of the interpolated planes",
                _run_linear_smooth, params=(Param("sigma", float, 1.0, "lateral Gaussian sigma in pixels", min=0.0, max=10.0),),
                extra={"z_halo": 0, "lateral_margin": 41}))
register(Method("sparse", "cubic", "cubic-spline interpolation along z through all acquired planes", _run_cubic,
                extra={"z_halo": 6, "lateral_margin": 0}))
