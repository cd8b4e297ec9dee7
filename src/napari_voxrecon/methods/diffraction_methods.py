"""Methods of the ``diffraction`` task: ``nvp`` (neural volumetric prior), ``explicit`` (voxel
grid) and ``triplane``, all fitted per acquisition by ``models.diffraction_fit`` through the same
wave-optics model and loss. The current index volume is shown as a ``Preview`` every few
seconds; cancelling ends the fit and keeps the estimate reached so far as the result.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from ..engine.events import Preview, Progress, SliceResult
from ..engine.registry import Method, Param, register

#: Seconds of fitting between two previews of the index volume.
PREVIEW_SECONDS = 5.0

#: (lr, τ) per representation, tuned on tuning phantoms (seeds 100-102, 16 x 32 x 32, 6 views):
#: a voxel grid needs larger steps and more TV than the decoded feature grids.
DEFAULTS = {"nvp": (0.02, 2e-3), "triplane": (0.02, 2e-3), "explicit": (0.3, 1e-2)}


def _params(kind: str) -> tuple[Param, ...]:
    lr, tv = DEFAULTS[kind]
    return (
        Param("iterations", int, 300, "optimisation steps", min=1, max=100000),
        Param("lr", float, lr, "Adam learning rate of the representation", min=1e-6, max=10.0),
        Param("tv", float, tv, "weight τ of the total-variation prior on the index", min=0.0, max=10.0),
        Param("calibrate", bool, True, "optimise the source positions jointly (self-calibration)"),
    )


def _run(ctx, kind: str) -> Iterator[Any]:
    import numpy as np
    import torch

    from ..models.diffraction_fit import FitConfig, fit_steps, result_of
    from ..physics.optics import Optics
    from ..simulate.diffraction import read_sources

    p = ctx.params
    optics = Optics.load(p["optics"] or None)
    sources = read_sources(p["sources"])
    depth = ctx.output_shape[0]
    torch.manual_seed(ctx.seed)
    cfg = FitConfig(iterations=p["iterations"], lr=p["lr"], tv=p["tv"], calibrate=p["calibrate"], seed=ctx.seed)
    gen = fit_steps(ctx.volume, sources, optics, depth, kind, cfg, device=ctx.device)
    n_bg = np.float32(optics.n_background)
    last, step, result = time.perf_counter(), None, None
    while result is None:
        try:
            step = next(gen)
        except StopIteration as done:
            result = done.value
            break
        # Planes are the job's unit of progress: the whole fit comes before the first plane.
        yield Progress(0, depth, f"fitting {kind}: iteration {step.iteration}/{step.total}, loss {step.loss:.3e}")
        if ctx.cancel.cancelled:  # keep the estimate so far: it is the result the user asked to stop at
            result = result_of(step)
            gen.close()
            yield Progress(0, depth, f"stopped at iteration {step.iteration}: the current estimate is the result")
            break
        if time.perf_counter() - last >= PREVIEW_SECONDS and step.iteration < step.total:
            yield Preview(n_bg + step.render(), "result")
            last = time.perf_counter()
    for z in range(depth):
        if z not in ctx.skip:
            yield SliceResult(z, (n_bg + result.dn[z]).astype(np.float32))


def _register() -> None:
    for kind, help_ in (
        ("nvp", "NVP: 3D feature grid + MLP (neural volumetric prior), coarse to fine, fitted through multi-slice wave optics"),
        ("explicit", "a voxel grid of the index optimised directly through the same wave optics and loss (baseline)"),
        ("triplane", "three feature planes + MLP through the same wave optics and loss (baseline)"),
    ):
        register(Method("diffraction", kind, help_, lambda ctx, kind=kind: _run(ctx, kind), params=_params(kind), uses_torch=True,
                        extra={"finish_on_cancel": True}))


_register()
