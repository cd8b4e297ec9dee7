"""Learned methods of the ``projection`` task: ``unet`` (regression) and ``microdiffusion``.

Both work group by group: the n planes whose mean is projection k are predicted from a prior
for them and from projections k-1, k, k+1 (``projection_group_net``). ``unet`` regresses the
residual over the linear interpolation of the projections (MSE); ``microdiffusion`` (MicroDiffusion,
CVPR 2024) samples the residual of the planes over the INR rendering by diffusion, the prior
entering the noisy input at every step as eq. (9) writes it, X_t^0 = m_inr + (1 - w) X_t, with classifier-free guidance over the condition (eq. 7),
v-prediction on a zero-terminal-SNR cosine schedule and a few-step sampler. Either way the
result is then made consistent with the measurement: each group's mean equals its projection
(to float precision) without creating negative intensities (``enforce_group_means``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..diffusion.samplers import cfg_combine, make_v_denoiser, sample
from ..diffusion.schedule import VPSchedule, q_sample, v_target
from .projection_group_net import ProjectionGroupNet, linear_prior

#: The residual of the planes over the linear prior has a std of about 0.1 in [-1, 1] units;
#: the regression target is scaled to near unit variance.
RESIDUAL_SCALE = 6.0


def group_windows(windows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3n, H, W) consecutive planes -> (projections (B, 3, H, W), target planes of the middle group (B, n, H, W))."""
    b, _, h, w = windows.shape
    return windows.reshape(b, 3, n, h, w).mean(axis=2), windows[:, n:2 * n]


@dataclass
class ProjectionRegressionTrainable:
    """The ``unet`` baseline of the projection task: MSE on the scaled residual over the linear prior."""

    network: ProjectionGroupNet
    windows: Any  # training.windows.WindowSampler (windows of 3n planes)
    batch_size: int = 8
    p_uncond: float = 0.0
    residual_scale: float = RESIDUAL_SCALE
    refresh_every: int = 10
    #: Share of windows shown as a stack's first or last group: the missing neighbour projection
    #: is extrapolated from the group and its other neighbour, exactly as at inference
    #: (``neighbour_projections``). In a stack of M groups, 2 of M are such edge groups.
    p_edge: float = 0.2

    def sample_batch(self, rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
        if self.refresh_every and step % self.refresh_every == 0:
            self.windows.refresh(rng)
        n = int(rng.choice(self.windows.intervals))
        wins, pos = zip(*(self.windows.window(rng, 3 * n - 1, return_position=True) for _ in range(self.batch_size)))
        proj, target = group_windows(np.stack(wins), n)
        pos = np.array(pos, dtype=np.float32)
        for i in np.flatnonzero(rng.random(len(pos)) < self.p_edge):
            if rng.random() < 0.5:  # first group: no group above
                proj[i, 0], pos[i] = 2 * proj[i, 1] - proj[i, 2], 0.0
            else:  # last group
                proj[i, 2], pos[i] = 2 * proj[i, 1] - proj[i, 0], 1.0
        return {"projections": torch.from_numpy(proj), "target": torch.from_numpy(np.ascontiguousarray(target)),
                "stack_pos": torch.from_numpy(pos)}

    def prior(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return linear_prior(batch["projections"], batch["target"].shape[1])

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        device = next(network.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        prior = self.prior(batch)
        b = prior.shape[0]
        pred = network(None, prior, batch["projections"], torch.zeros(b, device=device),
                       torch.ones(b, dtype=torch.bool, device=device), batch["stack_pos"])
        return ((pred - (batch["target"] - prior) * self.residual_scale) ** 2).mean()


@dataclass
class MicroDiffusionTrainable(ProjectionRegressionTrainable):
    """MicroDiffusion training (Algorithm 1): v-loss on the planes of a group, the prior mixed
    into the noisy state by the network (eq. 9), the condition dropped with ``p_uncond``.

    With a ``bank`` (``training.prior_bank.PriorBank``) windows carry the INR prior fitted to
    their volume's own projections, as at inference; without one the prior is the linear one.
    """

    p_uncond: float = 0.15
    schedule: VPSchedule = field(default_factory=lambda: VPSchedule("cosine", zero_terminal_snr=True))
    p_terminal: float = 0.1
    bank: Any = None

    def sample_batch(self, rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
        if self.bank is None:
            return super().sample_batch(rng, step)
        return self.bank.batch(rng, self.batch_size)

    def loss(self, network: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        device = next(network.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        prior = batch["prior"] if "prior" in batch else self.prior(batch)
        x0 = (batch["target"] - prior) * self.residual_scale  # the residual over the prior is diffused
        b = x0.shape[0]
        t = torch.rand(b, generator=generator)
        if self.p_terminal:
            t = torch.where(torch.rand(b, generator=generator) < self.p_terminal, torch.ones_like(t), t)
        t = t.to(device)
        eps = torch.randn(x0.shape, generator=generator).to(device)
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = alpha.view(b, 1, 1, 1).to(device), sigma.view(b, 1, 1, 1).to(device)
        x_t = q_sample(x0, eps, alpha, sigma)
        keep = torch.rand(b, generator=generator).to(device) >= self.p_uncond
        v = network(x_t, prior, batch["projections"], t, keep, batch["stack_pos"])
        return ((v - v_target(x0, eps, alpha, sigma)) ** 2).mean()


def warm_start_from_regression(net: ProjectionGroupNet, regression_state: dict[str, torch.Tensor]) -> None:
    """Initialise a ``microdiffusion`` network from trained projection ``unet`` weights of the same widths.

    Why: with one or two sampling steps the result is mostly the network's prediction at t = 1
    (pure noise), which is a regression of the planes on the condition; the regression U-Net has
    already learned that from more windows than a diffusion run sees in the same time. The stem
    gains the eq. (9) input channel (first, zero-initialised, so it starts ignored); the output
    layer is negated because the regression predicts x0 (the scaled residual) while at zero
    terminal SNR the v-target at t = 1 is -x0 (v = alpha eps - sigma x0 with alpha = 0, sigma = 1).
    Everything else (encoders, blocks, attention) is copied as it is.
    """
    if not net.diffusion:
        raise ValueError("warm_start_from_regression initialises a diffusion (microdiffusion) network")
    own = net.state_dict()
    missing = [k for k in own if k not in regression_state]
    if missing:
        raise ValueError(f"the regression weights lack {len(missing)} tensors of this network (first: {missing[0]}); "
                         "they must be projection-unet weights of the same widths")
    for name, value in own.items():
        src = regression_state[name].to(value.dtype)
        if name == "backbone.stem.weight":
            if src.shape[1] != value.shape[1] - 1 or src.shape[0] != value.shape[0]:
                raise ValueError(f"stem shapes {tuple(src.shape)} and {tuple(value.shape)} do not match")
            value.zero_()
            value[:, 1:] = src
        elif name in ("backbone.out.weight", "backbone.out.bias"):
            value.copy_(-src)
        elif src.shape != value.shape:
            raise ValueError(f"{name}: shape {tuple(src.shape)} in the regression weights, {tuple(value.shape)} here "
                             "(train with the same --channels)")
        else:
            value.copy_(src)


@dataclass
class ProjectionModel:
    """A trained group network with what inference needs."""

    network: ProjectionGroupNet
    residual_scale: float = RESIDUAL_SCALE
    schedule: VPSchedule = field(default_factory=lambda: VPSchedule("cosine", zero_terminal_snr=True))
    device: str = "cpu"

    @property
    def is_diffusion(self) -> bool:
        return self.network.diffusion

    @torch.no_grad()
    def fill(self, prior: torch.Tensor, projections: torch.Tensor, stack_pos: float, *, steps: int = 4,
             sampler: str = "dpmpp_2m", guidance: float = 0.0, samples: int = 1, generator: torch.Generator | None = None,
             should_stop: Callable[[], bool] | None = None, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The n planes of one group ((n, H, W) prior, (3, H, W) projections, [-1, 1] units).

        Returns (mean over ``samples`` (n, H, W), std over samples or None)."""
        net = self.network
        dev = prior.device
        pos = torch.tensor([stack_pos], device=dev, dtype=torch.float32)
        one = torch.ones(1, dtype=torch.bool, device=dev)
        if not self.is_diffusion:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                out = net(None, prior[None], projections[None], torch.zeros(1, device=dev), one, pos).float()
            return prior + out[0] / self.residual_scale, None
        n, h, w = prior.shape
        x_T = torch.randn((samples, n, h, w), generator=generator, device="cpu").to(dev)
        chunk = 1 if dev.type == "cpu" else samples  # as in the sparse models: sequential K on CPUs
        outs = []
        for i in range(0, samples, chunk):
            k = min(chunk, samples - i)
            pri, prj, pk = prior[None].expand(k, -1, -1, -1), projections[None].expand(k, -1, -1, -1), pos.expand(k)

            def v_model(x: torch.Tensor, t: torch.Tensor, pri=pri, prj=prj, pk=pk, k=k) -> torch.Tensor:
                tb = t.reshape(-1)[:1].expand(k).to(dev, torch.float32)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    if guidance == 0:
                        return net(x, pri, prj, tb, torch.ones(k, dtype=torch.bool, device=dev), pk).float()
                    keep = torch.cat([torch.ones(k, dtype=torch.bool, device=dev), torch.zeros(k, dtype=torch.bool, device=dev)])
                    both = net(x.repeat(2, 1, 1, 1), pri.repeat(2, 1, 1, 1), prj.repeat(2, 1, 1, 1), tb.repeat(2), keep, pk.repeat(2)).float()
                    return cfg_combine(both[:k], both[k:], guidance)  # eq. (7)

            denoise = make_v_denoiser(v_model, self.schedule)
            outs.append(sample(sampler, denoise, self.schedule, x_T[i:i + k], n_steps=steps, generator=generator,
                               should_stop=should_stop))
        planes = prior[None] + torch.cat(outs) / self.residual_scale
        return planes.mean(0), (planes.std(0) if samples > 1 else None)

    def fill_tiled(self, prior: np.ndarray, projections: np.ndarray, stack_pos: float, tile: int = 256,
                   overlap: int = 32, seed: int = 0, **kw: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``fill`` over lateral tiles with linear blending; each tile's noise seeded by (seed, position)."""
        from .tiling import fill_by_tiles

        def fill(parts: list[np.ndarray], tile_seed: int) -> tuple[Any, Any]:
            pri, prj = (torch.from_numpy(p).to(self.device) for p in parts)
            return self.fill(pri, prj, stack_pos, generator=torch.Generator().manual_seed(tile_seed), **kw)

        return fill_by_tiles(fill, [prior, projections], prior.shape[0], tile, overlap, seed)


def stack_position(k: int, groups: int) -> float:
    """The place of group k in a stack of ``groups`` groups, 0 (first) to 1 (last)."""
    return k / (groups - 1) if groups > 1 else 0.5


def neighbour_projections(norm: np.ndarray, k: int) -> np.ndarray:
    """(3, H, W): projections k-1, k, k+1; beyond the stack's ends linearly extrapolated from the
    end segment, as the ``linear`` baseline does (a constant stack stays constant)."""
    m = norm.shape[0]
    if m == 1:
        return np.stack([norm[0]] * 3)
    prev = norm[k - 1] if k > 0 else 2 * norm[0] - norm[1]
    nxt = norm[k + 1] if k < m - 1 else 2 * norm[m - 1] - norm[m - 2]
    return np.stack([prev, norm[k], nxt])


def reconstruct_projection(model: ProjectionModel, projections: np.ndarray, n: int, *,
                           prior_fn: Callable[[int, np.ndarray], np.ndarray] | None = None,
                           skip: frozenset[int] = frozenset(), seed: int = 0, consistency: bool = True,
                           check_cancel: Callable[[], None] | None = None,
                           **fill_kw: Any) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Yield (z, plane, std or None) for the planes of every group, in z order, in input units.

    ``prior_fn(k, proj3)`` gives group k's prior in [-1, 1] units (default: the linear prior).
    Group k is seeded by (seed, k), so results do not depend on which groups ran before.
    """
    from ..methods.projection_baselines import enforce_group_means, measurement_floor
    from ..normalize import denormalize, normalize, percentile_range

    lo, hi = percentile_range(projections)
    norm = 2 * normalize(projections, lo, hi) - 1
    floor = measurement_floor(projections)
    m = projections.shape[0]
    for k in range(m):
        planes_z = range(k * n, (k + 1) * n)
        if all(z in skip for z in planes_z):
            continue
        if check_cancel is not None:
            check_cancel()
        proj3 = neighbour_projections(norm, k)
        if prior_fn is None:
            prior = linear_prior(torch.from_numpy(proj3[None]), n)[0].numpy()
        else:
            prior = prior_fn(k, proj3)
        mean, sd = model.fill_tiled(prior.astype(np.float32), proj3.astype(np.float32), stack_position(k, m),
                                    seed=int(np.random.SeedSequence([seed, k]).generate_state(1)[0]), **fill_kw)
        group = denormalize((mean + 1) / 2, lo, hi)
        if consistency:
            group = enforce_group_means(group, projections[k], floor)
        sds = sd * (hi - lo) / 2 if sd is not None else None
        for i, z in enumerate(planes_z):
            if z not in skip:
                yield z, group[i], (sds[i] if sds is not None else None)
