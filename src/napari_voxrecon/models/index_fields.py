"""Representations of the refractive-index contrast Δn for the ``diffraction`` task.

All three map to a Δn volume (D, H, W) on the reconstruction grid and share the physics and
the loss (``models.diffraction_fit``), so comparing them isolates the representation:
- ``ExplicitGrid`` (method ``explicit``): one free parameter per voxel;
- ``TriplaneField`` (method ``triplane``): three axis-aligned feature planes (XY, XZ, YZ),
  features bilinearly sampled at each voxel, multiplied (K-Planes' Hadamard product, the
  method's default) or summed, decoded by a small MLP;
- ``NVPField`` (method ``nvp``, the paper's neural volumetric prior): an explicit 3D feature
  grid (F channels) at a coarser resolution, trilinearly sampled at each voxel and decoded by
  a 3-layer MLP; ``refine()`` doubles the feature grid's resolution (coarse to fine).
With ``smooth``, the two feature representations also average their interpolated features
over a node spacing (a quadratic B-spline of the nodes: the index has no kinks at the nodes).
The MLP's last layer starts at zero, so every field starts as Δn = 0 (the background medium).
All three are ``IndexField``s: the fit loop calls ``refine()`` and ``project_nonnegative()`` on
any of them, and each does what its parameters allow.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(inp: int, hidden: int, layers: int = 3) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = inp
    for _ in range(layers - 1):
        mods += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    last = nn.Linear(width, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*mods, last)


class IndexField(nn.Module):
    """What the fit loop (``models.diffraction_fit``) asks of a representation besides ``forward()``
    (its Δn volume): hooks that do nothing unless the representation has something to do."""

    def refine(self) -> bool:
        """Coarse to fine: double the resolution of the parameters; True when they changed (the
        optimiser must then be rebuilt). Only a feature grid coarser than the voxels can."""
        return False

    @torch.no_grad()
    def project_nonnegative(self) -> None:
        """After an optimiser step under Δn >= 0, put the parameters back where Δn >= 0, where the
        representation allows it. A decoder's parameters cannot be, so the neural fields leave it
        to the one-sided clip of their output (``diffraction_fit._NonNegative``)."""


class ExplicitGrid(IndexField):
    def __init__(self, shape: tuple[int, int, int], scale: float = 0.01) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.scale = scale  # parameters of order 1 for a Δn of order 0.01: better-conditioned steps
        self.values = nn.Parameter(torch.zeros(self.shape))

    def forward(self) -> torch.Tensor:
        return self.values * self.scale

    @torch.no_grad()
    def project_nonnegative(self) -> None:
        # projected gradient: the grid itself stays feasible, so Adam's momentum cannot carry a voxel below 0
        self.values.clamp_(min=0)


class TriplaneField(IndexField):
    """``downsample``: voxels per plane node; ``smooth``: the bilinearly sampled plane features
    are also averaged over this many node spacings (as ``NVPField``'s; 0: off). ``combine``:
    how a voxel's three plane features meet: ``sum`` (EG3D-style) or ``product`` (K-Planes'
    Hadamard product, a low-rank decomposition of the feature volume; its planes start at 1 plus
    noise, as K-Planes starts them away from zero, so the product is not vanishingly small)."""

    COMBINES = ("sum", "product")

    def __init__(self, shape: tuple[int, int, int], features: int = 8, downsample: int = 2, hidden: int = 32,
                 scale: float = 0.01, init: float = 0.1, smooth: float = 0.0, combine: str = "sum") -> None:
        super().__init__()
        if combine not in self.COMBINES:
            raise ValueError(f"unknown triplane combine {combine!r}: choose {' or '.join(self.COMBINES)}")
        d, h, w = shape
        self.shape, self.scale, self.smooth, self.downsample = tuple(shape), scale, smooth, downsample
        self.combine = combine
        r = lambda n: max(2, n // downsample)  # noqa: E731
        base = 1.0 if combine == "product" else 0.0
        self.xy = nn.Parameter(base + init * torch.randn(1, features, r(h), r(w)))
        self.xz = nn.Parameter(base + init * torch.randn(1, features, r(d), r(w)))
        self.yz = nn.Parameter(base + init * torch.randn(1, features, r(d), r(h)))
        self.mlp = _mlp(features, hidden)

    def features(self) -> torch.Tensor:
        """(F, D, H, W): the planes' features combined at every voxel, before the MLP."""
        d, h, w = self.shape
        width = round(self.smooth * self.downsample)
        mz, my, mx = (_axis_weights(n, nodes, width, self.xy.device)
                      for n, nodes in ((d, self.xz.shape[-2]), (h, self.xy.shape[-2]), (w, self.xy.shape[-1])))
        xy = my @ self.xy[0] @ mx.t()  # (F, H, W): each plane sampled on its own two axes, then broadcast
        xz = mz @ self.xz[0] @ mx.t()  # (F, D, W)
        yz = mz @ self.yz[0] @ my.t()  # (F, D, H)
        if self.combine == "product":
            return xy[:, None] * xz[:, :, None] * yz[..., None]
        return xy[:, None] + xz[:, :, None] + yz[..., None]

    def forward(self) -> torch.Tensor:
        d, h, w = self.shape
        feats = self.features()
        return self.mlp(feats.reshape(feats.shape[0], -1).t()).reshape(d, h, w) * self.scale


def _box_blur(x: torch.Tensor, width: int) -> torch.Tensor:
    """Mean of ``x`` over ``width`` rows (its first axis; edges replicated): a symmetric window
    of ``width`` taps, or of width+1 with half-weight ends when even, so it does not shift. Summed as a
    difference of running sums (a cost that does not grow with the width: a coarse level's
    window spans half the volume)."""
    n = x.shape[0]
    w = min(int(width), n - 1)
    if w < 1:
        return x
    half = w // 2  # one extra row in front for the running sum's zero
    xp = torch.cat([x[:1].expand(half + 1, *x.shape[1:]), x, x[-1:].expand(half, *x.shape[1:])])
    run = xp.cumsum(0)
    total = run[2 * half + 1:2 * half + 1 + n] - run[:n]  # the 2*half+1 taps about each row
    if w % 2 == 0:  # the end taps count half
        total = total - 0.5 * (xp[1:1 + n] + xp[2 * half + 1:2 * half + 1 + n])
    return total / w


def _axis_weights(n: int, nodes: int, width: int, device: torch.device) -> torch.Tensor:
    """(n, nodes): voxel i's weights on the nodes along one axis: linear interpolation with the
    end nodes on the end voxels (``grid_sample``'s ``align_corners=True``), then ``_box_blur``
    over ``width`` voxels. A 3D grid is sampled as three such products, one per axis."""
    pos = torch.linspace(0, nodes - 1, n, device=device) if n > 1 else torch.full((1,), (nodes - 1) / 2, device=device)
    lo = pos.floor().clamp(max=nodes - 2).long()
    frac = pos - lo
    lin = torch.zeros(n, nodes, device=device)
    lin[torch.arange(n), lo] = 1 - frac
    lin[torch.arange(n), lo + 1] += frac
    return _box_blur(lin, width)


class NVPField(IndexField):
    """``downsample``: voxels per feature-grid node, one number or (z, y, x) (a coarser z suits
    views that all look along z). ``levels`` > 1 adds grids each twice as coarse as the last,
    their features concatenated before the MLP: coarse levels carry the smooth bulk of the
    index, the finest one the detail. ``init``: standard deviation of the random features.
    ``smooth``: the trilinearly sampled features are also averaged over this many node spacings
    (1: a quadratic B-spline of the nodes instead of a linear one, no kinks at the nodes; 0: off).
    """

    def __init__(self, shape: tuple[int, int, int], features: int = 8, downsample: int | tuple[int, int, int] = 4,
                 hidden: int = 32, scale: float = 0.01, levels: int = 1, init: float = 0.1, smooth: float = 0.0) -> None:
        super().__init__()
        self.shape, self.scale, self.smooth = tuple(shape), scale, smooth
        ds = (downsample,) * 3 if isinstance(downsample, int) else tuple(int(v) for v in downsample)
        self.downsample = ds
        self.grids = nn.ParameterList(
            [nn.Parameter(init * torch.randn(1, features, *self._grid_shape(tuple(d * 2 ** lv for d in ds))))
             for lv in range(levels)])
        self.mlp = _mlp(features * levels, hidden)

    def _grid_shape(self, downsample: tuple[int, ...]) -> tuple[int, int, int]:
        return tuple(max(2, -(-n // d)) for n, d in zip(self.shape, downsample))  # type: ignore[return-value]

    @torch.no_grad()
    def refine(self) -> bool:
        """Double the finest feature grid's resolution (trilinear), down to the voxel grid; False when already there."""
        if max(self.downsample) <= 1:
            return False
        self.downsample = tuple(max(1, d // 2) for d in self.downsample)
        finer = F.interpolate(self.grids[0].data, size=self._grid_shape(self.downsample), mode="trilinear", align_corners=True)
        self.grids[0] = nn.Parameter(finer)
        return True

    def _sample(self, grid: torch.Tensor, level: int) -> torch.Tensor:
        """(C, D, H, W) features at the voxels: trilinear (smoothed) interpolation of the nodes,
        done separably, one small matrix per axis, which is several times cheaper than
        ``grid_sample`` followed by a blur of the full-resolution features."""
        # the window follows the finest grid's current downsample: after refine() a coarser level's
        # nodes stay where they were, so its window is then half its node spacing (as measured)
        mz, my, mx = (_axis_weights(n, nodes, round(self.smooth * ds * 2 ** level), grid.device)
                      for n, nodes, ds in zip(self.shape, grid.shape[-3:], self.downsample))
        x = grid[0] @ mx.t()  # (C, nz, ny, W)
        x = torch.einsum("czyx,Yy->czYx", x, my)
        return torch.einsum("czyx,Zz->cZyx", x, mz)

    def forward(self) -> torch.Tensor:
        d, h, w = self.shape
        feats = torch.cat([self._sample(g, lv) for lv, g in enumerate(self.grids)])  # (F*levels, D, H, W)
        return self.mlp(feats.reshape(feats.shape[0], -1).t()).reshape(d, h, w) * self.scale


FIELDS: dict[str, Any] = {"explicit": ExplicitGrid, "triplane": TriplaneField, "nvp": NVPField}


def make_field(kind: str, shape: tuple[int, int, int], **kw: Any) -> IndexField:
    if kind not in FIELDS:
        raise ValueError(f"unknown index representation {kind!r}: choose {', '.join(FIELDS)}")
    return FIELDS[kind](shape, **kw)
