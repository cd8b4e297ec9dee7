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

``encoding="fourier"`` is the paper's representation, kept for comparison (as in the authors'
code: 256 frozen Gaussian Fourier features of scale 4, an 8-layer width-64 ReLU MLP with a skip).
``neighbour_sigma`` > 0 renders each plane as the Gaussian-weighted mean of the INR over the n
positions of a group width centred on it (paper eq. 3, "neighbouring-based inference").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

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


class FourierINR(nn.Module):
    """The MicroDiffusion paper's INR: Gaussian Fourier features (frozen) + a deep ReLU MLP."""

    def __init__(self, frequencies: int = 256, scale: float = 4.0, hidden: int = 64, layers: int = 8,
                 align_corners: bool = True, seed: int = 0) -> None:
        super().__init__()
        self.align_corners = align_corners
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("B", scale * torch.randn(3, frequencies, generator=gen))
        feats = 2 * frequencies
        self.skip = layers // 2
        dims = [feats] + [hidden] * (layers - 1)
        self.linears = nn.ModuleList(
            nn.Linear(d + (feats if i == self.skip else 0), hidden) for i, d in enumerate(dims))
        self.out = nn.Linear(hidden, 1)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        proj = 2 * np.pi * coords @ self.B
        enc = torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)
        h = enc
        for i, lin in enumerate(self.linears):
            if i == self.skip:
                h = torch.cat([h, enc], dim=1)
            h = torch.relu(lin(h))
        return self.out(h).squeeze(-1)


ENCODINGS = ("grid", "fourier")
#: Adam learning rates that fit each representation well (the grid's features are its own
#: parameters and take large steps; the deep MLP needs the usual 1e-3).
DEFAULT_LR = {"grid": 1e-2, "fourier": 1e-3}


def make_inr(encoding: str, z_nodes: int, height: int, width: int, align_corners: bool, seed: int) -> nn.Module:
    if encoding == "grid":
        return GridINR(z_nodes, height, width, align_corners=align_corners)
    if encoding == "fourier":
        return FourierINR(align_corners=align_corners, seed=seed)
    raise ValueError(f"unknown INR encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")


@dataclass
class FitReport:
    iteration: int
    total: int
    loss: float
    #: The model being fitted (for previews of its current rendering; do not train it elsewhere).
    model: Any = None


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
            yield FitReport(it + 1, iterations, value, model)
        if it - best_it > patience:
            yield FitReport(it + 1, it + 1, value, model)
            return


def fit_sparse(planes: np.ndarray, n: int, *, iterations: int = 600, lr: float | None = None, batch: int = 16384,
               seed: int = 0, device: str = "cpu", check_cancel: Callable[[], None] | None = None,
               encoding: str = "grid") -> Iterator[FitReport | nn.Module]:
    """Fit to the acquired planes (M, H, W) (values in about [0, 1]) at z = k*n; yields progress
    reports, then the fitted model."""
    dev = torch.device(device)
    m, h, w = planes.shape
    batch = min(batch, m * h * w)  # no point drawing more samples than there are measurements
    target = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)).to(dev)
    # z nodes at the acquired planes: with align_corners=True node k sits at k*n of the output.
    model = make_inr(encoding, m, h, w, True, seed).to(dev)
    zs, ys, xs = _axis(m, dev), _axis(h, dev), _axis(w, dev)

    def batch_loss(gen: torch.Generator) -> torch.Tensor:
        k = torch.randint(m, (batch,), generator=gen).to(dev)
        y = torch.randint(h, (batch,), generator=gen).to(dev)
        x = torch.randint(w, (batch,), generator=gen).to(dev)
        pred = model(torch.stack([zs[k], ys[y], xs[x]], dim=1))
        return F.mse_loss(pred, target[k, y, x])

    yield from _fit(model, batch_loss, iterations, lr or DEFAULT_LR[encoding], seed, check_cancel=check_cancel)
    yield model


def fit_projection(projections: np.ndarray, n: int, *, iterations: int = 600, lr: float | None = None, batch: int = 4096,
                   seed: int = 0, device: str = "cpu", check_cancel: Callable[[], None] | None = None,
                   encoding: str = "grid") -> Iterator[FitReport | nn.Module]:
    """Fit to M projections (M, H, W), each the mean of n planes (MicroDiffusion eq. 2)."""
    dev = torch.device(device)
    m, h, w = projections.shape
    batch = min(batch, m * h * w)
    depth = m * n
    target = torch.from_numpy(np.ascontiguousarray(projections, dtype=np.float32)).to(dev)
    # align_corners=False: z node k sits at the centre of group k (planes k*n .. k*n+n-1).
    model = make_inr(encoding, m, h, w, False, seed).to(dev)
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

    yield from _fit(model, batch_loss, iterations, lr or DEFAULT_LR[encoding], seed, check_cancel=check_cancel)
    yield model


def plane_z(model: nn.Module, z: float, depth: int) -> float:
    """Normalised depth of output plane ``z`` (fractional allowed) of ``depth`` in the model's convention."""
    if not model.align_corners:
        return (2 * z + 1) / depth - 1
    return 2 * z / (depth - 1) - 1 if depth > 1 else 0.0


def neighbour_weights(n: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Paper eq. (3): plane offsets of a group width centred on a plane and their Gaussian weights.

    Offset k of n is (k - (n+1)/2) planes; its weight exp(-(u_k)^2 / 2 sigma^2) with u_k the
    offset in group widths (the paper's k/n - 0.5, centred). sigma 0.2 gives the authors' code's
    weights for n = 6 ([0.05, 0.15, 0.3, 0.3, 0.15, 0.05]) to within 0.02. Normalised to sum 1.
    """
    offsets = np.arange(1, n + 1) - (n + 1) / 2
    q = np.exp(-((offsets / n) ** 2) / (2 * sigma ** 2))
    return offsets, q / q.sum()


def render_output_plane(model: nn.Module, z: int, depth: int, height: int, width: int, *, n: int = 1,
                        neighbour_sigma: float = 0.0) -> np.ndarray:
    """Output plane ``z`` of ``depth``, optionally by neighbouring-based inference (eq. 3)."""
    if neighbour_sigma <= 0 or n < 2:
        return render_plane(model, plane_z(model, z, depth), height, width)
    offsets, q = neighbour_weights(n, neighbour_sigma)
    out = np.zeros((height, width), np.float32)
    for d, wk in zip(offsets, q):
        zz = min(max(z + d, 0.0), depth - 1.0)  # clamp at the stack's ends (no extrapolation)
        out += wk * render_plane(model, plane_z(model, zz, depth), height, width)
    return out


@torch.no_grad()
def render_plane(model: nn.Module, z: float, height: int, width: int, rows_per_call: int = 64) -> np.ndarray:
    """One output plane at normalised depth ``z`` (H, W)."""
    dev = next(iter(model.parameters()), torch.empty(0)).device
    ys, xs = _axis(height, dev, model.align_corners), _axis(width, dev, model.align_corners)
    out = np.empty((height, width), np.float32)
    for y0 in range(0, height, rows_per_call):
        yy, xx = torch.meshgrid(ys[y0:y0 + rows_per_call], xs, indexing="ij")
        coords = torch.stack([torch.full_like(yy, z), yy, xx], dim=-1).reshape(-1, 3)
        out[y0:y0 + yy.shape[0]] = model(coords).view(yy.shape).cpu().numpy()
    return out
