"""The network of the ``sparse`` task: a window of n+1 planes in, one value per plane out.

Inputs per plane (Sparse3Diff's subvolume B^k = [s^k, X^k, s^{k+1}]): the current diffusion
state of the plane (zero for the two acquired planes, which never get noise), the linear
interpolation between the two acquired planes (which equals them at the ends: the acquired
planes enter at their true values at every step), and a mask marking the acquired planes. The
z-positions of the n+1 planes are encoded sinusoidally (paper eq. 3) into condition tokens that
the plane-attention blocks read by cross-attention; dropping them (``keep=False``) gives the
unconditional model of classifier-free guidance.

The same network, without a diffusion state, is the deterministic ``unet`` baseline.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import TimestepEmbedder, sinusoidal_embedding
from ..nn.plane_unet import PlaneUNet


class SparseWindowNet(nn.Module):
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), emb_dim: int = 128, cond_dim: int = 128,
                 pos_dim: int = 32, diffusion: bool = True) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(channels=list(channels), emb_dim=emb_dim, cond_dim=cond_dim,
                                           pos_dim=pos_dim, diffusion=diffusion)
        self.diffusion = diffusion
        self.pos_dim = pos_dim
        self.backbone = PlaneUNet(3 if diffusion else 2, 1, tuple(channels), emb_dim, cond_dim)
        self.time = TimestepEmbedder(emb_dim)
        # Position token of plane j: eq. (3) on its offset j (planes from s^k) and on j/n, so the
        # token says both where the plane is and how far apart the acquired planes are.
        self.pos_mlp = nn.Sequential(nn.Linear(2 * pos_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.null_token = nn.Parameter(torch.zeros(1, 1, cond_dim))

    def condition(self, n: int, batch: int, keep: torch.Tensor, device: torch.device) -> torch.Tensor:
        j = torch.arange(n + 1, device=device, dtype=torch.float32)
        enc = torch.cat([sinusoidal_embedding(j, self.pos_dim, base=100.0),
                         sinusoidal_embedding(j / n * 10.0, self.pos_dim, base=100.0)], dim=-1)
        tokens = self.pos_mlp(enc)[None].expand(batch, -1, -1)
        return torch.where(keep[:, None, None], tokens, self.null_token.expand(batch, n + 1, -1))

    def forward(self, state: torch.Tensor | None, guide: torch.Tensor, t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """state, guide: (B, P, H, W); t: (B,) diffusion time; keep: (B,) bool. Returns (B, P, H, W)."""
        b, p, h, w = guide.shape
        n = p - 1
        mask = torch.zeros(p, device=guide.device, dtype=guide.dtype)
        mask[0] = mask[-1] = 1
        planes = [guide, mask[None, :, None, None].expand(b, p, h, w)]
        if self.diffusion:
            planes.insert(0, state if state is not None else torch.zeros_like(guide))
        x = torch.stack(planes, dim=2)  # (B, P, C, H, W)
        m = self.backbone.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:  # reflect-pad to the U-Net's multiple, cropped back below
            x = F.pad(x.reshape(b, -1, h, w), (0, pw, 0, ph), mode="reflect").reshape(b, p, x.shape[2], h + ph, w + pw)
        out = self.backbone(x, self.time(t), self.condition(n, b, keep, guide.device))
        return out[:, :, 0, :h, :w]


def linear_guide(first: torch.Tensor, last: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, W) x2 -> (B, n+1, H, W): linear interpolation, exact at both ends."""
    t = torch.arange(n + 1, device=first.device, dtype=first.dtype)[None, :, None, None] / n
    return (1 - t) * first[:, None] + t * last[:, None]
