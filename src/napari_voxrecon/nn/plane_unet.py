"""A U-Net over a stack of planes: 2D convolutions per plane, attention across planes.

The window of P = n+1 planes is processed as a batch of 2D images sharing weights, so any
interval n and any lateral size work with the same network. At the two coarser levels,
``PlaneAttention`` mixes information between the planes and injects the condition tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PlaneAttention, ResBlock


class PlaneUNet(nn.Module):
    """Maps (B, P, Cin, H, W) plane features to (B, P, Cout, H, W).

    ``emb`` (B, E) modulates every residual block (diffusion time); ``cond`` (B, L, D) are the
    tokens the plane-attention blocks cross-attend to. H and W must be multiples of
    ``2 ** (len(channels) - 1)`` (callers pad).
    """

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, ...] = (24, 48, 96),
                 emb_dim: int = 128, cond_dim: int = 128, attention_levels: tuple[int, ...] = (1, 2)) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.attention_levels = tuple(attention_levels)
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        cin = channels[0]
        for level, c in enumerate(channels):
            self.down_blocks.append(ResBlock(cin, c, emb_dim))
            self.down_attn.append(PlaneAttention(c, cond_dim) if level in attention_levels else nn.Identity())
            if level < len(channels) - 1:
                self.downsamples.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            cin = c
        self.mid = ResBlock(cin, cin, emb_dim)
        self.mid_attn = PlaneAttention(cin, cond_dim)
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        for level in reversed(range(len(channels))):
            c = channels[level]
            self.up_blocks.append(ResBlock(cin + c, c, emb_dim))
            self.up_attn.append(PlaneAttention(c, cond_dim) if level in attention_levels else nn.Identity())
            cin = c
        self.out_norm = nn.GroupNorm(8 if cin % 8 == 0 else 1, cin)
        self.out = nn.Conv2d(cin, out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, p, cin, h, w = x.shape
        emb_planes = emb.repeat_interleave(p, dim=0)
        hdn = self.stem(x.reshape(b * p, cin, h, w))
        skips = []
        for level, (block, attn) in enumerate(zip(self.down_blocks, self.down_attn)):
            hdn = block(hdn, emb_planes)
            if not isinstance(attn, nn.Identity):
                hdn = attn(hdn, p, cond)
            skips.append(hdn)
            if level < len(self.downsamples):
                hdn = self.downsamples[level](hdn)
        hdn = self.mid(hdn, emb_planes)
        hdn = self.mid_attn(hdn, p, cond)
        for block, attn in zip(self.up_blocks, self.up_attn):
            skip = skips.pop()
            if hdn.shape[-2:] != skip.shape[-2:]:
                hdn = F.interpolate(hdn, size=skip.shape[-2:], mode="nearest")
            hdn = block(torch.cat([hdn, skip], dim=1), emb_planes)
            if not isinstance(attn, nn.Identity):
                hdn = attn(hdn, p, cond)
        out = self.out(F.silu(self.out_norm(hdn)))
        return out.reshape(b, p, -1, h, w)
