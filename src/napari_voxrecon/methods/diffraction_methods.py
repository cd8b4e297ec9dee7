"""Methods of the ``diffraction`` task: ``nvp`` (neural volumetric prior), ``explicit`` (voxel
grid) and ``triplane``, all fitted per acquisition by ``models.diffraction_fit`` through the same
wave-optics model and loss. The current index volume is shown as a ``Preview`` every few
seconds; cancelling ends the fit and keeps the estimate reached so far as the result.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generator, Iterator

import numpy as np

from ..engine.events import Notice, Preview, Progress, SliceResult
from ..engine.registry import Method, Param, register
from ..physics.source_fit import BLANK_CONTRAST, ESTIMATED_SOURCE_CALIBRATION, blank_frames, estimated_source_schedule

if TYPE_CHECKING:
    from ..physics.optics import Optics

#: Seconds of fitting between two previews of the index volume.
PREVIEW_SECONDS = 5.0
#: Above this share of negative pixels, images without a fitted background get a warning (read
#: noise about a zero offset leaves a few; a subtracted background leaves a large share).
NEGATIVE_SHARE = 0.01

#: FitConfig fields per representation: the best of a grid tried on tuning phantoms (seeds 100-101
#: of cells and tubes, 32 x 64 x 64, 6 views, 300 iterations; docs/benchmarks.md). A voxel grid
#: needs larger steps and more TV than the decoded feature representations; NVP does best
#: coarse: a 8x-coarser feature grid refined once to 4x, plus a second level twice as coarse.
#: Pruning to the support at 30 % of the fit helps all three (the index otherwise smears along
#: the depth that views from one side barely see); the sparsity prior helps the feature ones.
#: NVP alone gains from pruning again at 60 % with a margin of one slab in depth (the triplane's
#: planes already tie depth across the volume: neither helps it).
#: Both feature representations average their interpolated features over one node spacing
#: (``smooth``: no kinks at the nodes): +0.62 ± 0.20 dB for NVP and +0.85 ± 0.19 for the triplane
#: over 18 held-out phantoms.
#: τ and the sparsity weight are those of that geometry: the feature representations weigh them by
#: the fit's own views' coverage (``FitConfig.cover_priors``, ``models.diffraction_fit.prior_scale``;
#: about +1 dB on wide fields). The voxel grid does not: it has no smoothness of its own, its τ is
#: what fills the voxels the views barely see, and weighted it gained nothing on the same wide
#: fields (-0.1 dB over three, -0.6 to +0.4).
#: The triplane multiplies its three planes' features (K-Planes; the paper's "low-rank
#: decomposition") since 2026-12-07: it tied the sum on the tuning phantoms (26.93 vs 26.82 dB) and
#: on 18 held-out small fields (-0.03 ± 0.18 dB), and is the stronger baseline on the dense
#: 64 x 128 x 128 tissue (+0.66 dB over six seeds, +0.56 ± 0.27 over six lobed ones) and on six
#: real-nuclei crops (+0.32 ± 0.16 dB).
#: On noisy images the feature representations weigh τ by the images' noise against their signal
#: (``FitConfig.noise_tv``, ``models.diffraction_fit.noise_tv_scale``; 1 on clean images, +3.8 dB at
#: noise level 0.1 over six held-out fields); the voxel grid, whose τ is ten times larger, does not.
#: Every method lets each image carry a smooth (order-1) background: free on coherent simulations
#: (+0.03 ± 0.10 dB over 18 held-out fits) and 8-14 dB on hazy ones; real fluorescence is hazy.
DEFAULTS: dict[str, dict[str, Any]] = {
    "nvp": {"lr": 0.03, "tv": 4e-3, "sparsity": 3e-3, "prune": 0.1, "prune_at": (0.3, 0.6),
            "prune_margin": (1, 4, 4), "refine_at": (0.3,),
            "field_kw": {"features": 8, "downsample": 8, "levels": 2, "smooth": 1.0}, "background_order": 1},
    "triplane": {"lr": 0.03, "tv": 4e-3, "sparsity": 3e-3, "prune": 0.1, "prune_at": (0.3,), "field_kw": {"features": 16, "downsample": 4, "smooth": 1.0, "combine": "product"},
                 "background_order": 1},
    "explicit": {"lr": 0.3, "tv": 3e-2, "sparsity": 0.0, "prune": 0.1, "prune_at": (0.3,), "background_order": 1,
                 "cover_priors": False, "noise_tv": False},
}


def fit_config(kind: str, **overrides: Any) -> "FitConfig":
    """The ``FitConfig`` the method ``kind`` runs with: its tuned defaults, then ``overrides``."""
    from ..models.diffraction_fit import FitConfig

    return FitConfig(**{**DEFAULTS[kind], **overrides})


def _percent(fractions: tuple[float, ...]) -> str:
    """'30 %' or '30 % and 60 %' (escaped by the CLI where argparse needs it)."""
    return " and ".join(f"{round(100 * f)} %" for f in fractions)


def _params(kind: str) -> tuple[Param, ...]:
    d = DEFAULTS[kind]
    return (
        Param("iterations", int, 300, "optimisation steps", min=1, max=100000),
        Param("lr", float, d["lr"], "Adam learning rate of the representation", min=1e-6, max=10.0),
        Param("tv", float, d["tv"], "weight τ of the total-variation prior on the index", min=0.0, max=10.0),
        Param("sparsity", float, d["sparsity"], "weight of the L1 prior on the index contrast (the least index "
              "that explains the images)", min=0.0, max=10.0),
        Param("cover_priors", bool, d.get("cover_priors", True), "weigh tv and sparsity by the share of the views "
              "that see an average voxel (their sources' acceptance cones) against the geometry they were tuned on: in a "
              "field wide for its depth each view sees only part of the volume, and the same weights would "
              "over-regularise it (off by default for the explicit voxel grid, whose strong tv fills what the views "
              "barely see)"),
        Param("noise_tv", bool, d.get("noise_tv", True), "weigh tv up with the images' noise against "
              "their signal, as a Wiener filter does (both measured against the views through the bare medium): "
              "weights tuned on clean images let a fit explain the noise of noisy ones with index that is not there (off by default "
              "for the explicit voxel grid, whose tv is ten times larger already)"),
        Param("nonnegative", bool, d.get("nonnegative", False), "keep the index contrast at or above the medium's "
              "(Δn >= 0: a specimen denser than the medium it sits in, as cells in water or culture medium); turn it "
              "off where parts of the sample have a lower index than the medium"),
        Param("prune", float, d["prune"], f"at {_percent(d['prune_at'])} of the iterations, keep the index only where it "
              "exceeds this fraction of its maximum, plus a margin (0: never; lower it for faint structures)", min=0.0, max=1.0),
        Param("calibrate", bool, True, "optimise the source positions jointly (self-calibration)"),
        Param("calibrate_after", float, -1.0, "with calibrate: the fraction of the iterations before the source positions "
              "start to move (-1: half of them with a sources file, so that the index settles around positions that "
              f"should be right; {ESTIMATED_SOURCE_CALIBRATION['calibrate_after']:g}, from the start, for positions "
              "estimated from the spots)", min=-1.0, max=1.0),
        Param("anneal_blur", float, -1.0, "with calibrate: compare images and predictions blurred by this many camera "
              "pixels at first, narrowing to `blur` by half the fit, "
              "so that a source off by tenths of a µm is not held in place by its spot's fringes (-1: "
              f"{ESTIMATED_SOURCE_CALIBRATION['anneal_blur']:g} for positions estimated from the spots, 0 with a sources file)",
              min=-1.0, max=20.0),
        Param("refit", int, -1, "with calibrate: then fit the index afresh for this many iterations from the source "
              "positions found, treating them as a sources file's (-1: as many as `iterations` for positions estimated "
              "from the spots, which finds them while moving them blurred and then fits the index around them; 0 with a "
              "sources file)", min=-1, max=100000),
        Param("hold_depth", int, -1, "with calibrate: 1 keeps the plane of the sources' depths (their common depth and "
              "tilt) as given while the depths about it and the lateral positions are refined (moving all sources deeper "
              "defocuses every spot alike, as a change in the index's level does, and a tilt trades against an index "
              "gradient, so the images hardly tell them apart), 0 lets it move; -1: 1 unless the sources are searched "
              "for (anneal_blur or refit: positions estimated from the spots, or a file off by tenths of a µm, whose "
              "errors leave one in the mean depth)", min=-1, max=1),
        Param("coherence_mask", float, 0.0, "fit the images only within this fraction of each spot's radius (coherence "
              "mask: real, partially coherent fluorescence departs from the coherent model outside the blur disc and "
              "at its edge); 0: every pixel", min=0.0, max=2.0),
        Param("background", int, d.get("background_order", -1), "coherence alignment: each image may carry a smooth "
              "incoherent background (out-of-focus fluorescence), a polynomial in x, y of this order fitted per image "
              "(-1: none)", min=-1, max=4),
        Param("blur", float, d.get("compare_blur", 0.0), "coherence alignment: compare images and predictions blurred "
              "by a Gaussian of this many camera pixels, since partially coherent fluorescence (an emission band, an "
              "emitter of finite size) washes out the finest fringes a coherent model predicts (0: unblurred)",
              min=0.0, max=10.0),
    )


def _which_images(mask: np.ndarray) -> str:
    """'image(s) 0, 3, ...': the images (first axis) where ``mask`` holds a pixel, ten at most."""
    views = np.flatnonzero(mask.any(axis=(1, 2)))
    return f"image(s) {', '.join(map(str, views[:10]))}{' ...' if len(views) > 10 else ''}"


def _checked_images(images: np.ndarray, optics: Optics, background: int
                    ) -> Generator[Any, None, tuple[np.ndarray, np.ndarray | None]]:
    """The images as the fit should see them, and the mask of the pixels it compares (None: all),
    yielding a warning Notice for each fault found (docs/benchmarks.md, "Faulty images"):
    no positive value (refused), negative pixels without a fitted background, hot pixels
    (replaced by their neighbours' median), blank frames and saturated pixels (left out)."""
    from ..models.diffraction_fit import check_images
    from ..physics.hot_pixels import find_hot_pixels, replace_hot_pixels
    from ..physics.saturation import saturated_pixels

    negative = check_images(images)
    if negative > NEGATIVE_SHARE and background < 0:
        # each frame minus its median, fitted without a background: -22 dB on held-out fields
        yield Notice(f"{100 * negative:.0f} % of the image pixels are negative, as in background-subtracted frames, "
                     "but background is -1 (none): the model predicts intensities >= 0, so the missing offset is "
                     "fitted as index structure. Set background to 0 or more, or load the raw frames.",
                     level="warning")
    hot = find_hot_pixels(images, optics)
    if hot.any():  # before the sources are estimated: a hot pixel can look like a spot's peak
        images = replace_hot_pixels(images, hot)
        k, y, x = (int(i) for i in np.argwhere(hot)[0])
        yield Notice(f"replaced {int(hot.sum())} hot pixel(s) in {_which_images(hot)} (first: image {k}, y = {y}, "
                     f"x = {x}) by the median of their neighbours that are not hot: each, alone or in a cluster of "
                     "up to three, was brighter than any light through this NA can make a pixel beside its "
                     "neighbours, as hot camera pixels and cosmic rays are", level="warning")
    left_out = np.zeros(images.shape, dtype=bool)
    blank = blank_frames(images)
    if blank and len(blank) < len(images):
        # a dropped or dark frame: fitted, it made the index hide the spot its source must make
        # (-20 dB on held-out fields; left out, the fit lost only that view)
        left_out[blank] = True
        which = ", ".join(map(str, blank))
        yield Notice(f"image(s) {which} show no spot (their contrast is under {100 * BLANK_CONTRAST:.0f} % of the "
                     "others', or nothing in them stands out of their own noise), as a dropped or dark frame does, "
                     "though a source always makes one: they are left out of the fit", level="warning")
    elif blank:  # nothing to keep if all were left out: fitted as they are, and the user told
        yield Notice("no image shows a spot that stands out of its noise (or all are as dim as dropped frames): "
                     "the fit uses them all, but expect little; check the exposure and that these are the "
                     "diffraction images", level="warning")
    saturated = saturated_pixels(images)
    if saturated.any():
        left_out |= saturated
        yield Notice(f"{int(saturated.sum())} pixels ({100 * saturated.mean():.2g} %) in {_which_images(saturated)} "
                     "sit at their image's maximum, more than at any value below it, as where a camera clips: they "
                     "are left out of the fit (a clipped spot's flat top is not what the optics make); lower the "
                     "exposure if many are", level="warning")
    return images, (~left_out if left_out.any() else None)


def _run(ctx, kind: str) -> Iterator[Any]:
    import torch

    from ..models.diffraction_fit import (REFERENCE_VIEW_SHARE, FitConfig, fit_steps, noise_and_signal, noise_tv_scale,
                                          prior_scale, result_of)
    from ..physics.coverage import view_share, voxels_seen
    from ..physics.optics import Optics
    from ..physics.source_fit import estimate_sources
    from ..simulate.diffraction import read_sources

    p = ctx.params
    optics = Optics.load(p["optics"] or None)
    images, valid = yield from _checked_images(ctx.volume, optics, p["background"])
    depth = ctx.output_shape[0]
    schedule = {"calibrate_after": FitConfig.calibrate_after}
    if p["sources"]:
        sources = read_sources(p["sources"])
    else:
        yield Progress(0, depth, f"no sources file: estimating the {images.shape[0]} source positions from the spots")
        sources = estimate_sources(images, optics, depth).positions
        if p["calibrate"]:  # estimates are off by tenths of a µm: refined with the index from the start, coarse to fine
            schedule = estimated_source_schedule(p["iterations"])
    for key in ("calibrate_after", "anneal_blur", "refit"):
        if p[key] >= 0:
            schedule[key] = p[key]
    if p["hold_depth"] >= 0:
        schedule["hold_depth"] = bool(p["hold_depth"])
    if not p["sources"]:
        after = schedule["calibrate_after"]
        # a Notice, not a progress message: it stays on screen (printed by the CLI, a notification in napari)
        yield Notice(f"estimated source positions (z from {sources[:, 0].min():.2f} to {sources[:, 0].max():.2f} µm)"
                     + ("; self-calibration is off, so they stay as estimated" if not p["calibrate"] else
                        "; they are refined with the index " + ("from the start" if after == 0 else
                                                                f"from {round(100 * after)} % of the fit on")
                        + (f", the images compared blurred by {schedule['anneal_blur']:g} pixels at first"
                           if schedule.get("anneal_blur", 0) > 0 else "")
                        + (f"; then the index is fitted afresh around the positions found ({schedule['refit']} iterations)"
                           if schedule.get("refit", 0) > 0 else "")))
    blind = [int(i) for i in np.flatnonzero(voxels_seen(ctx.output_shape, sources, optics) == 0)]
    if blind:  # every view blind is refused by the task's validation
        which = ", ".join(map(str, blind))
        yield Notice((f"images {which}: their sources' light cones miss the index volume, so these images constrain "
                      "nothing; check those positions") if len(blind) > 1 else
                     (f"image {which}: its source's light cone misses the index volume, so this image constrains "
                      "nothing; check that position"), level="warning")
    torch.manual_seed(ctx.seed)
    cfg = fit_config(kind, iterations=p["iterations"], lr=p["lr"], tv=p["tv"], sparsity=p["sparsity"],
                     cover_priors=p["cover_priors"], noise_tv=p["noise_tv"], prune=p["prune"], nonnegative=p["nonnegative"],
                     calibrate=p["calibrate"], **schedule,
                     coherence_mask=p["coherence_mask"],
                     background_order=p["background"], compare_blur=p["blur"], seed=ctx.seed)
    if cfg.cover_priors:
        share = view_share(ctx.output_shape, sources, optics)  # the output is the fit's grid
        scale = prior_scale(share)
        if abs(scale - 1) > 0.25:
            yield Notice(f"an average voxel is seen by {100 * share:.0f} % of the views "
                         f"({100 * REFERENCE_VIEW_SHARE:.0f} % in the geometry the defaults were tuned on): tv and sparsity "
                         f"are weighted x{scale:.2f} to match (turn cover_priors off to use them as given)")
    if cfg.noise_tv:
        noise, signal = noise_and_signal(images, sources, optics, depth, cfg.pad)
        weight = noise_tv_scale(noise, signal)
        cfg = replace(cfg, noise_tv_weight=weight)  # measured once: the fit uses it as given
        if weight > 1.25:
            yield Notice(f"the images' noise is about {100 * noise:.0f} % of their bright range, what the sample does to "
                         f"the spots about {100 * signal:.1f} %: tv is weighted x{weight:.1f} against the noise (turn "
                         "noise_tv off to use it as given)")
    gen = fit_steps(images, sources, optics, depth, kind, cfg, device=ctx.device, valid=valid)
    n_bg = np.float32(optics.n_background)
    last, step, result = time.perf_counter(), None, None
    while result is None:
        try:
            step = next(gen)
        except StopIteration as done:
            result = done.value
            break
        # Planes are the job's unit of progress: the whole fit comes before the first plane.
        again = " (afresh around the sources found)" if step.iteration > cfg.iterations else ""
        yield Progress(0, depth, f"fitting {kind}{again}: iteration {step.iteration}/{step.total}, loss {step.loss:.3e}",
                       loss=step.loss)
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
        ("triplane", "three feature planes (multiplied, K-Planes style) + MLP through the same wave optics and loss (baseline)"),
    ):
        register(Method("diffraction", kind, help_, lambda ctx, kind=kind: _run(ctx, kind), params=_params(kind), uses_torch=True,
                        extra={"finish_on_cancel": True}))


_register()
