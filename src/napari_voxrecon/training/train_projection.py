"""Training of the ``projection`` models (``unet`` and ``microdiffusion``) on the one training loop.

Windows of 3n consecutive planes (groups k-1, k, k+1) come from the same base data as the
``sparse`` models (phantoms + the training part of real volumes, ``build_window_sampler``);
their projections are simulated on the fly (the mean of each group's n planes) and the middle
group's planes are the target. Saved like every model: EMA weights, config.json, model card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from .loop import TrainConfig, train_logged
from .train_sparse import _save, build_window_sampler

#: Projection intervals seen in training (the benchmarks score n = 4, 6, 8 and 16).
PROJECTION_INTERVALS = (2, 3, 4, 5, 6, 8, 10, 12, 16)
#: Intervals of microdiffusion's prior bank (one INR fit per volume and interval).
BANK_INTERVALS = (4, 6, 8, 16)
#: Phantoms deep enough for three groups of the largest interval.
PROJECTION_PHANTOM_SHAPE = (52, 96, 96)
#: Weights ``method`` field of the projection task's U-Net (the sparse task has a ``unet`` too).
WEIGHTS_NAMES = {"unet": "projection-unet", "microdiffusion": "microdiffusion"}


def train_projection(method: str, data: Sequence[str], out: str | None, *, steps: int = 2000, batch_size: int = 8,
                     crop: int = 64, lr: float = 2e-4, holdout: float = 0.375, phantom_fraction: float = 0.5,
                     channels: Sequence[int] = (24, 48, 96), checkpoint_dir: str | None = None, device: str = "auto",
                     threads: int | None = None, seed: int = 0, p_uncond: float = 0.15, mix: float = 0.5,
                     overwrite: bool = False, log: Callable[[str], None] = print,
                     should_stop: Callable[[], bool] | None = None, max_seconds: float | None = None,
                     phantom_pool: int = 12, phantom_workers: int = 0,
                     intervals: Sequence[int] | None = None, bank_phantoms: int = 6, bank_iterations: int = 400,
                     phantom_shape: tuple[int, int, int] = PROJECTION_PHANTOM_SHAPE, init: str | None = None,
                     p_terminal: float | None = None, inr_prior: bool = True) -> Path | None:
    """Train ``unet`` or ``microdiffusion`` of the projection task; returns the weights folder (None without ``out``).

    ``init``: weights to start from (embedded name, folder or Hub id): weights of the same model
    continue training; for ``microdiffusion``, ``projection-unet`` weights warm-start it
    (``warm_start_from_regression``). ``p_terminal``: microdiffusion's share of windows at t = 1.
    ``inr_prior=False`` trains microdiffusion as the naive-diffusion ablation: the same network and
    recipe on the linear prior (no INR fits), recorded in its config so inference does the same.
    """
    from ..models.projection_group_net import ProjectionGroupNet
    from ..models.projection_models import (RESIDUAL_SCALE, MicroDiffusionTrainable, ProjectionRegressionTrainable,
                                            warm_start_from_regression)

    if method not in WEIGHTS_NAMES:
        raise ValueError(f"no projection trainer for {method!r}")
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    diffusion = method == "microdiffusion"
    if diffusion and intervals is None:
        intervals = BANK_INTERVALS
    intervals = tuple(intervals or PROJECTION_INTERVALS)
    # windows of 3n planes (the trainable asks the sampler for intervals 3n - 1); microdiffusion
    # draws its windows from the prior bank and needs only the sampler's real volumes
    if not inr_prior and not diffusion:
        raise ValueError("inr_prior=False is the microdiffusion ablation; the unet always uses the linear prior")
    banked = diffusion and inr_prior  # windows come from the INR prior bank, not from the sampler
    sampler = build_window_sampler(data, holdout, crop, phantom_fraction, intervals=intervals,
                                   phantom_shape=phantom_shape, phantom_pool=0 if banked else phantom_pool,
                                   seed=seed, phantom_workers=0 if banked else phantom_workers)
    net = ProjectionGroupNet(tuple(channels), diffusion=diffusion, mix=mix, residual_scale=RESIDUAL_SCALE)
    previous_steps, previous_seconds, initialised_from = 0, 0.0, None
    if init is not None:
        from ..errors import VoxreconError
        from ..weights import load_weights, read_config, resolve_weights

        kind = read_config(resolve_weights(init, None))["method"]
        if kind not in (WEIGHTS_NAMES[method], *(("projection-unet",) if diffusion else ())):
            raise VoxreconError(f"--init {init} holds {kind} weights: {method} starts from {WEIGHTS_NAMES[method]} weights"
                                + (" or projection-unet weights (warm start)" if diffusion else ""))
        state, config, folder = load_weights(init, kind)
        arch = dict(config["architecture"], channels=tuple(config["architecture"]["channels"]), diffusion=diffusion)
        net = ProjectionGroupNet(**{k: v for k, v in arch.items() if k != "residual_scale"}, residual_scale=RESIDUAL_SCALE)
        if kind == WEIGHTS_NAMES[method]:
            net.load_state_dict(state)
            previous_steps = int(config.get("training", {}).get("steps", 0))
            previous_seconds = float(config.get("training", {}).get("seconds", 0.0))
        else:
            warm_start_from_regression(net, state)
        initialised_from = f"{kind} weights {folder.name} ({config.get('training', {}).get('steps', '?')} steps)"
        log(f"initialised from {initialised_from}")
    if diffusion and not inr_prior:
        log("naive diffusion ablation: the linear prior replaces the INR prior")
        trainable = MicroDiffusionTrainable(net, sampler, batch_size=batch_size, p_uncond=p_uncond)
        if p_terminal is not None:
            trainable.p_terminal = p_terminal
    elif diffusion:
        from .prior_bank import build_prior_bank

        # The INR prior of every training volume, fitted once per interval before training.
        from .prior_bank import load_bank, save_bank

        cached = Path(checkpoint_dir) / "prior_bank.npz" if checkpoint_dir else None
        bank = load_bank(cached, crop) if cached is not None and cached.exists() else None
        if bank is None:
            from ..engine.device import resolve_device

            bank = build_prior_bank([(v.name, v.data) for v in sampler.volumes], intervals, crop=crop,
                                    phantoms=bank_phantoms, phantom_shape=phantom_shape, phantom_intervals=1,
                                    iterations=bank_iterations, seed=seed, log=log, device=resolve_device(device)[0])
            if cached is not None:  # a resumed run reuses the fits
                save_bank(bank, cached)
        else:
            log(f"prior bank loaded from {cached} ({len(bank.entries)} fits)")
        sampler.close()
        trainable = MicroDiffusionTrainable(net, sampler, batch_size=batch_size, p_uncond=p_uncond, bank=bank)
        if p_terminal is not None:
            trainable.p_terminal = p_terminal
    else:
        trainable = ProjectionRegressionTrainable(net, sampler, batch_size=batch_size)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, device=device, seed=seed,
                      checkpoint_dir=checkpoint_dir, threads=threads, max_seconds=max_seconds,
                      extra={"crop": crop, "holdout": holdout, "p_uncond": p_uncond if diffusion else 0.0,
                             "intervals": list(intervals), "real_volumes": [v.name for v in sampler.volumes],
                             "phantom_fraction": sampler.phantom_fraction, "task": "projection"})
    n_params = sum(p.numel() for p in net.parameters())
    log(f"training projection {method}: {n_params / 1e6:.2f} M parameters, {len(sampler.volumes)} real volume(s), "
        f"{steps} steps of {batch_size} x {crop}^2 windows of 3n planes, n in {list(sampler.intervals)}")

    state, ema = train_logged(trainable, cfg, log, should_stop, sampler)
    if out is None:
        return None
    ema.copy_to(net)
    info = {"steps": previous_steps + state.step, "seconds": previous_seconds + state.seconds,
            "initialised_from": initialised_from, "p_terminal": getattr(trainable, "p_terminal", 0.0), "windows_per_s": state.samples_per_s, "losses": state.losses,
            "real_volumes": [v.name for v in sampler.volumes], "phantom_fraction": sampler.phantom_fraction,
            "intervals": list(trainable.bank.intervals if banked else sampler.intervals)}
    return _save(WEIGHTS_NAMES[method], net, out, info, batch_size, crop, lr, p_uncond if diffusion else 0.0, holdout,
                 overwrite, task="projection", residual_scale=RESIDUAL_SCALE, windows="3n planes (groups k-1, k, k+1)",
                 extra_config={"inr_prior": False} if diffusion and not inr_prior else None,
                 card_note=("Naive-diffusion ablation: trained and run on the linear prior instead of the INR prior "
                            "(a benchmark row, not a model to use).\n\n") if diffusion and not inr_prior else "")
