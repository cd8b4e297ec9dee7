"""Small, reusable network blocks: embeddings, residual blocks, attention across planes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(x: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Sinusoidal encoding of scalar positions, Sparse3Diff eq. (3) / Vaswani et al.

    c_{2i} = sin(x / base^(2i/d)), c_{2i+1} = cos(x / base^(2i/d)); ``x`` of any shape, the
    encoding is appended as a last axis of size ``dim``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(base) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[..., None] * freqs
    emb = torch.stack([torch.sin(args), torch.cos(args)], dim=-1).flatten(-2)
    return emb if dim % 2 == 0 else F.pad(emb, (0, 1))


class TimestepEmbedder(nn.Module):
    """Diffusion time t in [0, 1] -> a vector, through a sinusoid and a small MLP (as in DiT)."""

    def __init__(self, dim: int, freq_dim: int = 64) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t * 1000.0, self.freq_dim))


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, with a FiLM (scale, shift) from the embedding in between."""

    def __init__(self, cin: int, cout: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        # Zero-init the last conv so every block starts as the identity: deep stacks train stably.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class PlaneAttention(nn.Module):
    """Attention along the stack of planes at every pixel, then cross-attention to condition tokens.

    Input features ``(B*P, C, H, W)`` of P planes per window. The self-attention mixes the P
    planes at each pixel (the z-context a 2D network lacks); the cross-attention reads the
    condition tokens (the planes' z-position embeddings, Sparse3Diff section 2.2), which is how
    the position condition enters the network and what classifier-free guidance drops.
    """

    def __init__(self, channels: int, cond_dim: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj1 = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(cond_dim, 2 * channels)
        self.proj2 = nn.Linear(channels, channels)
        self.norm3 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))
        for layer in (self.proj1, self.proj2, self.mlp[-1]):  # residual branches start at zero
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        *lead, length, c = x.shape
        return x.reshape(*lead, length, self.heads, c // self.heads).transpose(-2, -3)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(-2, -3)
        return x.reshape(*x.shape[:-2], -1)

    def forward(self, x: torch.Tensor, planes: int, cond: torch.Tensor) -> torch.Tensor:
        bp, c, h, w = x.shape
        b = bp // planes
        # (B, P, C, H, W) -> (B, H*W, P, C): the P planes of one pixel form a sequence.
        t = x.reshape(b, planes, c, h * w).permute(0, 3, 1, 2)
        q, k, v = self.qkv(self.norm1(t)).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v))
        t = t + self.proj1(self._merge(a))
        # Cross-attention: queries (B, H*W*P, C) attend to the condition tokens (B, L, C).
        q = self.q(self.norm2(t)).reshape(b, h * w * planes, c)
        k, v = self.kv(cond).chunk(2, dim=-1)
        a = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v))
        t = t + self.proj2(self._merge(a)).reshape(b, h * w, planes, c)
        t = t + self.mlp(self.norm3(t))
        return t.permute(0, 2, 3, 1).reshape(bp, c, h, w)
