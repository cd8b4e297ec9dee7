"""The ``inr`` method of the ``sparse`` and ``projection`` tasks: a per-volume INR fitted to the
measurements alone (``models/inr.py``), then rendered plane by plane.

`sparse`: fitted to the acquired planes, which are then returned bit-exact. `projection`: fitted
to the projections through the group mean (MicroDiffusion eq. 2); each rendered group is then
shifted so its mean equals its projection exactly, like the classical baselines.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from ..engine.events import Preview, Progress, SliceResult
from ..engine.registry import Method, Param, register

ITERATIONS = Param("iterations", int, 600, "fitting iterations at most (stops earlier when the loss stops improving)", min=10, max=100000)
LR = Param("lr", float, 0.0, "Adam learning rate of the fit; 0 = the encoding's own (1e-2 grid, 1e-3 fourier)", min=0.0, max=1.0)
ENCODING = Param("encoding", str, "grid", "INR representation: grid (feature grids + small MLP, fast) or fourier (the paper's Fourier-feature MLP, slow)",
                 choices=("grid", "fourier"))
NEIGHBOUR = Param("neighbour_sigma", float, 0.0, "neighbouring-based inference (MicroDiffusion eq. 3): Gaussian width in group units; 0 renders each plane alone",
                  min=0.0, max=2.0)


#: Seconds of fitting between two previews of the INR's current rendering. A preview renders
#: every output plane at half lateral resolution (about 1-2 s for 60x256x256 on 2 CPU cores),
#: so a one-minute fit slows by about 10-20 %.
PREVIEW_SECONDS = 8.0


def preview_volume(model: Any, depth: int, height: int, width: int) -> np.ndarray:
    """The INR's current rendering of all ``depth`` output planes in its [0, 1] units, at half
    lateral resolution repeated to full size: provisional, for display while fitting."""
    from ..models.inr import plane_z, render_plane

    hh, ww = (height + 1) // 2, (width + 1) // 2
    planes = np.stack([render_plane(model, plane_z(model, z, depth), hh, ww) for z in range(depth)])
    return np.repeat(np.repeat(planes, 2, axis=1), 2, axis=2)[:, :height, :width]


def _fit_events(fitter, volume: np.ndarray, ctx, preview: tuple[str, Any] | None = None) -> Iterator[Any]:
    """Run a fit generator, turning its reports into Progress events; returns the model.

    ``preview = (output, to_units)``: every ``PREVIEW_SECONDS`` of fitting, the current rendering
    (``preview_volume``, mapped to input units by ``to_units``) is yielded as a ``Preview`` of
    that output, so the viewer shows the fit as it goes.
    """
    import time

    import torch

    from ..models.inr import FitReport

    torch.manual_seed(ctx.seed)
    model = None
    last = time.perf_counter()
    for item in fitter(volume, ctx.params["interval"], iterations=ctx.params["iterations"], lr=ctx.params.get("lr", 0.0),
                       seed=ctx.seed, device=ctx.device, check_cancel=ctx.check_cancel,
                       encoding=ctx.params.get("encoding", "grid")):
        if isinstance(item, FitReport):
            # Planes are the job's unit of progress: the fit comes before the first plane.
            yield Progress(len(ctx.skip), ctx.output_shape[0], f"fitting the INR: iteration {item.iteration}/{item.total}, loss {item.loss:.2e}",
                           loss=item.loss)
            if (preview is not None and item.model is not None and item.iteration < item.total
                    and time.perf_counter() - last >= PREVIEW_SECONDS):
                output, to_units = preview
                yield Preview(to_units(preview_volume(item.model, *ctx.output_shape)), output)
                last = time.perf_counter()  # the render's own time does not count as fitting
        else:
            model = item
    return model


def _run_sparse(ctx) -> Iterator[Any]:
    from ..models.inr import fit_sparse, render_output_plane
    from ..normalize import denormalize, normalize, percentile_range

    vol, n = ctx.volume, ctx.params["interval"]
    lo, hi = percentile_range(vol)
    model = yield from _fit_events(fit_sparse, normalize(vol, lo, hi), ctx, ("result", lambda v: denormalize(v, lo, hi)))
    m, h, w = vol.shape
    depth = (m - 1) * n + 1
    for z in range(depth):
        if z in ctx.skip:
            continue
        if z % n == 0:
            yield SliceResult(z, vol[z // n].copy())  # acquired: bit-exact
        else:
            plane = render_output_plane(model, z, depth, h, w, n=n, neighbour_sigma=ctx.params["neighbour_sigma"])
            yield SliceResult(z, denormalize(plane, lo, hi))
        ctx.check_cancel()


def _run_projection(ctx) -> Iterator[Any]:
    from ..models.inr import fit_projection, render_output_plane
    from ..normalize import denormalize, normalize, percentile_range
    from .projection_baselines import enforce_group_means, measurement_floor

    proj, n = ctx.volume, ctx.params["interval"]
    lo, hi = percentile_range(proj)
    model = yield from _fit_events(fit_projection, normalize(proj, lo, hi), ctx, ("result", lambda v: denormalize(v, lo, hi)))
    m, h, w = proj.shape
    depth = m * n
    floor = measurement_floor(proj)
    for k in range(m):
        planes = range(k * n, (k + 1) * n)
        if all(z in ctx.skip for z in planes):
            continue
        group = np.stack([denormalize(render_output_plane(model, z, depth, h, w, n=n, neighbour_sigma=ctx.params["neighbour_sigma"]), lo, hi)
                          for z in planes])
        group = enforce_group_means(group, proj[k], floor)
        for i, z in enumerate(planes):
            if z not in ctx.skip:
                yield SliceResult(z, group[i])
        ctx.check_cancel()


register(Method("sparse", "inr", "implicit neural representation (feature grids + MLP) fitted to the acquired planes",
                _run_sparse, params=(ITERATIONS, LR, ENCODING, NEIGHBOUR), uses_torch=True,
                extra={"z_halo": 2}))  # a fit per chunk: a little context so chunk edges are not fit edges
register(Method("projection", "inr", "implicit neural representation fitted to the projections (MicroDiffusion eq. 2), group means kept",
                _run_projection, params=(ITERATIONS, LR, ENCODING, NEIGHBOUR), uses_torch=True))
