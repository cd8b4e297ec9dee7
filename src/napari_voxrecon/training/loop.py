"""The project's one training loop: AdamW, warm-up, gradient clipping, EMA, checkpoint/resume.

A model contributes a ``Trainable``: its network, a batch sampler and a loss. The loop owns
everything else, so every model trains, checkpoints and resumes the same way. Checkpoints are
safetensors (model, EMA, optimizer moments) plus a JSON file with the step and the random
states: nothing is pickled, and a run killed at any point resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn


class Trainable(Protocol):
    """What a model gives the loop."""

    network: nn.Module

    def sample_batch(self, rng: np.random.Generator, step: int) -> Any: ...

    def loss(self, network: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor: ...


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    #: bf16 autocast: None = only where it is fast (CUDA, or a CPU with native bf16 units).
    bf16: bool | None = None
    device: str = "auto"
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 200
    log_every: int = 25
    threads: int | None = None
    #: Wall-clock budget: the run stops (with a checkpoint) when it is spent, and the learning
    #: rate decays against whichever of ``steps`` and ``max_seconds`` runs out first.
    max_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    samples_per_s: float = 0.0
    seconds: float = 0.0


def _lr_at(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.max_seconds:
        progress = max(progress, elapsed / cfg.max_seconds)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))  # cosine to 10 %


class EMA:
    """Exponential moving average of the weights (the shipped weights are the EMA)."""

    def __init__(self, network: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in network.state_dict().items()}

    @torch.no_grad()
    def update(self, network: nn.Module, step: int) -> None:
        # Warm-up of the decay (1+s)/(10+s): early EMA follows the fast-changing weights.
        d = min(self.decay, (1 + step) / (10 + step))
        shadows, values = [], []
        for k, v in network.state_dict().items():
            if v.dtype.is_floating_point:
                shadows.append(self.shadow[k])
                values.append(v.detach().float())
            else:
                self.shadow[k].copy_(v)
        # One fused update for all tensors: a per-tensor loop costs more than the step on a GPU.
        torch._foreach_lerp_(shadows, values, 1 - d)

    def copy_to(self, network: nn.Module) -> None:
        network.load_state_dict({k: v.to(network.state_dict()[k].dtype) for k, v in self.shadow.items()})


def _save_checkpoint(folder: Path, network: nn.Module, ema: EMA, opt: torch.optim.Optimizer, state: TrainState,
                     rng: np.random.Generator, gen: torch.Generator, cfg: TrainConfig) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in network.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    for k, v in ema.shadow.items():
        tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
    opt_state = opt.state_dict()
    for pid, s in opt_state["state"].items():
        for name, value in s.items():
            if torch.is_tensor(value):
                tensors[f"opt.{pid}.{name}"] = value.detach().cpu().reshape(-1) if value.dim() == 0 else value.detach().cpu().contiguous()
    tmp = folder / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"step": str(state.step)})
    meta = {
        "step": state.step,
        "losses": state.losses[-2000:],
        "seconds": state.seconds,
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": gen.get_state().tolist(),
        "config": asdict(cfg),
        "opt_scalar": {str(pid): {n: v for n, v in s.items() if not torch.is_tensor(v)} for pid, s in opt_state["state"].items()},
    }
    tmp_json = folder / "checkpoint.json.tmp"
    tmp_json.write_text(json.dumps(meta))
    # Tensors first, metadata last: the JSON names the step its tensors belong to.
    os.replace(tmp, folder / "checkpoint.safetensors")
    os.replace(tmp_json, folder / "checkpoint.json")


def _check_checkpoint_step(folder: Path, step: int) -> None:
    """Tensors and JSON are renamed one after the other: a kill in between leaves them apart."""
    from safetensors import safe_open

    with safe_open(str(folder / "checkpoint.safetensors"), "pt") as f:
        tensor_step = (f.metadata() or {}).get("step")
    if tensor_step is not None and int(tensor_step) != step:
        raise RuntimeError(
            f"{folder}: the checkpoint's tensors (step {tensor_step}) and metadata (step {step}) disagree "
            "(interrupted while saving); delete checkpoint.json to restart from scratch.")


def _load_checkpoint(folder: Path, network: nn.Module, ema: EMA, opt: torch.optim.Optimizer, state: TrainState,
                     rng: np.random.Generator, gen: torch.Generator) -> bool:
    from safetensors.torch import load_file

    if not (folder / "checkpoint.json").exists():
        return False
    meta = json.loads((folder / "checkpoint.json").read_text())
    _check_checkpoint_step(folder, int(meta["step"]))
    tensors = load_file(str(folder / "checkpoint.safetensors"))
    network.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    device = next(network.parameters()).device
    ema.shadow = {k[4:]: v.float().to(device) for k, v in tensors.items() if k.startswith("ema.")}
    opt_sd = opt.state_dict()
    new_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            new_state.setdefault(int(pid), {})[name] = value
    for pid, scalars in meta.get("opt_scalar", {}).items():
        new_state.setdefault(int(pid), {}).update(scalars)
    for pid, s in new_state.items():
        if "step" in s and torch.is_tensor(s["step"]):
            s["step"] = s["step"].reshape(())
    opt_sd["state"] = new_state
    opt.load_state_dict(opt_sd)
    state.step = int(meta["step"])
    state.losses = list(meta.get("losses", []))
    state.seconds = float(meta.get("seconds", 0.0))
    rng.bit_generator.state = meta["numpy_rng"]
    gen.set_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return True


def train(
    trainable: Trainable,
    cfg: TrainConfig,
    on_log: Callable[[TrainState, dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[TrainState, EMA]:
    """Train ``trainable.network`` in place; returns the final state and the EMA weights.

    With ``cfg.checkpoint_dir`` set, resumes from a checkpoint found there and writes one every
    ``checkpoint_every`` steps and at the end (also when ``should_stop`` ends the run early).
    """
    from ..engine.device import resolve_device, use_bf16

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device, notice = resolve_device(cfg.device)
    if notice:
        print(f"warning: {notice}")
    network = trainable.network.to(device)
    network.train()
    bf16 = cfg.bf16 if cfg.bf16 is not None else use_bf16(device)
    opt = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ema = EMA(network, cfg.ema_decay)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    state = TrainState()
    folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if folder is not None and _load_checkpoint(folder, network, ema, opt, state, rng, gen):
        print(f"resumed from {folder} at step {state.step}")
    t_start = time.perf_counter() - state.seconds
    window_t, window_n = time.perf_counter(), 0
    while state.step < cfg.steps:
        if should_stop is not None and should_stop():
            break
        elapsed = time.perf_counter() - t_start
        if cfg.max_seconds and elapsed >= cfg.max_seconds:
            break
        for g in opt.param_groups:
            g["lr"] = _lr_at(state.step, cfg, elapsed)
        batch = trainable.sample_batch(rng, state.step)
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = trainable.loss(network, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(network.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(network, state.step)
        state.step += 1
        state.losses.append(float(loss.detach()))
        window_n += cfg.batch_size
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            now = time.perf_counter()
            state.samples_per_s = window_n / (now - window_t)
            window_t, window_n = now, 0
            state.seconds = now - t_start
            if on_log is not None:
                on_log(state, {"loss": float(np.mean(state.losses[-cfg.log_every:])), "lr": _lr_at(state.step, cfg, state.seconds)})
        if folder is not None and (state.step % cfg.checkpoint_every == 0):
            state.seconds = time.perf_counter() - t_start
            _save_checkpoint(folder, network, ema, opt, state, rng, gen, cfg)
    state.seconds = time.perf_counter() - t_start
    if folder is not None:
        _save_checkpoint(folder, network, ema, opt, state, rng, gen, cfg)
    return state, ema


def read_checkpoint_ema(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The EMA weights and the metadata (step, losses, config) of a checkpoint folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "checkpoint.json").exists():
        raise FileNotFoundError(f"{folder}: no checkpoint here (checkpoint.json missing)")
    meta = json.loads((folder / "checkpoint.json").read_text())
    tensors = load_file(str(folder / "checkpoint.safetensors"))
    return {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, meta


def train_logged(trainable: Trainable, cfg: TrainConfig, log: Callable[[str], None],
                 should_stop: Callable[[], bool] | None = None, sampler: Any = None) -> tuple[TrainState, EMA]:
    """``train`` with the project's progress line every ``log_every`` steps; closes ``sampler``
    (its phantom worker processes) however the run ends."""

    def on_log(state: TrainState, info: dict[str, float]) -> None:
        log(f"step {state.step:6d}  loss {info['loss']:.4f}  lr {info['lr']:.2e}  {state.samples_per_s:.1f} windows/s  "
            f"{state.seconds / 60:.1f} min")

    try:
        return train(trainable, cfg, on_log=on_log, should_stop=should_stop)
    finally:
        if sampler is not None:
            sampler.close()
