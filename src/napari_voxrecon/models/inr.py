"""A per-volume implicit neural representation (INR) fitted to the measurements alone.

MicroDiffusion (paper 4.1) fits an INR to each volume from its projections (eq. 2: the mean of
the n predicted planes of a group must equal the measured projection); the Sparse3Diff paper
uses the same kind of INR, fitted to the acquired planes, as a baseline of the `sparse` task.
The paper's INR is a Fourier-feature MLP that took hours on a GPU. Here the representation is a
hybrid: two explicit feature grids (one at full lateral resolution, one 4x coarser) read by
trilinear interpolation and decoded by a small MLP, fitted with random coordinate batches and
early stopping, which takes seconds to a minute on a CPU.

Along z the grids have one node per measurement (acquired plane or projection group), so the
INR decides how to pass between measurements: the MLP decodes interpolated features, which
makes the interpolation nonlinear and shared across the volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class GridINR(nn.Module):
    """Feature grids (1, C, Zg, Yg, Xg) at two lateral resolutions + an MLP to one intensity."""

    def __init__(self, z_nodes: int, height: int, width: int, channels: int = 8, hidden: int = 64,
                 align_corners: bool = True, coarse: int = 4) -> None:
        super().__init__()
        self.align_corners = align_corners
        shapes = [(z_nodes, height, width), (z_nodes, max(2, height // coarse), max(2, width // coarse))]
        # Small random features, so the MLP sees distinct inputs from the first step.
        self.grids = nn.ParameterList([nn.Parameter(0.1 * torch.randn(1, channels, *s)) for s in shapes])
        self.mlp = nn.Sequential(nn.Linear(channels * len(shapes), hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (P, 3) as (z, y, x) in [-1, 1] -> intensities (P,)."""
        p = coords.shape[0]
        g = coords[:, [2, 1, 0]].view(1, p, 1, 1, 3)  # grid_sample wants (x, y, z)
        feats = [F.grid_sample(grid, g, mode="bilinear", padding_mode="border", align_corners=self.align_corners)
                 .view(grid.shape[1], p).t() for grid in self.grids]
        return self.mlp(torch.cat(feats, dim=1)).squeeze(-1)


@dataclass
class FitReport:
    iteration: int
    total: int
    loss: float


def _axis(size: int, device: torch.device | str, align_corners: bool = True) -> torch.Tensor:
    """Normalised coordinates of the ``size`` pixels of an axis, on the nodes of a grid of the
    same size under grid_sample's ``align_corners`` convention."""
    if not align_corners:
        return (2 * torch.arange(size, device=device, dtype=torch.float32) + 1) / size - 1
    return torch.linspace(-1.0, 1.0, size, device=device) if size > 1 else torch.zeros(1, device=device)


def _fit(model: GridINR, batch_loss: Callable[[torch.Generator], torch.Tensor], iterations: int, lr: float,
         seed: int, patience: int = 150, check_cancel: Callable[[], None] | None = None) -> Iterator[FitReport]:
    """Adam on random batches; stops early when the smoothed loss has not improved by 0.5 %
    over ``patience`` iterations."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    smooth, best, best_it = None, float("inf"), 0
    for it in range(iterations):
        loss = batch_loss(gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
        if smooth < best * 0.995:
            best, best_it = smooth, it
        if it % 25 == 0 or it == iterations - 1:
            if check_cancel is not None:
                check_cancel()
            yield FitReport(it + 1, iterations, value)
        if it - best_it > patience:
            yield FitReport(it + 1, it + 1, value)
            return


def fit_sparse(planes: np.ndarray, n: int, *, iterations: int = 600, lr: float = 1e-2, batch: int = 16384,
               seed: int = 0, device: str = "cpu", check_cancel: Callable[[], None] | None = None
               ) -> Iterator[FitReport | GridINR]:
    """Fit to the acquired planes (M, H, W) (values in about [0, 1]) at z = k*n; yields progress
    reports, then the fitted model."""
    dev = torch.device(device)
    m, h, w = planes.shape
    batch = min(batch, m * h * w)  # no point drawing more samples than there are measurements
    target = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)).to(dev)
    # z nodes at the acquired planes: with align_corners=True node k sits at k*n of the output.
    model = GridINR(m, h, w).to(dev)
    zs, ys, xs = _axis(m, dev), _axis(h, dev), _axis(w, dev)

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        k = torch.randint(m, (batch,), generator=gen).to(dev)
        y = torch.randint(h, (batch,), generator=gen).to(dev)
        x = torch.randint(w, (batch,), generator=gen).to(dev)
        pred = model(torch.stack([zs[k], ys[y], xs[x]], dim=1))
        return F.mse_loss(pred, target[k, y, x])

    yield from _fit(model, batch_loss, iterations, lr, seed, check_cancel=check_cancel)
    yield model


def fit_projection(projections: np.ndarray, n: int, *, iterations: int = 600, lr: float = 1e-2, batch: int = 4096,
                   seed: int = 0, device: str = "cpu", check_cancel: Callable[[], None] | None = None
                   ) -> Iterator[FitReport | GridINR]:
    """Fit to M projections (M, H, W), each the mean of n planes (MicroDiffusion eq. 2)."""
    dev = torch.device(device)
    m, h, w = projections.shape
    batch = min(batch, m * h * w)
    depth = m * n
    target = torch.from_numpy(np.ascontiguousarray(projections, dtype=np.float32)).to(dev)
    # align_corners=False: z node k sits at the centre of group k (planes k*n .. k*n+n-1).
    model = GridINR(m, h, w, align_corners=False).to(dev)
    zs = _axis(depth, dev, align_corners=False)
    ys, xs = _axis(h, dev, False), _axis(w, dev, False)
    offsets = torch.arange(n, device=dev)

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        k = torch.randint(m, (batch,), generator=gen).to(dev)
        y = torch.randint(h, (batch,), generator=gen).to(dev)
        x = torch.randint(w, (batch,), generator=gen).to(dev)
        z = zs[(k[:, None] * n + offsets[None]).reshape(-1)]
        coords = torch.stack([z, ys[y].repeat_interleave(n), xs[x].repeat_interleave(n)], dim=1)
        pred = model(coords).view(batch, n).mean(dim=1)  # eq. (2): the group's mean
        return F.mse_loss(pred, target[k, y, x])

    yield from _fit(model, batch_loss, iterations, lr, seed, check_cancel=check_cancel)
    yield model


def plane_z(model: GridINR, z: int, depth: int) -> float:
    """Normalised depth of output plane ``z`` of ``depth`` in the model's convention."""
    return float(_axis(depth, "cpu", model.align_corners)[z])


@torch.no_grad()
def render_plane(model: GridINR, z: float, height: int, width: int, rows_per_call: int = 64) -> np.ndarray:
    """One output plane at normalised depth ``z`` (H, W)."""
    dev = next(model.parameters()).device
    ys, xs = _axis(height, dev, model.align_corners), _axis(width, dev, model.align_corners)
    out = np.empty((height, width), np.float32)
    for y0 in range(0, height, rows_per_call):
        yy, xx = torch.meshgrid(ys[y0:y0 + rows_per_call], xs, indexing="ij")
        coords = torch.stack([torch.full_like(yy, z), yy, xx], dim=-1).reshape(-1, 3)
        out[y0:y0 + yy.shape[0]] = model(coords).view(yy.shape).cpu().numpy()
    return out
