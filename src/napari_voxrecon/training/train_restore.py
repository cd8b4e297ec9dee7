"""Training of the ``restore`` models (``care`` and ``dit``) on the one training loop.

Windows of ``depth`` consecutive planes come from the same base data as the other models
(phantoms + the training part of real volumes, ``build_window_sampler``); each is degraded on
the fly into its low-quality twin (``restore_pairs``: ``pretrain`` mixes factors, noise levels
and block masking; ``axial4`` and ``denoise`` are the two shipped fine-tuning tasks). Saved like
every model: EMA weights, config.json (with the degradation it was trained for), model card.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch

from .loop import TrainConfig, train_logged
from .restore_pairs import DEGRADATIONS
from .train_sparse import _save, build_window_sampler

RESTORE_METHODS = ("care", "dit")


def build_restore_network(method: str, channels: Sequence[int] = (16, 32, 64), dim: int = 128, blocks: int = 6,
                          heads: int = 4, patch: int = 4, prior_channels: Sequence[int] | None = None,
                          global_encoder: str | None = None) -> torch.nn.Module:
    from ..models.restore_dit import RestoreDiT
    from ..models.restore_models import CareNet

    if method == "care":
        return CareNet(tuple(channels))
    if method == "dit":
        return RestoreDiT(dim=dim, depth=blocks, heads=heads, patch=patch, prior_channels=prior_channels,
                          global_encoder=global_encoder)
    raise ValueError(f"no restore trainer for {method!r} (have {', '.join(RESTORE_METHODS)})")


def train_restore(method: str, data: Sequence[str], out: str | None, *, degradation: str = "axial4", steps: int = 2000,
                  batch_size: int = 4, crop: int = 64, depth: int = 16, lr: float = 2e-4, holdout: float = 0.375,
                  phantom_fraction: float = 0.5, channels: Sequence[int] = (16, 32, 64), dim: int = 128, blocks: int = 6,
                  heads: int = 4, patch: int = 4, checkpoint_dir: str | None = None, device: str = "auto",
                  threads: int | None = None, seed: int = 0, overwrite: bool = False, log: Callable[[str], None] = print,
                  should_stop: Callable[[], bool] | None = None, max_seconds: float | None = None, phantom_pool: int = 12,
                  phantom_workers: int = 0, init: str | None = None, p_terminal: float = 0.1,
                  phantom_shape: tuple[int, int, int] = (40, 96, 96), prior: str | None = None,
                  global_encoder: str | None = None) -> Path | None:
    """Train ``care`` or ``dit`` for ``degradation`` (a key of ``DEGRADATIONS``); returns the weights folder.

    ``init``: weights of the same method to start from (e.g. pre-trained weights for a fine-tuning run).
    ``prior`` (dit only): ``care`` weights that become the dit's frozen regression prior; the dit
    then learns to refine their estimate (``models.restore_dit``). ``global_encoder`` (dit only):
    a DINOv2 Hub id or folder whose features join the global condition (``models.dinov2_condition``).
    """
    from ..errors import VoxreconError
    from ..models.restore_models import RESTORE_RESIDUAL_SCALE, RestoreDiffusionTrainable, RestoreRegressionTrainable

    if degradation not in DEGRADATIONS:
        raise VoxreconError(f"unknown degradation {degradation!r}: choose {', '.join(DEGRADATIONS)}")
    deg = DEGRADATIONS[degradation]
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    from ..weights import load_weights

    if method != "dit" and (prior is not None or global_encoder is not None):
        raise VoxreconError("--prior and --global-encoder apply to dit only.")
    if prior is not None and init is not None:
        raise VoxreconError("give --prior or --init, not both: weights given with --init already hold their prior.")
    previous_steps, previous_seconds, initialised_from, prior_info = 0, 0.0, None, None
    if init is not None:  # the architecture (prior and global encoder included) comes with the weights
        state, config, folder = load_weights(init, method)
        arch = dict(config["architecture"])
        net = build_restore_network(method, arch.get("channels", channels), arch.get("dim", dim), arch.get("depth", blocks),
                                    arch.get("heads", heads), arch.get("patch", patch), arch.get("prior_channels"),
                                    arch.get("global_encoder"))
        net.load_state_dict(state)
        previous_steps = int(config.get("training", {}).get("steps", 0))
        previous_seconds = float(config.get("training", {}).get("seconds", 0.0))
        initialised_from = f"{method} weights {folder.name} ({config.get('restore_degradation', '?')}, {previous_steps} steps)"
        log(f"initialised from {initialised_from}")
    elif prior is not None:
        prior_state, prior_config, prior_folder = load_weights(prior, "care")
        prior_deg = prior_config.get("restore_degradation", "?")
        if prior_deg != degradation:
            log(f"warning: the prior {prior_folder.name} was trained for {prior_deg}, this run trains for {degradation}")
        prior_info = f"care weights {prior_folder.name} ({prior_deg}, {prior_config.get('training', {}).get('steps', '?')} steps)"
        log(f"regression prior: {prior_info}")
        net = build_restore_network(method, channels, dim, blocks, heads, patch, prior_config["architecture"]["channels"],
                                    global_encoder)
        net.prior.load_state_dict(prior_state)
    else:
        net = build_restore_network(method, channels, dim, blocks, heads, patch, None, global_encoder)
    sampler = build_window_sampler(data, holdout, crop, phantom_fraction, intervals=(depth - 1,), phantom_shape=phantom_shape,
                                   phantom_pool=phantom_pool, seed=seed, phantom_workers=phantom_workers)
    diffusion = method == "dit"
    if diffusion:
        trainable = RestoreDiffusionTrainable(net, sampler, deg, batch_size=batch_size, depth=depth, p_terminal=p_terminal)
    else:
        trainable = RestoreRegressionTrainable(net, sampler, deg, batch_size=batch_size, depth=depth)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, device=device, seed=seed, checkpoint_dir=checkpoint_dir,
                      threads=threads, max_seconds=max_seconds,
                      extra={"crop": crop, "depth": depth, "holdout": holdout, "degradation": degradation, "task": "restore",
                             "real_volumes": [v.name for v in sampler.volumes], "phantom_fraction": sampler.phantom_fraction})
    n_params = sum(p.numel() for p in net.parameters())
    log(f"training restore {method} ({degradation}): {n_params / 1e6:.2f} M parameters, {len(sampler.volumes)} real volume(s), "
        f"{steps} steps of {batch_size} x {depth} x {crop}^2 windows")

    state, ema = train_logged(trainable, cfg, log, should_stop, sampler)
    if out is None:
        return None
    ema.copy_to(net)
    info = {"steps": previous_steps + state.step, "seconds": previous_seconds + state.seconds,
            "windows_per_s": state.samples_per_s, "losses": state.losses, "real_volumes": [v.name for v in sampler.volumes],
            "phantom_fraction": sampler.phantom_fraction, "intervals": [], "initialised_from": initialised_from,
            "p_terminal": p_terminal if diffusion else 0.0}
    if prior_info:
        info["initialised_from"] = f"random, with the frozen regression prior {prior_info}"
    spec = asdict(deg)
    note = (f"Trained for `{degradation}`: axial factors {list(deg.axial_factors)}, lateral factors "
            f"{sorted(set(deg.lateral_factors))}, noise level {deg.noise[0]}-{deg.noise[1]}"
            + (f"; refines the estimate of its frozen regression prior ({prior_info})" if prior_info else "")
            + (f", block masking of {deg.mask_ratio[0]:.0%}-{deg.mask_ratio[1]:.0%} of the input with probability {deg.mask_prob}"
               if deg.mask_prob else "") + ".\n\n")
    return _save(method, net, out, info, batch_size, crop, lr, 0.0, holdout, overwrite, task="restore",
                 residual_scale=RESTORE_RESIDUAL_SCALE, windows=f"{depth} planes",
                 extra_config={"restore_degradation": degradation, "degradation": spec, "slab_depth": depth},
                 card_note=note)
