"""Learned methods of the ``restore`` task: ``care`` (3D U-Net regression) and ``dit`` (diffusion).

Both see the low-quality volume upsampled to the output grid by trilinear interpolation
(``Upsampler``) and predict the residual of the clean volume over it, in units of
``residual_scale``: ``care`` regresses it (MSE), ``dit`` samples it by diffusion (v-prediction on
a zero-terminal-SNR cosine schedule, few-step sampler, K-sample mean and standard deviation).
Inference runs over axial slabs of ``depth`` output planes and lateral tiles, both overlapping
and linearly blended, so memory stays bounded for any volume; planes stream out as soon as no
later slab overlaps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..diffusion.samplers import make_v_denoiser, sample
from ..diffusion.schedule import VPSchedule, q_sample, v_target
from ..nn.unet3d import UNet3D, pad_lateral

#: The residual of the clean volume over the upsampled low-quality one has a std of about
#: 0.1-0.2 in [-1, 1] units (x4 axial with mild noise; denoising); scaled to near unit variance.
RESTORE_RESIDUAL_SCALE = 5.0


class CareNet(nn.Module):
    """The ``care`` network: a 3D U-Net on (upsampled input, mask) -> scaled residual.

    Same call signature as ``RestoreDiT`` (state and t are ignored) so both share training and
    inference code."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(channels=list(channels))
        self.diffusion = False
        self.unet = UNet3D(2, 1, tuple(channels))

    @property
    def multiple(self) -> int:
        return self.unet.multiple

    def forward(self, state: torch.Tensor | None, lq: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.stack([lq, mask], dim=1))[:, 0]


def lateral_multiple(network: nn.Module) -> int:
    return int(network.multiple)


@dataclass
class RestoreRegressionTrainable:
    """``care``: MSE on the scaled residual over the upsampled low-quality window."""

    network: nn.Module
    windows: Any  # training.windows.WindowSampler
    degradation: Any  # training.restore_pairs.Degradation
    batch_size: int = 4
    depth: int = 16
    residual_scale: float = RESTORE_RESIDUAL_SCALE
    refresh_every: int = 10

    def sample_batch(self, rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
        from ..training.restore_pairs import pair_batch

        if self.refresh_every and step % self.refresh_every == 0:
            self.windows.refresh(rng)
        wins = np.stack([self.windows.window(rng, self.depth - 1) for _ in range(self.batch_size)])
        lq, mask, target = pair_batch(wins, self.degradation, rng)
        return {"lq": torch.from_numpy(lq), "mask": torch.from_numpy(mask), "target": torch.from_numpy(target)}

    def residual(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["target"] - batch["lq"]) * self.residual_scale

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        device = next(network.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        b = batch["lq"].shape[0]
        pred = network(None, batch["lq"], batch["mask"], torch.zeros(b, device=device))
        return ((pred - self.residual(batch)) ** 2).mean()


@dataclass
class RestoreDiffusionTrainable(RestoreRegressionTrainable):
    """``dit``: v-loss on the scaled residual; ``p_terminal`` of the windows at t = 1, where
    the few-step samplers start (one step from there is the posterior-mean estimate)."""

    schedule: VPSchedule = field(default_factory=lambda: VPSchedule("cosine", zero_terminal_snr=True))
    p_terminal: float = 0.1

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        device = next(network.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        x0 = self.residual(batch)
        prior = network.prior_residual(batch["lq"], batch["mask"])  # None without a regression prior
        if prior is not None:
            x0 = x0 - prior  # diffuse what the regression prior gets wrong
        b = x0.shape[0]
        t = torch.rand(b, generator=generator)
        if self.p_terminal:
            t = torch.where(torch.rand(b, generator=generator) < self.p_terminal, torch.ones_like(t), t)
        eps = torch.randn(x0.shape, generator=generator).to(device)
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = alpha.view(b, 1, 1, 1).to(device), sigma.view(b, 1, 1, 1).to(device)
        kw = {} if prior is None else {"prior": prior}
        v = network(q_sample(x0, eps, alpha, sigma), batch["lq"], batch["mask"], t.to(device), **kw)
        return ((v - v_target(x0, eps, alpha, sigma)) ** 2).mean()


@dataclass
class RestoreModel:
    """A trained ``care`` or ``dit`` network with what inference needs."""

    network: nn.Module
    residual_scale: float = RESTORE_RESIDUAL_SCALE
    schedule: VPSchedule = field(default_factory=lambda: VPSchedule("cosine", zero_terminal_snr=True))
    device: str = "cpu"

    @property
    def is_diffusion(self) -> bool:
        return bool(getattr(self.network, "diffusion", False))

    @torch.no_grad()
    def fill(self, lq: torch.Tensor, *, steps: int = 2, sampler: str = "dpmpp_2m", samples: int = 1,
             generator: torch.Generator | None = None, should_stop: Callable[[], bool] | None = None,
             bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Restore one block (D, h, w) of the upsampled input ([-1, 1] units): (mean, std or None)."""
        net = self.network
        dev = lq.device
        x, (h, w) = pad_lateral(lq[None, None], lateral_multiple(net))
        x = x[:, 0]
        mask = torch.ones_like(x)
        if not self.is_diffusion:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                out = net(None, x, mask, torch.zeros(1, device=dev)).float()
            return lq + out[0, :, :h, :w] / self.residual_scale, None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            prior = net.prior_residual(x, mask)  # once per tile, not per step; None without a prior
        prior = None if prior is None else prior.float()
        x_T = torch.randn((samples, *x.shape[1:]), generator=generator, device="cpu").to(dev)
        chunk = 1 if dev.type == "cpu" else samples  # sequential K on CPUs: bounded memory
        outs = []
        for i in range(0, samples, chunk):
            k = min(chunk, samples - i)
            xk, mk = x.expand(k, -1, -1, -1), mask.expand(k, -1, -1, -1)

            kw = {} if prior is None else {"prior": prior.expand(k, -1, -1, -1)}

            def v_model(state: torch.Tensor, t: torch.Tensor, xk=xk, mk=mk, k=k, kw=kw) -> torch.Tensor:
                tb = t.reshape(-1)[:1].expand(k).to(dev, torch.float32)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    return net(state, xk, mk, tb, **kw).float()

            outs.append(sample(sampler, make_v_denoiser(v_model, self.schedule), self.schedule, x_T[i:i + k],
                               n_steps=steps, generator=generator, should_stop=should_stop))
        res = torch.cat(outs) if prior is None else torch.cat(outs) + prior  # refined over the prior's estimate
        planes = lq[None] + res[:, :, :h, :w] / self.residual_scale
        return planes.mean(0), (planes.std(0) if samples > 1 else None)

    def fill_tiled(self, lq: np.ndarray, tile: int = 128, overlap: int = 16, seed: int = 0,
                   **kw: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``fill`` over lateral tiles with linear blending; each tile's noise seeded by (seed, position)."""
        from .tiling import fill_by_tiles

        def fill(parts: list[np.ndarray], tile_seed: int) -> tuple[Any, Any]:
            return self.fill(torch.from_numpy(parts[0]).to(self.device), generator=torch.Generator().manual_seed(tile_seed), **kw)

        return fill_by_tiles(fill, [lq], lq.shape[0], tile, overlap, seed)


def reconstruct_restore(model: RestoreModel, volume: np.ndarray, axial_factor: int, lateral_factor: int = 1, *,
                        depth: int = 16, z_overlap: int = 4, skip: frozenset[int] = frozenset(), seed: int = 0,
                        check_cancel: Callable[[], None] | None = None,
                        **fill_kw: Any) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Yield (z, plane, std or None) for every output plane in z order, in input units.

    The output is processed in axial slabs of ``depth`` planes overlapping by ``z_overlap``
    (seeded by (seed, first plane)); a plane is yielded once every slab covering it is done.
    """
    from ..methods.restore_baselines import Upsampler
    from ..normalize import denormalize, normalize, percentile_range
    from .tiling import blend_ramp, tile_starts

    lo, hi = percentile_range(volume)
    up = Upsampler(2 * normalize(volume, lo, hi) - 1, axial_factor, lateral_factor)
    zo = up.shape[0]
    starts = tile_starts(zo, depth, z_overlap)
    pending: dict[int, list[Any]] = {}  # z -> [weighted sum, weighted sd sum or None, weight]
    for i, z0 in enumerate(starts):
        dd = min(depth, zo)
        planes = range(z0, z0 + dd)
        if all(z in skip for z in planes):
            continue
        if check_cancel is not None:
            check_cancel()
        slab_seed = int(np.random.SeedSequence([seed, z0]).generate_state(1)[0])
        mean, sd = model.fill_tiled(up.planes(z0, z0 + dd), seed=slab_seed, **fill_kw)
        wz = blend_ramp(dd, min(z_overlap, dd), i == 0, i == len(starts) - 1)
        for j, z in enumerate(planes):
            acc = pending.setdefault(z, [0.0, None if sd is None else 0.0, 0.0])
            acc[0] = acc[0] + wz[j] * mean[j]
            if sd is not None:
                acc[1] = acc[1] + wz[j] * sd[j]
            acc[2] += wz[j]
        final_below = starts[i + 1] if i + 1 < len(starts) else zo
        for z in sorted(k for k in pending if k < final_below):
            total, sd_total, weight = pending.pop(z)
            if z in skip:
                continue
            plane = denormalize((total / weight + 1) / 2, lo, hi)
            yield z, plane, (sd_total / weight * (hi - lo) / 2 if sd_total is not None else None)
