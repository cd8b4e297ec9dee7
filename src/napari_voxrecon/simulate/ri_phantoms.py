"""Refractive-index phantoms for the ``diffraction`` task.

Three kinds, in absolute refractive index around a background medium (default water, 1.33):
- ``cell``: cells as smooth ellipsoids (cytoplasm +0.015-0.025 over the medium) holding a
  nucleus (+0.008-0.015 more), one to three nucleoli (+0.01-0.02 more) and organelles
  (mitochondria-like and lipid-droplet-like blobs, +0.01-0.05), the contrasts of live cells;
- ``tubes``: vessel-like tubes (the fluorescence phantoms' tube renderer, +0.01-0.03);
- ``tissue``: smaller cells (radii 1.5-2.6 µm, each axis ±30 %) of the same make-up at random depths and
  orientations, six to twelve per 12.8 µm cube (more in a larger volume, not larger ones; times
  ``density`` if given), crossed by vessel-like tubes.
Edges are smooth (a sigmoid over about one voxel), so the index is band-limited on its grid.
With ``irregular`` > 0 the outlines of cells and nuclei are no longer ellipsoids: their radius
varies by that fraction with a smooth random field (correlation length IRREGULAR_LENGTH_UM), so
they bulge and dent as real cells do; the rest of the phantom (where the cells are, their sizes
and contrasts) is the same as the ellipsoidal phantom of the same seed.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .phantoms import _random_rotation, _smooth_noise, clean_phantom

RI_PHANTOM_KINDS = ("cell", "tubes", "tissue")
DEFAULT_N_BACKGROUND = 1.33
#: tissue: edge (µm) of the cube that holds six to twelve cells (the 32 x 64 x 64 grid at 0.4 x 0.2 x 0.2 µm)
TISSUE_REFERENCE_UM = 12.8
TISSUE_MAX_CELLS = 400
#: correlation length (µm, the Gaussian's sigma) of the radius variations of irregular outlines
IRREGULAR_LENGTH_UM = 0.8
#: range of make_ri_phantom's tissue density (times six to twelve cells per TISSUE_REFERENCE_UM cube)
MIN_TISSUE_DENSITY, MAX_TISSUE_DENSITY = 0.25, 8.0


def _soft(inside: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Sigmoid of a signed 'inside' field (> 0 inside, in voxels)."""
    return 1.0 / (1.0 + np.exp(-np.clip(inside / width, -30, 30)))


def _ellipsoid(grid: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray, rot: np.ndarray, vox: np.ndarray,
               bumps: np.ndarray | None = None) -> np.ndarray:
    """Soft indicator of an ellipsoid (µm centre/radii, rotation rot), edge width ~1 voxel;
    ``bumps``: the relative change of its radius at each voxel (an irregular outline)."""
    pts = [(g * v - c) for g, v, c in zip(grid, vox, centre)]
    local = [sum(rot[i, j] * pts[j] for j in range(3)) for i in range(3)]
    r = np.sqrt(sum((l / rr) ** 2 for l, rr in zip(local, radii)))
    if bumps is not None:  # the outline sits where r = 1 + bumps; the floor keeps the radius positive (at least 30 %)
        r = r / np.maximum(1.0 + bumps, 0.3)
    edge_um = float(np.min(radii))
    return _soft((1 - r) * edge_um / float(vox.min()))


#: the relative radius changes of cell bodies and of nuclei, or None for ellipsoids
Bumps = Optional[tuple[np.ndarray, np.ndarray]]


def _cell(grid: tuple[np.ndarray, ...], vox: np.ndarray, rng: np.random.Generator, centre: np.ndarray, radii: np.ndarray,
          rot: np.ndarray, organelles: tuple[int, int] = (6, 16), bumps: Bumps = None) -> np.ndarray:
    """Δn of one cell: cytoplasm, nucleus, nucleoli and organelles inside an ellipsoid body;
    ``bumps``: the radius changes of the body and of the nucleus (irregular outlines)."""
    body_bumps, nucleus_bumps = bumps if bumps is not None else (None, None)
    body = _ellipsoid(grid, centre, radii, rot, vox, body_bumps)
    cell = rng.uniform(0.015, 0.025) * body
    n_radii = radii * rng.uniform(0.45, 0.6, 3)
    n_centre = centre + rng.uniform(-0.15, 0.15, 3) * radii
    nucleus = _ellipsoid(grid, n_centre, n_radii, rot, vox, nucleus_bumps)
    if bumps is not None:  # a dent of the body may cut into the nucleus: keep it inside
        nucleus = np.minimum(nucleus, body)
    cell += rng.uniform(0.008, 0.015) * nucleus
    for _ in range(int(rng.integers(1, 4))):  # nucleoli
        c = n_centre + rng.uniform(-0.5, 0.5, 3) * n_radii
        cell += rng.uniform(0.01, 0.02) * _ellipsoid(grid, c, np.full(3, rng.uniform(0.12, 0.25) * n_radii.min() + vox.max()), np.eye(3), vox)
    for _ in range(int(rng.integers(*organelles))):  # organelles in the cytoplasm
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        c = centre + direction * radii * rng.uniform(0.65, 0.9)
        size = rng.uniform(0.3, 0.8) + vox.max()
        r = np.array([size, size * rng.uniform(0.4, 1.0), size * rng.uniform(0.4, 1.0)])
        cell += rng.uniform(0.01, 0.05) * _ellipsoid(grid, c, r, _random_rotation(rng), vox) * body
    return cell.astype(np.float32)


def _cells(shape: tuple[int, int, int], vox: np.ndarray, rng: np.random.Generator, bumps: Bumps = None) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij", sparse=True)
    extent = np.array(shape) * vox
    dn = np.zeros(shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, 3))):
        radii = np.array([rng.uniform(0.3, 0.42) * extent[0], *rng.uniform(0.22, 0.36, 2) * extent[1:].min()])
        centre = extent * rng.uniform(0.35, 0.65, 3)
        rot = _random_rotation(rng) if rng.random() < 0.5 else np.eye(3)
        dn = np.maximum(dn, _cell(grid, vox, rng, centre, radii, rot, bumps=bumps))
    return dn


def tissue_cell_count(extent_um: np.ndarray, per_reference: float) -> int:
    """Cells in a tissue of this extent (z, y, x µm): a tissue has a density, not a count, so
    ``per_reference`` cells per TISSUE_REFERENCE_UM cube (their size is in µm too): a larger
    field holds more cells rather than larger ones."""
    n = per_reference * float(np.prod(extent_um)) / TISSUE_REFERENCE_UM ** 3
    return min(TISSUE_MAX_CELLS, max(1, int(round(n))))


def _tissue(shape: tuple[int, int, int], vox: np.ndarray, rng: np.random.Generator, bumps: Bumps = None,
            density: float = 1.0) -> np.ndarray:
    """Tissue: many smaller cells at every depth and orientation, crossed by vessel-like tubes
    (the paper's synthetic tissue: continuous and sparse structures). Unlike one or two large
    cells, no sum of axis-aligned planes describes it. ``density`` multiplies the cells per
    TISSUE_REFERENCE_UM cube (drawn after the base count, so 1 gives the phantom it always gave)."""
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij", sparse=True)
    extent = np.array(shape) * vox
    dn = np.zeros(shape, dtype=np.float32)
    for _ in range(tissue_cell_count(extent, density * int(rng.integers(6, 13)))):
        size = rng.uniform(0.12, 0.2) * TISSUE_REFERENCE_UM
        radii = size * rng.uniform(0.7, 1.3, 3)
        centre = extent * rng.uniform(0.1, 0.9, 3)
        dn = np.maximum(dn, _cell(grid, vox, rng, centre, radii, _random_rotation(rng), organelles=(2, 6), bumps=bumps))
    vessels = clean_phantom(shape, kind="tubes", rng=rng, voxel_size=tuple(vox))
    return np.maximum(dn, (rng.uniform(0.01, 0.02) * np.clip(vessels, 0, 1)).astype(np.float32))


def _tubes(shape: tuple[int, int, int], vox: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    density = clean_phantom(shape, kind="tubes", rng=rng, voxel_size=tuple(vox))
    return (rng.uniform(0.01, 0.03) * np.clip(density, 0, 1)).astype(np.float32)


def make_ri_phantom(shape: Sequence[int], kind: str = "cell", seed: int | None = 0,
                    voxel_size: Sequence[float] = (0.4, 0.2, 0.2), n_background: float = DEFAULT_N_BACKGROUND,
                    irregular: float = 0.0, density: float = 1.0) -> np.ndarray:
    """An absolute refractive-index volume (float32) of ``kind`` ('cell', 'tubes' or 'tissue').
    ``irregular`` (0 to 1; 0.25 is markedly lobed): the standard deviation of the relative radius
    changes of the cells' and nuclei's outlines (0: ellipsoids). ``density`` (tissue only, 0.25
    to 8): how many times the usual number of cells per volume (six to twelve per 12.8 µm cube)."""
    from ..errors import InputError

    if kind not in RI_PHANTOM_KINDS:
        raise InputError(f"unknown refractive-index phantom {kind!r}: choose {', '.join(RI_PHANTOM_KINDS)}.")
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) < 4:
        raise InputError(f"a phantom needs three sizes of at least 4 voxels (z, y, x), not {shape}.")
    irregular = float(irregular)
    if not 0.0 <= irregular <= 1.0:
        raise InputError(f"irregular must lie between 0 (ellipsoids) and 1, not {irregular}.")
    if irregular > 0 and kind == "tubes":
        raise InputError("irregular changes the outlines of cells and nuclei: use it with 'cell' or 'tissue', not 'tubes'.")
    density = float(density)
    if not MIN_TISSUE_DENSITY <= density <= MAX_TISSUE_DENSITY:
        raise InputError(f"density must lie between {MIN_TISSUE_DENSITY:g} and {MAX_TISSUE_DENSITY:g} times the usual "
                         f"cells per volume, not {density}.")
    if density != 1.0 and kind != "tissue":
        raise InputError(f"density sets how many cells a 'tissue' holds; {kind!r} has a fixed make-up: leave it at 1.")
    vox = np.asarray(voxel_size, dtype=np.float64)
    rng = np.random.default_rng(seed)
    bumps = None
    if irregular > 0:  # from a stream of its own, so the layout matches the ellipsoidal phantom of this seed
        brng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        sigma = IRREGULAR_LENGTH_UM / vox  # unit-std fields: the relative radius change of each outline
        bumps = (irregular * _smooth_noise(shp, sigma, brng), irregular * _smooth_noise(shp, sigma, brng))
    if kind == "cell":
        dn = _cells(shp, vox, rng, bumps)
    elif kind == "tubes":
        dn = _tubes(shp, vox, rng)
    else:
        dn = _tissue(shp, vox, rng, bumps, density)
    return (np.float32(n_background) + dn).astype(np.float32)
