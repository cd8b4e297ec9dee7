"""Sparse3Diff (MICCAI 2025): slice-guided, z-position-aware diffusion for the ``sparse`` task.

What is diffused is the residual of the missing planes over the linear interpolation between
the two acquired planes, scaled by ``residual_scale`` (the acquired planes are its zero
points). The acquired planes themselves are never noised and enter the network at their true
values at every step (paper section 2.2). Training minimises the v-loss of eq. (4) on the
intermediate planes; the z-position condition is dropped with probability ``p_uncond`` so that
sampling can combine conditional and unconditional predictions with weight w (eq. 5).

The deterministic ``unet`` baseline shares the network and data: it regresses the same scaled
residual directly (MSE), which is also the posterior mean a diffusion sample average estimates.

``slice_guidance=False`` is the "unguided DDPM" ablation of the benchmarks (the paper's DDPM
row): a plain diffusion model of whole windows of n+1 planes in [-1, 1] units, every plane
noised, no clean acquired planes and no interpolation given to the network. At sampling the
acquired planes can only enter the usual way for an unconditional model, by replacement: they
are noised to the current level and substituted into the state before every network call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..diffusion.samplers import cfg_combine, make_v_denoiser, sample
from ..diffusion.schedule import VPSchedule, q_sample, v_target
from .sparse_window_net import SparseWindowNet, linear_guide

#: The residual over linear interpolation has a std of 0.06-0.10 in [-1, 1] units on real
#: confocal data (n = 2..8); scaling by 6 brings it near unit variance for the diffusion.
RESIDUAL_SCALE = 6.0


def _scaled_residual(windows: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    n = windows.shape[1] - 1
    guide = linear_guide(windows[:, 0], windows[:, -1], n)
    return guide, (windows - guide) * scale


@dataclass
class SparseDiffusionTrainable:
    """Sparse3Diff pre-training: a batch sampler and the v-loss (eq. 4) for the one training loop."""

    network: SparseWindowNet
    windows: Any  # training.windows.WindowSampler
    batch_size: int = 8
    p_uncond: float = 0.15
    residual_scale: float = RESIDUAL_SCALE
    schedule: VPSchedule = field(default_factory=lambda: VPSchedule("cosine", zero_terminal_snr=True))
    refresh_every: int = 10
    #: Share of windows trained at t = 1 exactly (pure noise). Every sampler's first step
    #: evaluates the network there, and with zero terminal SNR its prediction at t = 1 is the
    #: posterior-mean estimate that few-step samples and K-sample means build on.
    p_terminal: float = 0.0
    #: False: the unguided ablation (see the module docstring).
    slice_guidance: bool = True

    def sample_batch(self, rng: np.random.Generator, step: int) -> torch.Tensor:
        if self.refresh_every and step % self.refresh_every == 0:
            self.windows.refresh(rng)
        batch, _ = self.windows.batch(rng, self.batch_size)
        return torch.from_numpy(batch)

    def loss(self, network: nn.Module, windows: torch.Tensor, generator: torch.Generator,
             loss_planes: torch.Tensor | None = None) -> torch.Tensor:
        device = next(network.parameters()).device
        windows = windows.to(device)
        b = windows.shape[0]
        if self.slice_guidance:
            guide, r0 = _scaled_residual(windows, self.residual_scale)
        else:  # whole windows diffused, the network sees no clean plane
            guide, r0 = torch.zeros_like(windows), windows
        t = torch.rand(b, generator=generator)
        if self.p_terminal:
            t = torch.where(torch.rand(b, generator=generator) < self.p_terminal, torch.ones_like(t), t)
        t = t.to(device)
        eps = torch.randn(r0.shape, generator=generator).to(device)
        if self.slice_guidance:
            eps[:, 0] = eps[:, -1] = 0  # acquired planes are never noised
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = alpha.view(b, 1, 1, 1).to(device), sigma.view(b, 1, 1, 1).to(device)
        x_t = q_sample(r0, eps, alpha, sigma)
        keep = torch.rand(b, generator=generator).to(device) >= self.p_uncond
        v_pred = network(x_t, guide, t, keep)
        err = (v_pred - v_target(r0, eps, alpha, sigma)) ** 2
        if loss_planes is None:
            # eq. (4) on the intermediate planes; the unguided model learns whole windows
            return err[:, 1:-1].mean() if self.slice_guidance else err.mean()
        return err[:, loss_planes].mean()


@dataclass
class SparseRegressionTrainable(SparseDiffusionTrainable):
    """The ``unet`` baseline: MSE on the scaled residual of the intermediate planes."""

    def loss(self, network: nn.Module, windows: torch.Tensor, generator: torch.Generator,
             loss_planes: torch.Tensor | None = None) -> torch.Tensor:
        device = next(network.parameters()).device
        windows = windows.to(device)
        guide, r0 = _scaled_residual(windows, self.residual_scale)
        b = windows.shape[0]
        pred = network(None, guide, torch.zeros(b, device=device), torch.ones(b, dtype=torch.bool, device=device))
        return ((pred - r0)[:, 1:-1] ** 2).mean()


@dataclass
class SparseModel:
    """A trained window network with what inference needs (scale, schedule, defaults)."""

    network: SparseWindowNet
    residual_scale: float = RESIDUAL_SCALE
    schedule: VPSchedule = field(default_factory=lambda: VPSchedule("cosine", zero_terminal_snr=True))
    device: str = "cpu"
    slice_guidance: bool = True

    @property
    def is_diffusion(self) -> bool:
        return self.network.diffusion

    @torch.no_grad()
    def fill(self, first: torch.Tensor, last: torch.Tensor, n: int, *, steps: int = 10, sampler: str = "dpmpp_2m",
             guidance: float = 0.0, samples: int = 1, generator: torch.Generator | None = None,
             should_stop: Callable[[], bool] | None = None, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The n-1 planes between ``first`` and ``last`` ((H, W), in [-1, 1] units).

        ``bf16`` runs the network under bf16 autocast; the sampler's arithmetic stays fp32.

        Returns (mean over ``samples`` (n-1, H, W), std over samples or None when samples == 1).
        """
        net = self.network
        dev = first.device
        guide = linear_guide(first[None], last[None], n)  # (1, P, H, W)
        if not self.is_diffusion:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                out = net(None, guide, torch.zeros(1, device=dev), torch.ones(1, dtype=torch.bool, device=dev)).float()
            return guide[0, 1:-1] + out[0, 1:-1] / self.residual_scale, None
        h, w = first.shape
        x_T = torch.randn((samples, n - 1, h, w), generator=generator, device="cpu").to(dev)
        if not self.slice_guidance:
            ends = torch.randn((samples, 2, h, w), generator=generator, device="cpu").to(dev)
            planes = torch.cat([self._sample_unguided(guide[0, [0, -1]], x_T[i:i + 1], ends[i:i + 1], n, steps=steps,
                                                      sampler=sampler, guidance=guidance, generator=generator,
                                                      should_stop=should_stop, bf16=bf16) for i in range(samples)])
            return planes.mean(0), (planes.std(0) if samples > 1 else None)
        # On a CPU the K samples run one after the other: a batch of K windows of this size
        # overflows the caches and ran 20-33 % slower per sample (benchmarks/sparse_speed.py).
        chunk = 1 if dev.type == "cpu" else samples
        r = torch.cat([self._sample(guide, x_T[i:i + chunk], n, steps=steps, sampler=sampler, guidance=guidance,
                                    generator=generator, should_stop=should_stop, bf16=bf16)
                       for i in range(0, samples, chunk)])
        planes = guide[0, 1:-1] + r / self.residual_scale  # (K, n-1, H, W)
        return planes.mean(0), (planes.std(0) if samples > 1 else None)

    def _sample(self, guide: torch.Tensor, x_T: torch.Tensor, n: int, *, steps: int, sampler: str, guidance: float,
                generator: torch.Generator | None, should_stop: Callable[[], bool] | None, bf16: bool = False) -> torch.Tensor:
        """Samples of the scaled residual of the n-1 inner planes, one per row of ``x_T``."""
        net = self.network
        dev = x_T.device
        k, _, h, w = x_T.shape
        guide_k = guide.expand(k, -1, -1, -1)

        def v_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            full = torch.zeros(k, n + 1, h, w, device=dev, dtype=x.dtype)
            full[:, 1:-1] = x
            tb = t.reshape(-1)[:1].expand(k).to(dev, torch.float32)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                if guidance == 0:
                    v = net(full, guide_k, tb, torch.ones(k, dtype=torch.bool, device=dev)).float()
                else:  # eq. (5): one batched call for the conditional and the unconditional branch
                    keep = torch.cat([torch.ones(k, dtype=torch.bool, device=dev), torch.zeros(k, dtype=torch.bool, device=dev)])
                    both = net(full.repeat(2, 1, 1, 1), guide_k.repeat(2, 1, 1, 1), tb.repeat(2), keep).float()
                    v = cfg_combine(both[:k], both[k:], guidance)
            return v[:, 1:-1]

        denoise = make_v_denoiser(v_model, self.schedule)
        return sample(sampler, denoise, self.schedule, x_T, n_steps=steps, generator=generator, should_stop=should_stop)

    def _sample_unguided(self, acquired: torch.Tensor, x_T: torch.Tensor, ends_noise: torch.Tensor, n: int, *,
                         steps: int, sampler: str, guidance: float, generator: torch.Generator | None,
                         should_stop: Callable[[], bool] | None, bf16: bool = False) -> torch.Tensor:
        """The unguided ablation: replacement sampling (acquired planes noised to level t, fixed noise)."""
        net = self.network
        dev = x_T.device
        k, _, h, w = x_T.shape
        zeros = torch.zeros(k, n + 1, h, w, device=dev)

        def v_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            tb = t.reshape(-1)[:1].expand(k).to(dev, torch.float32)
            alpha, sigma = self.schedule.alpha_sigma(tb)
            alpha, sigma = alpha.view(k, 1, 1, 1).to(dev), sigma.view(k, 1, 1, 1).to(dev)
            full = torch.cat([q_sample(acquired[None, :1], ends_noise[:, :1], alpha, sigma), x,
                              q_sample(acquired[None, 1:], ends_noise[:, 1:], alpha, sigma)], dim=1)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                if guidance == 0:
                    v = net(full, zeros, tb, torch.ones(k, dtype=torch.bool, device=dev)).float()
                else:
                    keep = torch.cat([torch.ones(k, dtype=torch.bool, device=dev), torch.zeros(k, dtype=torch.bool, device=dev)])
                    both = net(full.repeat(2, 1, 1, 1), zeros.repeat(2, 1, 1, 1), tb.repeat(2), keep).float()
                    v = cfg_combine(both[:k], both[k:], guidance)
            return v[:, 1:-1]

        denoise = make_v_denoiser(v_model, self.schedule)
        return sample(sampler, denoise, self.schedule, x_T, n_steps=steps, generator=generator, should_stop=should_stop)

    def fill_tiled(self, first: np.ndarray, last: np.ndarray, n: int, tile: int = 256, overlap: int = 32,
                   seed: int = 0, **kw: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``fill`` over lateral tiles with linear blending (bounded memory for any plane size);
        each tile's noise is seeded by (seed, tile position)."""
        from .tiling import fill_by_tiles

        def fill(parts: list[np.ndarray], tile_seed: int) -> tuple[Any, Any]:
            f, l = (torch.from_numpy(p).to(self.device) for p in parts)
            return self.fill(f, l, n, generator=torch.Generator().manual_seed(tile_seed), **kw)

        return fill_by_tiles(fill, [first, last], n - 1, tile, overlap, seed)


def reconstruct_sparse(model: SparseModel, volume: np.ndarray, n: int, *, skip: frozenset[int] = frozenset(),
                       seed: int = 0, check_cancel: Callable[[], None] | None = None, **fill_kw: Any) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Yield (z, plane, std or None) for every output plane, in z order, in the input's units.

    Acquired planes are copied bit-exact; subvolume k is seeded by (seed, k), so the result is
    the same whether or not earlier subvolumes were computed in this run (resume-safe).
    """
    from ..normalize import denormalize, normalize, percentile_range

    lo, hi = percentile_range(volume)
    # Models work in [-1, 1]: percentile window [lo, hi] -> [0, 1] -> [-1, 1].
    norm = 2 * normalize(volume, lo, hi) - 1
    m = volume.shape[0]
    for k in range(m):
        z0 = k * n
        if z0 not in skip:
            yield z0, volume[k].copy(), (np.zeros_like(volume[k]) if fill_kw.get("samples", 1) > 1 else None)
        if k == m - 1:
            break
        todo = [z0 + j for j in range(1, n) if z0 + j not in skip]
        if not todo:
            continue
        if check_cancel is not None:
            check_cancel()
        mean, sd = model.fill_tiled(norm[k], norm[k + 1], n, seed=int(np.random.SeedSequence([seed, k]).generate_state(1)[0]), **fill_kw)
        planes = denormalize((mean + 1) / 2, lo, hi)
        sds = sd * (hi - lo) / 2 if sd is not None else None
        for j in range(1, n):
            if z0 + j in skip:
                continue
            yield z0 + j, planes[j - 1], (sds[j - 1] if sds is not None else None)
