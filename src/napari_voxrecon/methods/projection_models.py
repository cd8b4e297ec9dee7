"""Learned methods of the ``projection`` task: ``unet`` (regression) and ``microdiffusion``.

Both run ``models.projection_models.reconstruct_projection`` group by group. ``microdiffusion``
first fits the per-stack INR to the projections (the ``inr`` method's fit, reported as it goes,
with ``Preview`` volumes of the ``prior`` output every few seconds), streams its final rendering
as the ``prior`` output, then samples every group with the prior mixed into the diffusion state
(eq. 9). Weights trained as the naive-diffusion ablation (``voxrecon train microdiffusion
--no-inr-prior``, config ``"inr_prior": false``) skip the INR and run on the linear prior, which is
then the ``prior`` output.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from ..engine.events import SliceResult
from ..engine.registry import Method, Param, register
from .inr_methods import ITERATIONS, NEIGHBOUR
from .sparse_models import PRECISION, SAMPLER, TILE, WEIGHTS, build_model, outputs_with_uncertainty, run_learned

CONSISTENCY = Param("consistency", bool, True, "correct each group so its mean equals the measured projection exactly (no negative intensities created)")


def _build(state: dict, config: dict, device: str) -> Any:
    from ..models.projection_group_net import ProjectionGroupNet
    from ..models.projection_models import ProjectionModel

    return build_model(ProjectionGroupNet, ProjectionModel, state, config, device)


def _inr_prior(ctx) -> Iterator[Any]:
    """Fit the INR to the projections (progress events) and return prior_fn(k, proj3) -> (n, H, W)
    in the models' [-1, 1] units, yielding each group's prior as the ``prior`` output."""
    import numpy as np

    from ..models.inr import fit_projection, render_output_plane
    from ..normalize import denormalize, normalize, percentile_range
    from .inr_methods import _fit_events

    proj, n = ctx.volume, ctx.params["interval"]
    lo, hi = percentile_range(proj)
    inr = yield from _fit_events(fit_projection, normalize(proj, lo, hi), ctx, ("prior", lambda v: denormalize(v, lo, hi)))
    m, h, w = proj.shape
    depth = m * n

    def prior_fn(k: int) -> np.ndarray:
        unit = np.stack([render_output_plane(inr, z, depth, h, w, n=n, neighbour_sigma=ctx.params["neighbour_sigma"])
                         for z in range(k * n, (k + 1) * n)])
        return 2 * unit - 1  # [0, 1] window -> the models' [-1, 1]

    return prior_fn, (lo, hi)


def _linear_prior(ctx) -> tuple[Callable[[int, Any], Any], tuple[float, float]]:
    """prior_fn(k, proj3) -> (n, H, W): the linear prior reconstruct_projection uses by default."""
    import torch

    from ..models.projection_models import linear_prior
    from ..normalize import percentile_range

    n = ctx.params["interval"]

    def prior_fn(k: int, proj3: Any) -> Any:
        return linear_prior(torch.from_numpy(proj3[None]), n)[0].numpy()

    return prior_fn, percentile_range(ctx.volume)


def uses_inr_prior(weights: str) -> bool:
    """Whether microdiffusion weights were trained on the INR prior (False: the naive ablation)."""
    from ..weights import read_config, resolve_weights

    return bool(read_config(resolve_weights(weights, "microdiffusion")).get("inr_prior", True))


def _run(ctx, fill_kw: dict[str, Any], prior: str | None) -> Iterator[Any]:
    """``prior``: "inr" (fit it first), "linear" (shown as the prior output) or None (unet: no prior output)."""
    from ..engine.device import use_bf16
    from ..models.projection_models import reconstruct_projection
    from ..normalize import denormalize

    cache: dict[int, Any] = {}
    prior_fn: Callable[[int, Any], Any] | None = None
    after_plane = None
    n = ctx.params["interval"]
    if prior is not None:
        if prior == "inr":
            inr_prior, (lo, hi) = yield from _inr_prior(ctx)
            group_prior: Callable[[int, Any], Any] = lambda k, proj3: inr_prior(k)
        else:
            group_prior, (lo, hi) = _linear_prior(ctx)

        def render_prior(k: int, proj3: Any) -> Any:
            cache[k] = group_prior(k, proj3)
            return cache[k]

        def after_plane(z: int) -> Iterator[Any]:
            yield SliceResult(z, denormalize((cache[z // n][z % n] + 1) / 2, lo, hi), "prior")

        prior_fn = render_prior

    def planes(model: Any, device: str, done: frozenset[int]) -> Iterator[Any]:
        return reconstruct_projection(model, ctx.volume, n, prior_fn=prior_fn, skip=done, seed=ctx.seed,
                                      consistency=ctx.params["consistency"], check_cancel=ctx.check_cancel,
                                      tile=ctx.params["tile"], bf16=use_bf16(device, ctx.params["precision"]), **fill_kw)

    yield from run_learned(ctx, ctx.method.weights_method, planes, after_plane)


def _run_microdiffusion(ctx) -> Iterator[Any]:
    p = ctx.params
    prior = "inr" if uses_inr_prior(p["weights"]) else "linear"
    yield from _run(ctx, dict(steps=p["steps"], sampler=p["sampler"], guidance=p["guidance"], samples=p["samples"]), prior)


def _run_unet(ctx) -> Iterator[Any]:
    yield from _run(ctx, {}, None)


def _outputs(params: dict[str, Any]) -> tuple[str, ...]:
    return ("result", "prior", *outputs_with_uncertainty(params)[1:])


def _register() -> None:
    from ..models.loading import BUILDERS

    BUILDERS["projection-unet"] = _build
    BUILDERS["microdiffusion"] = _build
    register(Method(
        "projection", "microdiffusion",
        "MicroDiffusion: INR prior fitted to the projections, then INR-guided conditional diffusion (trained model)",
        _run_microdiffusion,
        params=(
            WEIGHTS,
            ITERATIONS,
            NEIGHBOUR,
            Param("steps", int, 1, "sampling steps (1, the posterior-mean estimate, scores best on held-out data at every n, docs/benchmarks.md; more give sharper, noisier samples)", min=1, max=1000),
            SAMPLER,
            Param("guidance", float, 0.0, "classifier-free guidance weight (eq. 7); 0 = conditional model only", min=0.0, max=10.0),
            Param("samples", int, 2, "K independent samples: their mean is the result, their std the 'uncertainty' output", min=1, max=64),
            CONSISTENCY,
            TILE,
            PRECISION,
        ),
        outputs=_outputs, uses_weights=True, uses_torch=True,
    ))
    register(Method(
        "projection", "unet",
        "U-Net regression of each group's planes from its projection and its neighbours' (residual over linear interpolation; trained model)",
        _run_unet, params=(WEIGHTS, CONSISTENCY, TILE, PRECISION), uses_weights=True, uses_torch=True,
        weights_name="projection-unet",
    ))


_register()
