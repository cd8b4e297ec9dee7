"""Learned methods of the ``restore`` task: ``care`` (3D U-Net) and ``dit`` (MicroDiffuse3D-style
diffusion transformer). Both run ``models.restore_models.reconstruct_restore``: axial slabs and
lateral tiles of the trilinear upsampling, restored and blended, planes streamed in z order.

Default weights depend on the job: at axial factor 1 the embedded ``<method>-denoise`` weights,
otherwise ``<method>-axial4`` (trained for x4 axial super-resolution with mild noise).
"""

from __future__ import annotations

from typing import Any, Iterator

from ..engine.registry import Method, Param, register
from .sparse_models import PRECISION, SAMPLER, build_model, outputs_with_uncertainty, run_learned

WEIGHTS = Param("weights", str, "default",
                "weights: 'default' (embedded: <method>-denoise at axial factor 1, <method>-axial4 otherwise), an embedded name, "
                "a local folder, or a Hub repo id org/name[@revision]")
TILE = Param("tile", int, 128, "lateral tile size in pixels (tiles overlap by 16 and are blended; 16-plane axial slabs overlap by 4)",
             min=32, max=4096)


def default_weights_name(method: str, axial_factor: int) -> str:
    """The embedded weights a restore job uses when it is given 'default'."""
    return f"{method}-{'denoise' if axial_factor == 1 else 'axial4'}"


def _build(state: dict, config: dict, device: str) -> Any:
    from ..models.restore_dit import RestoreDiT
    from ..models.restore_models import CareNet, RestoreModel

    net_cls = RestoreDiT if config["method"] == "dit" else CareNet
    return build_model(net_cls, RestoreModel, state, config, device)


def _run(ctx, fill_kw: dict[str, Any]) -> Iterator[Any]:
    from ..engine.device import use_bf16
    from ..models.restore_models import reconstruct_restore

    from ..errors import VoxreconError
    from ..weights import embedded_names

    p = ctx.params
    weights = ctx.method.weights_spec(p)
    if p["weights"] in ("default", ""):
        if weights not in embedded_names():
            kind = weights.split("-", 1)[1]
            raise VoxreconError(
                f"this installation has no embedded {ctx.method.name} weights for this job ({weights}); train them with "
                f"`voxrecon train {ctx.method.name} --degradation {kind} --data VOLUMES -o FOLDER` and pass --weights FOLDER "
                "(or a Hub repo id).")

    def planes(model: Any, device: str, done: frozenset[int]) -> Iterator[Any]:
        return reconstruct_restore(model, ctx.volume, p["axial_factor"], p["lateral_factor"], skip=done, seed=ctx.seed,
                                   check_cancel=ctx.check_cancel, tile=p["tile"],
                                   bf16=use_bf16(device, p["precision"]), **fill_kw)

    yield from run_learned(ctx, ctx.method.name, planes, weights=weights)


def _run_dit(ctx) -> Iterator[Any]:
    p = ctx.params
    yield from _run(ctx, dict(steps=p["steps"], sampler=p["sampler"], samples=p["samples"]))


def _run_care(ctx) -> Iterator[Any]:
    yield from _run(ctx, {})


def _register() -> None:
    from ..models.loading import BUILDERS

    BUILDERS["care"] = _build
    BUILDERS["dit"] = _build
    register(Method(
        "restore", "dit",
        "MicroDiffuse3D-style diffusion transformer with decomposed lateral/axial attention (trained model)",
        _run_dit,
        params=(
            WEIGHTS,
            # One step from pure noise is the model's posterior-mean estimate: the best PSNR/SSIM on
            # held-out data and the fastest (docs/benchmarks.md); more steps give sharper samples.
            Param("steps", int, 1, "sampling steps (1 scores best on held-out data; 2-4 give sharper, noisier samples)", min=1, max=1000),
            SAMPLER,
            Param("samples", int, 1, "K independent samples: their mean is the result, their std the 'uncertainty' output "
                  "(use with steps >= 2: one-step samples hardly differ)", min=1, max=64),
            TILE,
            PRECISION,
        ),
        outputs=outputs_with_uncertainty, uses_weights=True, uses_torch=True,
        # a chunk's edge planes see as much depth as inside a slab
        extra={"z_halo": 4, "default_weights": lambda p: default_weights_name("dit", p["axial_factor"])},
    ))
    register(Method(
        "restore", "care",
        "CARE-like 3D U-Net regression (residual over trilinear upsampling; trained model)",
        _run_care, params=(WEIGHTS, TILE, PRECISION), uses_weights=True, uses_torch=True,
        extra={"z_halo": 4, "default_weights": lambda p: default_weights_name("care", p["axial_factor"])},
    ))


_register()
