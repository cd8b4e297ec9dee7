"""Learned methods of the ``sparse`` task: ``sparse3diff`` (diffusion) and ``unet`` (regression).

Both run the same subvolume-by-subvolume generator (``models.sparse3diff.reconstruct_sparse``):
acquired planes are yielded bit-exact at once, each gap's n-1 planes as soon as they are done.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from ..engine.events import Notice, SliceResult
from ..engine.registry import Method, Param, register

WEIGHTS = Param("weights", str, "default", "weights: 'default' (embedded), an embedded name, a local folder, or a Hub repo id org/name[@revision]")
PRECISION = Param("precision", str, "auto", "network arithmetic: auto (bf16 on GPUs and on CPUs with native bf16, else fp32), fp32, bf16", choices=("auto", "fp32", "bf16"))
SAMPLER = Param("sampler", str, "dpmpp_2m", "sampler: dpmpp_2m (fast), ddim, or ddpm (ancestral reference)", choices=("dpmpp_2m", "ddim", "ddpm"))
TILE = Param("tile", int, 256, "lateral tile size in pixels (tiles overlap by 32 and are blended)", min=64, max=4096)


def build_model(network_cls: Any, model_cls: Any, state: dict, config: dict, device: str, **model_kw: Any) -> Any:
    """A trained model from a weights folder's state and config (every learned method's builder)."""
    from ..diffusion.schedule import VPSchedule

    arch = dict(config["architecture"])
    if "channels" in arch:
        arch["channels"] = tuple(arch["channels"])
    net = network_cls(**arch)
    net.load_state_dict(state)
    net.eval().to(device)
    sched = config.get("schedule", {"kind": "cosine", "zero_terminal_snr": True})
    return model_cls(net, float(config["residual_scale"]), VPSchedule(sched["kind"], zero_terminal_snr=sched["zero_terminal_snr"]),
                     device, **model_kw)


def _build(state: dict, config: dict, device: str) -> Any:
    from ..models.sparse3diff import SparseModel
    from ..models.sparse_window_net import SparseWindowNet

    return build_model(SparseWindowNet, SparseModel, state, config, device, slice_guidance=bool(config.get("slice_guidance", True)))


def run_learned(ctx, weights_method: str, planes: Callable[[Any, str, frozenset[int]], Iterator[tuple[int, Any, Any]]],
                after_plane: Callable[[int], Iterator[Any]] | None = None, weights: str | None = None) -> Iterator[Any]:
    """The run loop of every learned method: load the model, stream ``planes(model, device,
    done) -> (z, plane, std or None)`` as SliceResults (std as the "uncertainty" output, then
    whatever ``after_plane(z)`` yields), and on a GPU out-of-memory error continue on the CPU
    with the planes not done yet, announced by a Notice (the one fallback allowed). ``weights``
    defaults to the job's weights parameter."""
    import torch

    from ..engine.device import is_out_of_memory
    from ..models.loading import load_model

    device = ctx.device
    weights = ctx.params["weights"] if weights is None else weights
    model = load_model(weights_method, weights, device)
    torch.manual_seed(ctx.seed)
    done: set[int] = set(ctx.skip)
    while True:
        try:
            for z, plane, sd in planes(model, device, frozenset(done)):
                done.add(z)
                yield SliceResult(z, plane)
                if after_plane is not None:
                    yield from after_plane(z)
                if sd is not None:
                    yield SliceResult(z, sd, "uncertainty")
            return
        except RuntimeError as err:
            if device == "cpu" or not is_out_of_memory(err):
                raise
            yield Notice(f"the GPU ran out of memory ({device}); continuing on the CPU (slower). "
                         "A smaller --tile keeps the next run on the GPU.", "warning")
            device = "cpu"
            torch.cuda.empty_cache()
            model = load_model(weights_method, weights, "cpu")


def _run(ctx, fill_kw: dict[str, Any]) -> Iterator[Any]:
    from ..engine.device import use_bf16
    from ..models.sparse3diff import reconstruct_sparse

    def planes(model: Any, device: str, done: frozenset[int]) -> Iterator[Any]:
        return reconstruct_sparse(model, ctx.volume, ctx.params["interval"], skip=done, seed=ctx.seed,
                                  check_cancel=ctx.check_cancel, tile=ctx.params["tile"],
                                  bf16=use_bf16(device, ctx.params["precision"]), **fill_kw)

    yield from run_learned(ctx, ctx.method.name, planes)


def _run_diffusion(ctx) -> Iterator[Any]:
    p = ctx.params
    yield from _run(ctx, dict(steps=p["steps"], sampler=p["sampler"], guidance=p["guidance"], samples=p["samples"]))


def _run_unet(ctx) -> Iterator[Any]:
    yield from _run(ctx, {})


def outputs_with_uncertainty(params: dict[str, Any]) -> tuple[str, ...]:
    """Outputs of a method with K-sample means: the std of K > 1 samples is the "uncertainty" output."""
    return ("result", "uncertainty") if params.get("samples", 1) > 1 else ("result",)


def _register() -> None:
    from ..models.loading import BUILDERS

    BUILDERS["sparse3diff"] = _build
    BUILDERS["unet"] = _build
    register(Method(
        "sparse", "sparse3diff",
        "Sparse3Diff: slice-guided, z-position-aware diffusion (trained model)",
        _run_diffusion,
        params=(
            WEIGHTS,
            Param("steps", int, 2, "sampling steps (2 scores best on held-out data: docs/benchmarks.md; more steps give sharper, noisier samples)", min=1, max=1000),
            SAMPLER,
            Param("guidance", float, 0.0, "classifier-free guidance weight w (eq. 5); 0 = conditional model only", min=0.0, max=10.0),
            Param("samples", int, 2, "K independent samples: their mean is the result (2 by default: +0.03-0.09 dB over one sample at twice the time, docs/benchmarks.md), their std the 'uncertainty' output", min=1, max=64),
            TILE,
            PRECISION,
        ),
        outputs=outputs_with_uncertainty, uses_weights=True, uses_torch=True,
        extra={"z_halo": 0},  # each gap is filled from its own two planes
    ))
    register(Method(
        "sparse", "unet",
        "U-Net regression of the missing planes (residual over linear interpolation; trained model)",
        _run_unet, params=(WEIGHTS, TILE, PRECISION), uses_weights=True, uses_torch=True,
        extra={"z_halo": 0},
    ))


_register()
