"""``voxrecon simulate diffraction``: images of fluorescent point sources seen through a sample.

From an absolute refractive-index volume and the optics, K source positions are drawn (below
the sample, or inside its lower half, laterally within the central part of the field of view
so their light crosses the sample), and the multi-slice model (``physics.wave_optics``) gives
one intensity image per source. Images are scaled so the brightest is 1, then optionally
corrupted by Poisson-Gaussian noise of relative level ``noise_level``.

Real fluorescence is not the coherent point source the model assumes (the NVP paper's "domain
gap", which its coherence mask addresses). ``PartialCoherence`` simulates that gap: an emission
band (intensities summed over wavelengths), an extended emitter (intensities summed over points
spread around the source: spatially incoherent) and an incoherent haze of out-of-focus
fluorescence added to every image. Reconstruction still assumes coherence; the benchmark measures
what that costs and what the coherence mask (``models.diffraction_fit``) wins back.

SOURCES (the architecture doc's contract) is a JSON list of (z, y, x) positions in µm in the
RI grid's frame; ``optics.json`` is ``physics.Optics``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..physics.coverage import voxels_seen
from ..physics.optics import Optics, read_json_file

#: Lateral margin (pixels) added around the volume while simulating, so waves do not wrap.
SIMULATION_PAD = 16
PLACEMENTS = ("below", "inside")


@dataclass(frozen=True)
class PartialCoherence:
    """How far the simulated fluorescence is from a coherent point source (all 0: coherent)."""

    bandwidth: float = 0.0  # µm, full width of the emission band (sampled at ``wavelengths`` wavelengths)
    source_size: float = 0.0  # µm, standard deviation of the emitter's extent per axis
    haze: float = 0.0  # mean of the incoherent background, relative to the brightest image's peak
    wavelengths: int = 5
    points: int = 7  # emitter points (the source itself and points-1 around it)

    @property
    def coherent(self) -> bool:
        return self.bandwidth <= 0 and self.source_size <= 0

    def check(self) -> None:
        if min(self.bandwidth, self.source_size, self.haze) < 0 or self.wavelengths < 1 or self.points < 1:
            raise InputError(f"partial coherence needs bandwidth, source size and haze >= 0, not {self}.")


#: A plausible real acquisition: a 30 nm emission band, a 0.1 µm emitter, a haze of 5 % of the peak.
TYPICAL_PARTIAL_COHERENCE = PartialCoherence(bandwidth=0.03, source_size=0.1, haze=0.05)


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
                         seed: int | None = 0, pad: int = SIMULATION_PAD,
                         coherence: PartialCoherence | None = None) -> np.ndarray:
    """(K, H', W') float32 images of ``sources`` through the absolute index volume ``ri``
    (coherent point sources unless ``coherence`` says otherwise)."""
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
    src = np.asarray(sources, dtype=np.float32)
    pc = coherence or PartialCoherence()
    pc.check()
    rng = np.random.default_rng(None if seed is None else seed + 1)
    lams = [optics.wavelength] if pc.bandwidth <= 0 else optics.wavelength + pc.bandwidth * np.linspace(-0.5, 0.5, pc.wavelengths)
    offsets = np.zeros((1, 3), np.float32)
    if pc.source_size > 0:
        offsets = np.concatenate([offsets, rng.normal(0, pc.source_size, (pc.points - 1, 3)).astype(np.float32)])
    images = 0.0
    with torch.no_grad():
        # mutually incoherent wavelengths and emitter points: their intensities add
        for lam in lams:
            for off in offsets:
                images = images + forward_images(dn, torch.from_numpy(src + off), replace(optics, wavelength=float(lam)),
                                                 pad=pad, view_chunk=4).numpy()
    images = images / max(float(images.max()), 1e-30)
    if pc.haze > 0:
        images = images + _haze(images.shape, pc.haze, rng)
        images = images / float(images.max())
    if noise_level > 0:
        images = poisson_gaussian_noise(images, float(noise_level), np.random.default_rng(seed))
    return images.astype(np.float32)


def _haze(shape: tuple[int, ...], level: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth incoherent background per image (out-of-focus fluorescence): mean ``level``,
    varying by about ±50 % over a quarter of the field."""
    from scipy.ndimage import gaussian_filter

    k, h, w = shape
    out = np.empty(shape, np.float32)
    for i in range(k):
        f = gaussian_filter(rng.random((h, w)), max(h, w) / 8, mode="wrap")
        f = (f - f.min()) / max(float(f.max() - f.min()), 1e-12)
        out[i] = level * (0.5 + f) / float(np.mean(0.5 + f))
    return out


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


def check_source_geometry(sources: np.ndarray, grid_shape: tuple[int, int, int], optics: Optics,
                          what: str = "sources") -> None:
    """Refuse positions the fit cannot use, naming the first offending source.

    Light travels towards +z through the grid, so a source above the top slab never crosses the
    sample (the fit would silently move it down). A source more than a field's width beside the
    grid is almost surely in the wrong unit (pixels for µm) or axis order (x, y, z for z, y, x),
    and so are sources none of whose acceptance cones reaches the grid."""
    voxel_size = optics.voxel_size
    top = (grid_shape[0] - 1) * voxel_size[0]
    for i, (z, y, x) in enumerate(np.asarray(sources, dtype=np.float64)):
        if z > top + 1e-4:
            raise InputError(f"{what}: source {i} lies at z = {z:.3g} µm, above the top of the index volume "
                             f"(z = {top:.3g} µm for {grid_shape[0]} planes of {voxel_size[0]:g} µm): light travels "
                             "towards +z, so the sources must lie below or inside the sample. Check the axis order "
                             "(z, y, x) and --depth.")
        for name, v, n, d in (("y", y, grid_shape[1], voxel_size[1]), ("x", x, grid_shape[2], voxel_size[2])):
            width = (n - 1) * d
            if not -width - d <= v <= 2 * width + d:
                raise InputError(f"{what}: source {i} lies at {name} = {v:.4g} µm, more than the field's width "
                                 f"beside it (the field spans {name} = 0 to {width:.3g} µm): positions are "
                                 "(z, y, x) in µm from the first voxel's centre; was the file written in pixels "
                                 "or in another axis order?")
    if not voxels_seen(grid_shape, sources, optics).any():
        raise InputError(f"{what}: no source's light cone (NA {optics.na:g}) reaches the index volume, so the images "
                         "say nothing about it: positions are (z, y, x) in µm from the first voxel's centre, the "
                         "sources below the sample; check the axis order and units.")
