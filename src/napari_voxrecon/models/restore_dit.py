"""The network of ``dit`` (task ``restore``): a 3D diffusion transformer with decomposed attention.

MicroDiffuse3D (paper Methods, and the facts from its code in shared/papers/README.md), in
pixel space:
- tokens: every plane is patchified laterally (p x p pixels -> one token), the depth axis stays
  native, so a (D, H, W) volume is D x N tokens with N = (H/p)(W/p); a 3D sinusoidal position
  code of (plane, patch row, patch column) is added, computed for whatever size comes in;
- every block attends within each plane (lateral, N tokens) and then along depth at each patch
  position (axial, D tokens): cost D N^2 + N D^2 instead of (D N)^2 for full 3D attention
  (``attention="full"`` is kept for the cost measurement in benchmarks/restore_models.py);
- adaLN-Zero modulation of every sub-layer from the diffusion time plus a global condition
  (a built-in encoder of the low-quality input: mean of its local features; optionally plus
  DINOv2 features through the Hub, ``models.dinov2_condition``);
- local condition: a small 3D convolutional encoder of the (upsampled) low-quality input,
  patchified like the state, concatenated at the input and re-injected in every block as
  x += LN(GELU(Linear(c_local))) (the authors' code's form).
What is diffused is the residual of the clean volume over the trilinear upsampling of the
low-quality one (scaled to about unit variance), so the network's input also holds that
upsampling; the paper's separate refinement decoder that sees the low-quality input is
therefore built in.

Optional regression prior (``prior_channels``): a frozen ``care`` U-Net, trained by MSE for the
same degradation, whose estimate is (a) a third channel of the local condition and (b) the base
the diffusion refines: what is diffused is then the residual over the prior's estimate
("predict and refine", Whang et al., CVPR 2022). The paper pre-trains on large data; with one
real volume and 2 CPU cores the transformer cannot learn the mean from scratch in time, but it
can learn what the regressor gets wrong. With zero-initialised outputs (adaLN-Zero) the
untrained model returns exactly the prior, so training starts from the regressor's quality.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import TimestepEmbedder, sinusoidal_embedding


def position_code(d: int, gh: int, gw: int, dim: int, device: torch.device) -> torch.Tensor:
    """(D, N, dim): sinusoidal codes of the plane index, patch row and patch column, concatenated."""
    part = dim // 3
    rest = dim - 2 * part
    z = sinusoidal_embedding(torch.arange(d, device=device, dtype=torch.float32), part, base=1000.0)
    y = sinusoidal_embedding(torch.arange(gh, device=device, dtype=torch.float32), part, base=1000.0)
    x = sinusoidal_embedding(torch.arange(gw, device=device, dtype=torch.float32), rest, base=1000.0)
    yx = torch.cat([y[:, None].expand(gh, gw, part), x[None].expand(gh, gw, rest)], dim=-1).reshape(gh * gw, part + rest)
    return torch.cat([z[:, None].expand(d, gh * gw, part), yx[None].expand(d, gh * gw, part + rest)], dim=-1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., L, C): attention over L."""
        *lead, length, c = x.shape
        q, k, v = self.qkv(x).reshape(-1, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B', heads, L, c/heads)
        return self.proj(out.transpose(1, 2).reshape(*lead, length, c))


class DecomposedBlock(nn.Module):
    """Local injection, lateral attention, axial attention, MLP; each sub-layer adaLN-Zero modulated."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, attention: str = "decomposed") -> None:
        super().__init__()
        if attention not in ("decomposed", "full"):
            raise ValueError(f"attention must be 'decomposed' or 'full', not {attention!r}")
        self.attention = attention
        self.local = nn.Linear(dim, dim)
        self.local_norm = nn.LayerNorm(dim)
        self.norm_lat = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn_lat = SelfAttention(dim, heads)
        self.norm_ax = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn_ax = SelfAttention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))
        nn.init.zeros_(self.ada[-1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.ada[-1].bias)

    def forward(self, x: torch.Tensor, local: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x, local: (B, D, N, C); cond: (B, C)."""
        b, d, n, c = x.shape
        x = x + self.local_norm(F.gelu(self.local(local)))  # local condition, re-injected per block
        m = self.ada(cond)[:, None, None].chunk(9, dim=-1)
        if self.attention == "full":  # one attention over all D*N tokens (cost measurement only)
            h = _modulate(self.norm_lat(x), m[0], m[1]).reshape(b, d * n, c)
            x = x + m[2] * self.attn_lat(h).reshape(b, d, n, c)
        else:
            h = _modulate(self.norm_lat(x), m[0], m[1])  # lateral: the N patches of each plane
            x = x + m[2] * self.attn_lat(h)
            h = _modulate(self.norm_ax(x), m[3], m[4]).transpose(1, 2)  # axial: D planes per patch
            x = x + m[5] * self.attn_ax(h).transpose(1, 2)
        return x + m[8] * self.mlp(_modulate(self.norm_mlp(x), m[6], m[7]))


class RestoreDiT(nn.Module):
    """(state, low-quality input, mask, t) -> v, all (B, D, H, W); H, W multiples of ``patch``."""

    def __init__(self, dim: int = 128, depth: int = 6, heads: int = 4, patch: int = 4, local_width: int = 16,
                 mlp_ratio: float = 4.0, attention: str = "decomposed", diffusion: bool = True,
                 prior_channels: list[int] | tuple[int, ...] | None = None, global_encoder: str | None = None) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(dim=dim, depth=depth, heads=heads, patch=patch, local_width=local_width,
                                           mlp_ratio=mlp_ratio, attention=attention, diffusion=diffusion)
        self.patch, self.dim, self.diffusion = patch, dim, diffusion
        self.prior: nn.Module | None = None
        if prior_channels:
            from .restore_models import CareNet

            self.config["prior_channels"] = [int(c) for c in prior_channels]
            self.prior = CareNet(tuple(prior_channels))
            self.prior.requires_grad_(False)  # frozen: trained by regression, loaded with --prior
        self.global_dino: nn.Module | None = None
        if global_encoder:  # optional DINOv2 features of the input, added to the global condition
            from .dinov2_condition import Dinov2GlobalCondition

            self.config["global_encoder"] = global_encoder
            self.global_dino = Dinov2GlobalCondition(global_encoder, dim)
        n_cond = 3 if self.prior is not None else 2  # upsampled input, mask (, prior's residual estimate)
        # local encoder: 3D convolutions over the upsampled input and its mask
        self.local_enc = nn.Sequential(
            nn.Conv3d(n_cond, local_width, 3, padding=1), nn.SiLU(),
            nn.Conv3d(local_width, local_width, 3, padding=1), nn.SiLU(),
        )
        self.local_embed = nn.Linear(local_width * patch * patch, dim)
        in_ch = (1 if diffusion else 0) + n_cond  # state (diffusion) and the condition channels
        self.embed = nn.Linear(in_ch * patch * patch + dim, dim)  # concatenated with the local tokens
        self.time = TimestepEmbedder(dim)
        self.global_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(DecomposedBlock(dim, heads, mlp_ratio, attention) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.final = nn.Linear(dim, patch * patch)
        for layer in (self.final_ada[-1], self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def multiple(self) -> int:
        """Lateral sizes must be multiples of this (the patch, and the prior U-Net's poolings)."""
        return math.lcm(self.patch, self.prior.multiple) if self.prior is not None else self.patch

    def prior_residual(self, lq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """The frozen prior's estimate of the scaled residual (B, D, H, W), or None without a prior."""
        if self.prior is None:
            return None
        with torch.no_grad():
            return self.prior(None, lq, mask, torch.zeros(lq.shape[0], device=lq.device))

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, D, N, C p p)."""
        b, c, d, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, d, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)
        return x.reshape(b, d, (h // p) * (w // p), c * p * p)

    def forward(self, state: torch.Tensor | None, lq: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                prior: torch.Tensor | None = None) -> torch.Tensor:
        """``prior``: ``prior_residual(lq, mask)`` when computed once outside (sampling calls
        the network several times on the same input); computed here when None."""
        b, d, h, w = lq.shape
        p = self.patch
        channels = [lq, mask]
        if self.prior is not None:
            channels.append(self.prior_residual(lq, mask) if prior is None else prior)
        cond_in = torch.stack(channels, dim=1)  # (B, 2 or 3, D, H, W)
        local = self.local_embed(self._patchify(self.local_enc(cond_in)))  # (B, D, N, dim)
        parts = [cond_in] if state is None or not self.diffusion else [state[:, None], cond_in]
        tokens = self._patchify(torch.cat(parts, dim=1))
        x = self.embed(torch.cat([tokens, local], dim=-1)) + position_code(d, h // p, w // p, self.dim, lq.device)
        cond = self.time(t) + self.global_mlp(local.mean(dim=(1, 2)))  # global condition: pooled local features
        if self.global_dino is not None:
            cond = cond + self.global_dino(lq)
        for block in self.blocks:
            x = block(x, local, cond)
        shift, scale = self.final_ada(cond)[:, None, None].chunk(2, dim=-1)
        out = self.final(_modulate(self.final_norm(x), shift, scale))  # (B, D, N, p p)
        out = out.reshape(b, d, h // p, w // p, p, p).permute(0, 1, 2, 4, 3, 5)
        return out.reshape(b, d, h, w)
