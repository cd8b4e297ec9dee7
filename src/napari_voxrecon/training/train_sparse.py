"""Pre-training of the ``sparse`` models (``sparse3diff`` and ``unet``) on the one training loop.

Base data = procedural phantoms of every structure type + real volumes given as files, each
with its last ``holdout`` fraction of x kept out of training (``windows.split_holdout``), so the
model can be scored on real data it never saw. The EMA weights are saved with
``weights.save_weights`` (fp16 safetensors + config.json + model card).
"""

from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..io import read_volume
from .loop import TrainConfig, train_logged
from .windows import TrainingVolume, WindowSampler, split_holdout, to_unit_range, volume_axes


def build_window_sampler(data: Sequence[str], holdout: float = 0.375, crop: int = 64,
                         phantom_fraction: float = 0.5, intervals: Sequence[int] = (2, 3, 4, 5, 6, 7, 8),
                         phantom_shape: tuple[int, int, int] = (40, 96, 96), phantom_pool: int = 12,
                         seed: int = 0, phantom_workers: int = 0) -> WindowSampler:
    volumes = []
    for path in data:
        vol = read_volume(path)
        train_part = split_holdout(vol.data, holdout)[0] if holdout > 0 else vol.data
        volumes.append(TrainingVolume(to_unit_range(np.asarray(train_part, np.float32)), volume_axes(vol.voxel_size), Path(path).name))
    sampler = WindowSampler(volumes, tuple(intervals), crop, phantom_fraction if volumes else 1.0,
                            phantom_shape, phantom_pool if phantom_fraction > 0 or not volumes else 0,
                            phantom_workers=phantom_workers)
    if sampler.phantom_pool:
        sampler.fill_phantoms(np.random.default_rng([seed, 99]))
    return sampler


def train_sparse(method: str, data: Sequence[str], out: str | None, *, steps: int = 2000, batch_size: int = 8,
                 crop: int = 64, lr: float = 2e-4, holdout: float = 0.375, phantom_fraction: float = 0.5,
                 channels: Sequence[int] = (24, 48, 96), checkpoint_dir: str | None = None, device: str = "auto",
                 threads: int | None = None, seed: int = 0, p_uncond: float = 0.15, overwrite: bool = False,
                 log: Callable[[str], None] = print, should_stop: Callable[[], bool] | None = None,
                 init: str | None = None, max_seconds: float | None = None, phantom_pool: int = 12,
                 phantom_workers: int = 0, p_terminal: float = 0.0, slice_guidance: bool = True) -> Path | None:
    from ..models.sparse3diff import SparseDiffusionTrainable, SparseRegressionTrainable
    from ..models.sparse_window_net import SparseWindowNet

    if method not in ("sparse3diff", "unet"):
        raise ValueError(f"no trainer for {method!r}")
    if not slice_guidance and method != "sparse3diff":
        raise ValueError("slice_guidance=False (the unguided DDPM ablation) applies to sparse3diff only")
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    sampler = build_window_sampler(data, holdout, crop, phantom_fraction, phantom_pool=phantom_pool, seed=seed,
                                   phantom_workers=phantom_workers)
    net = SparseWindowNet(tuple(channels), diffusion=(method == "sparse3diff"))
    previous_steps, previous_seconds = 0, 0.0
    if init is not None:
        # Continue from existing weights (e.g. the shipped ones); the architecture comes from them.
        from ..weights import load_weights

        state, config, folder = load_weights(init, method)
        arch = dict(config["architecture"])
        arch["channels"] = tuple(arch["channels"])
        net = SparseWindowNet(**arch)
        net.load_state_dict(state)
        previous_steps = int(config.get("training", {}).get("steps", 0))
        previous_seconds = float(config.get("training", {}).get("seconds", 0.0))
        log(f"initialised from {folder} ({previous_steps} steps)")
    cls = SparseDiffusionTrainable if method == "sparse3diff" else SparseRegressionTrainable
    trainable = cls(net, sampler, batch_size=batch_size, p_uncond=p_uncond, p_terminal=p_terminal, slice_guidance=slice_guidance)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, device=device, seed=seed,
                      checkpoint_dir=checkpoint_dir, threads=threads, max_seconds=max_seconds,
                      extra={"crop": crop, "holdout": holdout, "p_uncond": p_uncond, "p_terminal": p_terminal, "slice_guidance": slice_guidance, "intervals": list(sampler.intervals),
                             "real_volumes": [v.name for v in sampler.volumes], "phantom_fraction": sampler.phantom_fraction})
    n_params = sum(p.numel() for p in net.parameters())
    log(f"training {method}: {n_params / 1e6:.2f} M parameters, {len(sampler.volumes)} real volume(s), "
        f"phantom fraction {sampler.phantom_fraction if sampler.volumes else 1.0}, {steps} steps of {batch_size} x {crop}^2 windows")

    state, ema = train_logged(trainable, cfg, log, should_stop, sampler)
    if out is None:
        return None
    ema.copy_to(net)
    info = {"steps": previous_steps + state.step, "seconds": previous_seconds + state.seconds, "windows_per_s": state.samples_per_s,
            "losses": state.losses, "real_volumes": [v.name for v in sampler.volumes],
            "phantom_fraction": sampler.phantom_fraction, "intervals": list(sampler.intervals), "p_terminal": p_terminal,
            "slice_guidance": slice_guidance}
    return _save(method, net, out, info, batch_size, crop, lr, p_uncond, holdout, overwrite)


def _machine(device: torch.device) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    return f"{where}, torch {torch.__version__}"


def _save(method: str, net, out: str, info: dict, batch_size: int, crop: int, lr: float, p_uncond: float,
          holdout: float, overwrite: bool, task: str = "sparse", residual_scale: float | None = None,
          windows: str = "n+1 planes", extra_config: dict | None = None, card_note: str = "") -> Path:
    """Save EMA weights with config.json and a model card (every trained model of the package)."""
    from ..models.sparse3diff import RESIDUAL_SCALE
    from ..weights import save_weights

    config = {
        "method": method,
        "task": task,
        "architecture": net.config,
        "residual_scale": RESIDUAL_SCALE if residual_scale is None else residual_scale,
        "schedule": {"kind": "cosine", "zero_terminal_snr": True},
        "training": {
            "steps": info["steps"], "batch_size": batch_size, "crop": crop, "lr": lr, "p_uncond": p_uncond,
            "p_terminal": info.get("p_terminal", 0.0),
            "real_volumes": info["real_volumes"], "holdout_fraction_of_x": holdout,
            "phantom_fraction": info["phantom_fraction"], "intervals": info["intervals"],
            "seconds": round(info["seconds"], 1), "windows_per_s": round(info["windows_per_s"], 2),
            "final_loss": float(np.mean(info["losses"][-100:])) if info["losses"] else None,
            "date": datetime.date.today().isoformat(), "machine": _machine(next(net.parameters()).device),
        },
    }
    if task == "sparse":
        config["slice_guidance"] = info.get("slice_guidance", True)
    if info.get("initialised_from"):
        config["training"]["initialised_from"] = info["initialised_from"]
    config.update(extra_config or {})
    ablation = ("" if info.get("slice_guidance", True) else
                "**Unguided DDPM ablation** (no slice guidance: whole windows diffused, acquired planes enter "
                "only by replacement at sampling). A benchmark baseline, not a model to use.\n\n")
    card = (f"# {method} weights (task `{task}`)\n\n{ablation}{card_note}EMA weights after {info['steps']} steps of "
            f"{batch_size} windows ({crop}x{crop} crops) of {windows}"
            + (f", n in {info['intervals']}" if info["intervals"] else "") + ".\n\n"
            f"Training data: procedural phantoms (tubes, nuclei, membranes, puncta, mixed) and "
            f"{', '.join(info['real_volumes']) or 'no real volumes'} "
            f"(last {holdout:.0%} of x held out).\n\n"
            + (f"Initialised from: {info['initialised_from']}.\n\n" if info.get("initialised_from") else "")
            + "Scores: see docs/benchmarks.md.\n")
    return save_weights(out, net.state_dict(), config, card, overwrite=overwrite)


def export_checkpoint(method: str, checkpoint_dir: str, out: str, *, overwrite: bool = False,
                      defaults: dict | None = None) -> Path:
    """Save the EMA weights of a (possibly still running) training checkpoint as a weights folder.

    ``defaults`` fills training facts a checkpoint of an older run did not record (crop, ...).
    """
    from ..models.sparse_window_net import SparseWindowNet
    from .loop import read_checkpoint_ema

    ema, meta = read_checkpoint_ema(checkpoint_dir)
    cfg = meta["config"]
    channels = tuple(int(ema[k].shape[0]) for k in sorted(k for k in ema if k.startswith("backbone.down_blocks.") and k.endswith("conv1.weight")))
    net = SparseWindowNet(channels, diffusion=(method == "sparse3diff"))
    net.load_state_dict(ema)
    extra = {"crop": 64, "holdout": 0.375, "p_uncond": 0.15, "intervals": [2, 3, 4, 5, 6, 7, 8],
             "real_volumes": [], "phantom_fraction": 0.5, **(defaults or {}), **cfg.get("extra", {})}
    seconds = float(meta.get("seconds", 0.0))
    info = {"steps": meta["step"], "seconds": seconds,
            "windows_per_s": meta["step"] * cfg["batch_size"] / seconds if seconds else 0.0,
            "losses": meta.get("losses", []), "real_volumes": extra.get("real_volumes", []),
            "phantom_fraction": extra.get("phantom_fraction"), "intervals": extra.get("intervals", []),
            "p_terminal": extra.get("p_terminal", 0.0), "slice_guidance": extra.get("slice_guidance", True)}
    return _save(method, net, out, info, cfg["batch_size"], extra.get("crop", 0), cfg["lr"], extra.get("p_uncond", 0.15),
                 extra.get("holdout", 0.0), overwrite)
