"""A small 3D U-Net (the network of the ``care`` method of the ``restore`` task).

CARE (Weigert et al., Nat. Methods 2018) restores with a 3D U-Net trained on pairs of
low-/high-quality volumes. Here the input is the low-quality volume already upsampled to the
output grid (trilinear, as the ``trilinear`` baseline), and the network predicts the residual
over it. Microscopy volumes are thin in z, so levels pool laterally only (1x2x2): a 16-plane
window keeps its full axial resolution at every level, and receptive field grows in y and x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import _groups


class ResBlock3d(nn.Module):
    """GroupNorm-SiLU-Conv3d twice with a residual connection; the last conv starts at zero."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet3D(nn.Module):
    """(B, C_in, D, H, W) -> (B, C_out, D, H, W); H and W must be multiples of ``multiple``."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pools = nn.ModuleList()
        c = channels[0]
        for i, ch in enumerate(channels):
            self.down.append(ResBlock3d(c, ch))
            c = ch
            if i < len(channels) - 1:
                self.pools.append(nn.Conv3d(c, c, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        self.mid = ResBlock3d(c, c)
        self.up = nn.ModuleList()
        for ch in reversed(channels[:-1]):
            self.up.append(ResBlock3d(c + ch, ch))
            c = ch
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv3d(c, out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # starts as "no change over the upsampled input"
        nn.init.zeros_(self.out.bias)

    @property
    def multiple(self) -> int:
        return 2 ** len(self.pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h)
            if i < len(self.pools):
                skips.append(h)
                h = self.pools[i](h)
        h = self.mid(h)
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        return self.out(F.silu(self.out_norm(h)))


def pad_lateral(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the last two axes of (B, C, D, H, W) up to a multiple; returns (padded, (H, W))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph, 0, 0), mode=mode)
    return x, (h, w)
