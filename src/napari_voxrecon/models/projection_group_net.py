"""The network of the ``projection`` task: the n planes of one projection group in, n planes out.

Per plane it reads (MicroDiffusion paper 4.2, adapted):
- the INR-enhanced image of eq. (9), X_t^0 = m_inr + (1 - w) X_t (diffusion only): what is
  diffused is the residual of the planes over the prior (in units of ``residual_scale``), so the
  noisy state enters as the prior plus (1 - w) times the noisy residual, in image units;
- the prior itself (the INR rendering for ``microdiffusion``, the linear interpolation of the
  projections for the deterministic ``unet``), so the network can tell the two apart;
- the projections of the group and of its two neighbours, as images (the measurements);
and the condition c = E_img(projection) || E_pos(position), eq. (8): a small convolutional image
encoder of the group's projection added to the time embedding of every residual block (as the
authors' code adds its condition as a per-channel bias), and position tokens (offset of the
plane within the group, the group's place in the stack) read by the plane-attention blocks.
Dropping the condition (``keep=False``) removes the projection images, the image code and the
position tokens: the unconditional branch of classifier-free guidance, trained with
probability ``p_uncond`` (the authors' code never trained it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import TimestepEmbedder, sinusoidal_embedding
from ..nn.plane_unet import PlaneUNet


class ImageEncoder(nn.Module):
    """E_img: a projection (B, H, W) -> a vector (B, D); strided convolutions + mean pooling."""

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
        )
        self.proj = nn.Linear(2 * width, dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(self.net(image[:, None]).mean(dim=(2, 3)))


class ProjectionGroupNet(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (24, 48, 96), emb_dim: int = 128, cond_dim: int = 128,
                 pos_dim: int = 32, diffusion: bool = True, mix: float = 0.5, residual_scale: float = 6.0) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(channels=list(channels), emb_dim=emb_dim, cond_dim=cond_dim,
                                           pos_dim=pos_dim, diffusion=diffusion, mix=mix, residual_scale=residual_scale)
        self.diffusion = diffusion
        self.mix = mix
        self.residual_scale = residual_scale
        self.pos_dim = pos_dim
        self.backbone = PlaneUNet((2 if diffusion else 1) + 3, 1, tuple(channels), emb_dim, cond_dim)
        self.time = TimestepEmbedder(emb_dim)
        self.image = ImageEncoder(emb_dim)
        self.pos_mlp = nn.Sequential(nn.Linear(3 * pos_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.null_token = nn.Parameter(torch.zeros(1, 1, cond_dim))

    def condition(self, n: int, stack_pos: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Position tokens (B, n, D): plane offset j, j/n and the group's place in the stack (0..1)."""
        b = stack_pos.shape[0]
        j = torch.arange(n, device=stack_pos.device, dtype=torch.float32)
        enc = torch.cat([sinusoidal_embedding(j, self.pos_dim, base=100.0).expand(b, n, -1),
                         sinusoidal_embedding((j + 0.5) / n * 10.0, self.pos_dim, base=100.0).expand(b, n, -1),
                         sinusoidal_embedding(stack_pos[:, None].expand(b, n) * 10.0, self.pos_dim, base=100.0)], dim=-1)
        tokens = self.pos_mlp(enc)
        return torch.where(keep[:, None, None], tokens, self.null_token.expand(b, n, -1))

    def forward(self, state: torch.Tensor | None, prior: torch.Tensor, projections: torch.Tensor, t: torch.Tensor,
                keep: torch.Tensor, stack_pos: torch.Tensor) -> torch.Tensor:
        """state, prior: (B, n, H, W); projections: (B, 3, H, W) = previous, own, next group;
        t: (B,); keep: (B,) bool; stack_pos: (B,) in [0, 1]. Returns (B, n, H, W)."""
        b, n, h, w = prior.shape
        kept = keep[:, None, None, None].to(prior.dtype)
        proj = projections * kept  # the measurements are part of the dropped condition
        planes = [prior, *[proj[:, i:i + 1].expand(b, n, h, w) for i in range(3)]]
        if self.diffusion:
            # eq. (9) at every step, training and sampling: X_t^0 = m_inr + (1 - w) X_t
            planes.insert(0, prior + (1 - self.mix) * state / self.residual_scale)
        x = torch.stack(planes, dim=2)  # (B, n, C, H, W)
        m = self.backbone.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x.reshape(b, -1, h, w), (0, pw, 0, ph), mode="reflect").reshape(b, n, x.shape[2], h + ph, w + pw)
        emb = self.time(t) + self.image(projections[:, 1]) * kept[:, :, 0, 0]
        out = self.backbone(x, emb, self.condition(n, stack_pos, keep))
        return out[:, :, 0, :h, :w]


def linear_prior(projections: torch.Tensor, n: int) -> torch.Tensor:
    """(B, 3, H, W) projections of groups k-1, k, k+1 -> (B, n, H, W): linear interpolation
    between group centres for the n planes of group k, shifted so their mean is projection k
    (the ``linear`` baseline's value for that group, away from the stack's ends)."""
    prev, own, nxt = projections[:, 0:1], projections[:, 1:2], projections[:, 2:3]
    off = (torch.arange(n, device=projections.device, dtype=projections.dtype) - (n - 1) / 2) / n  # in group widths
    off = off[None, :, None, None]
    before = own + off * (own - prev)  # planes above the centre
    after = own + off * (nxt - own)
    planes = torch.where(off < 0, before, after)
    return planes - planes.mean(dim=1, keepdim=True) + own
