"""``voxrecon simulate diffraction``: images of fluorescent point sources seen through a sample.

From an absolute refractive-index volume and the optics, K source positions are drawn (below
the sample, or inside its lower half, laterally within the central part of the field of view
so their light crosses the sample), and the multi-slice model (``physics.wave_optics``) gives
one intensity image per source. Images are scaled so the brightest is 1, then optionally
corrupted by Poisson-Gaussian noise of relative level ``noise_level``.

SOURCES (the architecture doc's contract) is a JSON list of (z, y, x) positions in µm in the
RI grid's frame; ``optics.json`` is ``physics.Optics``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..physics.optics import Optics, read_json_file

#: Lateral margin (pixels) added around the volume while simulating, so waves do not wrap.
SIMULATION_PAD = 16
PLACEMENTS = ("below", "inside")


def draw_sources(shape: Sequence[int], optics: Optics, views: int, placement: str = "below",
                 seed: int | None = 0, below: float = 2.0, spread: float = 0.6) -> np.ndarray:
    """(K, 3) source positions (z, y, x) µm: ``below`` µm under slab 0, or in the lower half of
    the volume (``inside``), laterally uniform within the central ``spread`` of the field."""
    if placement not in PLACEMENTS:
        raise InputError(f"unknown source placement {placement!r}: choose {' or '.join(PLACEMENTS)}.")
    if views < 1:
        raise InputError(f"--views must be at least 1, not {views}.")
    d, h, w = (int(s) for s in shape)
    dz, dy, dx = optics.voxel_size
    rng = np.random.default_rng(seed)
    ys = (h - 1) * dy * (0.5 + spread * (rng.random(views) - 0.5))
    xs = (w - 1) * dx * (0.5 + spread * (rng.random(views) - 0.5))
    if placement == "below":
        zs = np.full(views, -below)
    else:
        zs = rng.uniform(0.0, (d - 1) * dz / 2, views)
    return np.stack([zs, ys, xs], axis=1).astype(np.float32)


def simulate_diffraction(ri: np.ndarray, optics: Optics, sources: np.ndarray, noise_level: float = 0.0,
                         seed: int | None = 0, pad: int = SIMULATION_PAD) -> np.ndarray:
    """(K, H', W') float32 images of ``sources`` through the absolute index volume ``ri``."""
    import torch

    from ..physics.wave_optics import forward_images
    from .degrade import poisson_gaussian_noise

    ri = np.asarray(ri)
    if ri.ndim != 3 or ri.size == 0:
        raise InputError(f"the refractive-index volume must be one non-empty 3D stack (z, y, x), not shape {ri.shape}.")
    if not np.isfinite(ri).all():
        raise InputError("the refractive-index volume holds NaN or infinite values.")
    if ri.min() < 1 or ri.max() > 3:
        raise InputError(f"the volume's values ({ri.min():.3g}..{ri.max():.3g}) are not absolute refractive indices "
                         "(expected about 1.3-1.6): give n, not Δn or fluorescence.")
    dn = torch.from_numpy(np.ascontiguousarray(ri, dtype=np.float32) - np.float32(optics.n_background))
    with torch.no_grad():
        images = forward_images(dn, torch.from_numpy(np.asarray(sources, dtype=np.float32)), optics, pad=pad,
                                view_chunk=4).numpy()
    images = images / max(float(images.max()), 1e-30)
    if noise_level > 0:
        images = poisson_gaussian_noise(images, float(noise_level), np.random.default_rng(seed))
    return images.astype(np.float32)


def write_sources(path: str | os.PathLike[str], sources: np.ndarray) -> Path:
    path = Path(path)
    path.write_text(json.dumps([[round(float(v), 6) for v in s] for s in np.asarray(sources)], indent=1) + "\n")
    return path


def read_sources(path: str | os.PathLike[str]) -> np.ndarray:
    """(K, 3) positions from a SOURCES file, with a clear message for anything else."""
    data = read_json_file(path, "sources file")
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"sources file {path} must be a list of [z, y, x] positions in µm.") from err
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise InputError(f"sources file {path} must be a non-empty list of [z, y, x] positions in µm, not shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise InputError(f"sources file {path} holds non-finite positions.")
    return arr.astype(np.float32)
