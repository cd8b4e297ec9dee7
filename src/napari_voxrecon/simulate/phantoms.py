"""Procedural fluorescence-microscopy phantoms: the base training data of every model.

A phantom is built in two stages, as a microscope sees a sample:

1. ``clean_phantom`` draws the *structure*, the fluorophore density in the sample, on the voxel
   grid. Sizes are physical (micrometres) wherever the biology fixes them (nuclei, cells, spines,
   vesicles), so the same kind looks right at 0.1 um and at 0.5 um voxels; tube radii are in
   lateral voxels (1-4), as the brief for vessels/dendrites asks.
   Kinds (``PHANTOM_KINDS``):

   - ``tubes``: vessel / dendrite / axon networks: smooth random curves with momentum, branching
     with Murray-like radius decrease, radius modulation, varicosities/boutons and spines;
   - ``nuclei``: DNA-stained nuclei: flattened (monolayer) or round (tissue) ellipsoids with
     irregular outlines, chromatin texture, a brighter rim, dark nucleoli, bright chromocentres
     and the occasional mitotic figure;
   - ``membranes``: cell outlines: the faces of a warped 3D Voronoi tessellation, with gaps;
   - ``puncta``: diffraction-limited vesicles with an inhomogeneous density, plus a few larger
     blobs;
   - ``mixed``: a sum of two or three of those, with random weights.

2. ``make_phantom`` images the structure: illumination falloff (depth attenuation, vignetting),
   an anisotropic Gaussian PSF (``psf.gaussian_psf_sigmas`` with a random objective), out-of-focus
   haze, a smooth background / autofluorescence, normalisation to about [0, 1], and optional
   Poisson-Gaussian noise (``degrade.poisson_gaussian_noise``, the one noise model of the
   package).

Every random choice comes from one ``numpy.random.Generator``, so a seed fixes the phantom.
Everything is vectorised: tubes are rendered from centreline samples with a Euclidean distance
transform on a half-resolution grid (one per radius class) and exact distances to the local
tangent line; membranes from a 4-nearest-seed query on a half-resolution grid, refined with
exact bisector distances only near the faces; nuclei in their own bounding boxes.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .degrade import poisson_gaussian_noise
from .psf import apply_psf, gaussian_psf_sigmas

PHANTOM_KINDS: tuple[str, ...] = ("tubes", "nuclei", "membranes", "puncta", "mixed")

#: Voxel size (z, y, x) in micrometres of the confocal nuclei sample (cells3d), the default.
DEFAULT_VOXEL_SIZE: tuple[float, float, float] = (0.29, 0.26, 0.26)

Shape3 = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_shape_vox(shape: Sequence[int], voxel_size: Sequence[float]) -> tuple[Shape3, np.ndarray]:
    if len(shape) != 3 or min(int(s) for s in shape) < 1:
        raise ValueError(f"shape must be three positive sizes (Z, Y, X), got {tuple(shape)}.")
    if len(voxel_size) != 3 or min(float(v) for v in voxel_size) <= 0:
        raise ValueError(f"voxel_size must be three positive sizes in um (z, y, x), got {tuple(voxel_size)}.")
    return (int(shape[0]), int(shape[1]), int(shape[2])), np.asarray(voxel_size, dtype=np.float64)


def _smooth_noise(shape: Shape3, sigma_vox: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field with zero mean, unit std and correlation length ``sigma_vox``.

    Large sigmas are generated on a grid coarser by up to sigma/2 and linearly upsampled: the
    field is smooth at that scale anyway, and it makes a low-frequency field nearly free.
    """
    from scipy import ndimage

    factors = [max(1, int(s // 2)) for s in sigma_vox]
    coarse_shape = [n // f + 3 for n, f in zip(shape, factors)]
    coarse = rng.standard_normal(coarse_shape, dtype=np.float32)
    coarse = ndimage.gaussian_filter(coarse, [s / f for s, f in zip(sigma_vox, factors)], mode="wrap")
    field = _upsample_linear(coarse, factors, shape)
    field = field - field.mean()
    return (field / (field.std() + 1e-12)).astype(np.float32)


def _upsample_linear(a: np.ndarray, factors: Sequence[int], shape: Shape3) -> np.ndarray:
    """Separable linear interpolation of ``a`` to ``shape``, sample k of ``a`` landing on voxel
    k * factor (an order of magnitude faster than ``ndimage.zoom`` for this job)."""
    for ax, (f, n) in enumerate(zip(factors, shape)):
        if f == 1:
            a = np.take(a, np.arange(n), axis=ax)
            continue
        pos = np.arange(n) / f
        i0 = np.minimum(np.floor(pos).astype(np.int64), a.shape[ax] - 1)
        i1 = np.minimum(i0 + 1, a.shape[ax] - 1)
        t = (pos - i0).astype(np.float32).reshape([-1 if k == ax else 1 for k in range(a.ndim)])
        a0 = np.take(a, i0, axis=ax)
        a = a0 + (np.take(a, i1, axis=ax) - a0) * t
    return a


def _smooth_noise_1d(n: int, sigma: float, rng: np.random.Generator, dims: int = 1) -> np.ndarray:
    """(n, dims) smooth noise along a curve, unit std in expectation (not re-normalised, so a
    short curve keeps the statistics of a long one).

    Drawn on a grid of spacing sigma/4 and linearly interpolated: the same field as filtering
    n white samples, for a cost independent of sigma."""
    from scipy.ndimage import gaussian_filter1d

    sigma = max(float(sigma), 0.5)
    stride = max(1.0, sigma / 4)
    m = int(math.ceil((n - 1) / stride)) + 2
    s_c = sigma / stride
    white = rng.standard_normal((m, dims))
    # Filtered white noise has std 1 / sqrt(2 sqrt(pi) sigma): undo it.
    coarse = gaussian_filter1d(white, s_c, axis=0, mode="reflect") * math.sqrt(2 * math.sqrt(math.pi) * s_c)
    if stride == 1.0:
        return coarse[:n]
    t = np.arange(n) / stride
    i0 = np.minimum(t.astype(np.int64), m - 2)
    f = (t - i0)[:, None]
    return coarse[i0] * (1 - f) + coarse[i0 + 1] * f


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation (QR of a Gaussian matrix with the sign fix of Mezzadri 2007)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _rotation_about_z(theta: float, tilt: float, rng: np.random.Generator) -> np.ndarray:
    """Rotation by ``theta`` in the YX plane followed by a small tilt out of it (axes z, y, x)."""
    c, s = math.cos(theta), math.sin(theta)
    rz = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)
    axis = rng.standard_normal(3)
    axis[0] = 0.0
    axis /= np.linalg.norm(axis) + 1e-12
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rt = np.eye(3) + math.sin(tilt) * k + (1 - math.cos(tilt)) * k @ k  # Rodrigues' formula
    return rt @ rz


def _random_unit(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    v = rng.standard_normal((3,) if n is None else (n, 3))
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-12)


def _normalise(vol: np.ndarray, q: float = 99.95) -> np.ndarray:
    """Scale so that the ``q``-th percentile is about 1, never clipping.

    Highlights above it are kept (bright puncta, a mitotic cell: real data has them too), but
    the scale is at least 0.4 x the maximum, so that the output stays below 2.5 even when the
    structure is so sparse that the percentile falls in the background.
    """
    flat = vol.ravel()
    # A regular subsample of ~1M voxels estimates the percentile as well, for less time.
    hi = max(float(np.percentile(flat[:: max(1, flat.size // 1_000_000)], q)), 0.4 * float(vol.max()))
    return (vol / hi).astype(np.float32) if hi > 0 else vol.astype(np.float32)


def _splat(shape: Shape3, idx_f: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Trilinear splatting of point sources at fractional voxel positions ``idx_f`` (n, 3).

    Sub-voxel positions matter: after the PSF a point source must look the same wherever it
    sits relative to the grid, or a model learns the grid.
    """
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    base = np.floor(idx_f).astype(np.int64)
    frac = idx_f - base
    for corner in range(8):
        off = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
        pos = base + off
        w = weights * np.prod(np.where(off == 1, frac, 1 - frac), axis=1)
        ok = np.all((pos >= 0) & (pos < np.array(shape)), axis=1)
        flat = np.ravel_multi_index(tuple(pos[ok].T), shape)
        out += np.bincount(flat, weights=w[ok], minlength=out.size)
    return out.reshape(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# tubes: vessels, dendrites with spines, beaded axons
# --------------------------------------------------------------------------------------------


class _Curves:
    """Centreline samples of all tubes: position (um), radius (um), brightness, hollow flag."""

    def __init__(self) -> None:
        self.pts: list[np.ndarray] = []
        self.rad: list[np.ndarray] = []
        self.amp: list[np.ndarray] = []
        self.hollow: list[np.ndarray] = []
        self.tan: list[np.ndarray] = []

    def add(self, pts: np.ndarray, rad: np.ndarray, amp: np.ndarray, hollow: bool = False,
            tan: np.ndarray | None = None) -> None:
        """``tan``: unit tangents (n, 3), zero for isolated points (spine heads)."""
        self.pts.append(pts)
        self.tan.append(np.zeros_like(pts) if tan is None else np.broadcast_to(tan, pts.shape))
        self.rad.append(np.broadcast_to(rad, (len(pts),)))
        self.amp.append(np.broadcast_to(amp, (len(pts),)))
        self.hollow.append(np.full(len(pts), hollow))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self.pts:
            e = np.zeros(0)
            return np.zeros((0, 3)), e, e, e.astype(bool), np.zeros((0, 3))
        return (np.concatenate(self.pts), np.concatenate(self.rad), np.concatenate(self.amp),
                np.concatenate(self.hollow), np.concatenate(self.tan))


def _tube_style(rng: np.random.Generator, lat: float) -> dict[str, Any]:
    """Parameters of one tube population. Lengths in um; radii from 1-4 lateral voxels."""
    style = str(rng.choice(["vessels", "dendrites", "axons"], p=[0.4, 0.4, 0.2]))
    if style == "vessels":  # blood vessels / lymphatics: thick, branching, gently curved
        return dict(style=style, r0=rng.uniform(2.0, 4.0) * lat, roots=rng.uniform(3, 8),
                    branch_every=rng.uniform(8, 20), depth=3, tort=rng.uniform(0.2, 0.6), persist=rng.uniform(15, 60),
                    child_len=(0.4, 1.0),
                    corr=rng.uniform(8, 25), hollow=rng.random() < 0.3, spines=0.0,
                    beads=rng.uniform(0.0, 0.15), bead_every=6.0)
    if style == "dendrites":  # neurons: medium radius, sparse branching, spines, varicosities
        # shaft radius 0.35-0.9 um where the voxel allows, always 1-4 lateral voxels
        return dict(style=style, r0=float(np.clip(rng.uniform(0.35, 0.9), 1.0 * lat, 4.0 * lat)), roots=rng.uniform(2, 6),
                    branch_every=rng.uniform(15, 50), depth=2, tort=rng.uniform(0.25, 0.8), persist=rng.uniform(10, 40),
                    child_len=(0.2, 0.6),
                    corr=rng.uniform(4, 12), hollow=False, spines=rng.uniform(0.2, 1.5),
                    beads=rng.uniform(0.0, 0.4), bead_every=rng.uniform(2, 5))
    # axons: thin, long, tortuous, beaded with bright boutons, rarely branching
    return dict(style=style, r0=rng.uniform(0.7, 1.2) * lat, roots=rng.uniform(5, 16),
                branch_every=rng.uniform(60, 200), depth=1, tort=rng.uniform(0.3, 1.0), persist=rng.uniform(8, 40),
                child_len=(0.3, 0.8),
                corr=rng.uniform(3, 10), hollow=False, spines=0.0,
                beads=rng.uniform(0.6, 1.5), bead_every=rng.uniform(3, 8))


def _bumps(s: np.ndarray, every: float, width: float, rng: np.random.Generator) -> np.ndarray:
    """Sum of Gaussian bumps at random arc positions (mean spacing ``every`` um)."""
    if len(s) == 0 or s[-1] <= 0:
        return np.zeros_like(s)
    n = rng.poisson(s[-1] / every)
    if n == 0:
        return np.zeros_like(s)
    centres = rng.uniform(0, s[-1], n)
    heights = rng.uniform(0.5, 1.0, n)
    # dense (n_bumps, n_samples): a few tens of bumps times a few thousand samples at most
    return (heights[:, None] * np.exp(-0.5 * ((s[None, :] - centres[:, None]) / width) ** 2)).sum(0)


def _tubes(shape: Shape3, vox: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ext = np.asarray(shape) * vox
    lat = float(min(vox[1], vox[2]))
    step = 0.5 * float(vox.min())  # centreline sampling: at most half a voxel between samples
    diag = float(np.linalg.norm(ext))
    curves = _Curves()
    # One or two populations (e.g. vessels with a few axons running past).
    n_pop = 1 if rng.random() < 0.7 else 2
    area_scale = (shape[1] * shape[2]) / (128.0 * 128.0)
    for _ in range(n_pop):
        p = _tube_style(rng, lat)
        n_roots = max(2, int(round(p["roots"] * math.sqrt(area_scale) * rng.uniform(0.7, 1.3))))
        n_roots = min(n_roots, 40)
        branch_amp = rng.uniform(0.5, 1.0)
        # Tubes crossing a thin slab at a steep angle are just dots in it; real stacks of
        # neurites/vessels are chosen so that much of the network lies in them.
        lift = rng.uniform(0.15, 1.0) * min(1.0, ext[0] / max(ext[1], ext[2]) * 2)
        # stack of (start point, direction, length, radius, depth, start-arc to skip)
        stack: list[tuple[np.ndarray, np.ndarray, float, float, int, float]] = []  # a FIFO queue
        for _ in range(n_roots):
            p0 = rng.uniform(0, 1, 3) * ext
            d0 = _random_unit(rng)
            d0[0] *= lift  # mostly lateral when the stack is thin (what a z-stack keeps)
            d0 /= np.linalg.norm(d0)
            length = diag * rng.uniform(0.7, 1.3)  # most roots cross the whole field
            r0 = p["r0"] * rng.uniform(0.8, 1.2)
            stack.append((p0, d0, length, r0, 0, 0.0))
            stack.append((p0, -d0, length, r0, 0, 0.0))
        # Breadth first with a budget: every root is drawn before any grandchild, and a deep
        # tree cannot grow exponentially.
        budget = int(min(400, 40 * area_scale + 4 * len(stack)))
        while stack and budget > 0:
            p0, d0, length, r0, depth, skip = stack.pop(0)
            budget -= 1
            n = max(2, int(length / step))
            corr = p["corr"] / step
            # Heading: a persistent random walk of the direction (drifts ~1 rad per
            # persistence length), plus a wiggle of correlation length `corr` (tortuosity).
            kick = rng.standard_normal((n, 3)) * math.sqrt(step / p["persist"])
            kick[:, 0] *= lift
            heading = d0[None, :] + np.cumsum(kick, axis=0)
            heading /= np.linalg.norm(heading, axis=1, keepdims=True)
            wiggle = p["tort"] * _smooth_noise_1d(n, corr, rng, 3)
            wiggle[:, 0] *= lift
            dirs = heading + wiggle
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            pts = p0[None, :] + np.cumsum(dirs * step, axis=0)
            s = np.arange(1, n + 1) * step
            taper = 1.0 - 0.3 * s / s[-1]
            rad = r0 * taper * np.exp(0.12 * _smooth_noise_1d(n, 5.0 / step, rng)[:, 0])
            amp = branch_amp * rng.uniform(0.6, 1.0) * np.exp(0.2 * _smooth_noise_1d(n, 4.0 / step, rng)[:, 0])
            if p["beads"] > 0:  # varicosities / boutons: wider and brighter
                width = max(0.4, 1.2 * r0)
                b = _bumps(s, p["bead_every"] * rng.uniform(0.7, 1.3), width, rng)
                rad = rad * (1 + p["beads"] * b)
                amp = amp * (1 + 0.5 * p["beads"] * b)
            rad = np.maximum(rad, 0.6 * lat)
            keep = s > skip  # a child starts at its parent's surface, not inside it
            curves.add(pts[keep], rad[keep], amp[keep], p["hollow"] and r0 > 2.0 * lat, dirs[keep])
            # children
            if depth < p["depth"]:
                n_child = rng.poisson(s[-1] / p["branch_every"])
                for i in rng.integers(int(0.1 * n), max(int(0.9 * n), int(0.1 * n) + 1), n_child):
                    if np.any(pts[i] < 0) or np.any(pts[i] > ext):
                        continue  # a branch off-screen would be invisible work
                    perp = _random_unit(rng)
                    perp -= perp.dot(dirs[i]) * dirs[i]
                    perp /= np.linalg.norm(perp) + 1e-12
                    ang = math.radians(rng.uniform(30, 80))
                    dc = math.cos(ang) * dirs[i] + math.sin(ang) * perp
                    rc = rad[i] / (1 + p["beads"]) * rng.uniform(0.55, 0.85)  # Murray: r_c ~ 0.79 r_p
                    if rc < 0.6 * lat:
                        continue
                    lc = min(length, diag) * rng.uniform(*p["child_len"])
                    stack.append((pts[i], dc, lc, rc, depth + 1, rad[i]))
            # spines (dendrites): neck from the surface outwards, then a head
            if p["spines"] > 0:
                _add_spines(curves, pts, dirs, rad, amp, s, p["spines"], lat, step, rng)
    return _render_tubes(shape, vox, curves, lat)


def _add_spines(curves: _Curves, pts: np.ndarray, dirs: np.ndarray, rad: np.ndarray, amp: np.ndarray,
                s: np.ndarray, density: float, lat: float, step: float, rng: np.random.Generator) -> None:
    """Dendritic spines: 0.5-2 um necks ending in a head about half the shaft radius; some stubby (no neck) and
    some filopodia (long, no head), as seen in two-photon images of spiny dendrites."""
    n = rng.poisson(density * s[-1])
    if n == 0:
        return
    at = rng.integers(0, len(pts), n)
    out = _random_unit(rng, n)
    out -= (out * dirs[at]).sum(1, keepdims=True) * dirs[at]
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
    kind = rng.choice(3, n, p=[0.7, 0.15, 0.15])  # 0 mushroom/thin, 1 stubby, 2 filopodium
    neck = np.where(kind == 1, 0.0, rng.uniform(0.5, 2.0, n) * np.where(kind == 2, 1.5, 1.0))
    # head radius ~0.2-0.45 um on a 0.35-0.9 um shaft: scale it with the shaft, which is
    # clipped to the voxel grid, so heads never dwarf the dendrite.
    head = np.where(kind == 2, 0.0, np.maximum(rng.uniform(0.45, 0.8, n) * rad[at], 0.6 * lat))
    neck_r = max(0.5 * lat, 0.1)
    m = int(math.ceil(max(neck.max(), step) / step)) + 1
    t = np.linspace(0, 1, m)[None, :, None]
    base = pts[at] + out * rad[at, None]
    neck_pts = base[:, None, :] + out[:, None, :] * neck[:, None, None] * t
    has_neck = (neck > 0)
    a = amp[at] * rng.uniform(0.6, 1.3, n)
    curves.add(neck_pts[has_neck].reshape(-1, 3), np.float64(neck_r),
               np.repeat(0.7 * a[has_neck], m), tan=np.repeat(out[has_neck], m, axis=0))
    has_head = head > 0
    head_c = base + out * (neck + 0.6 * head)[:, None]
    curves.add(head_c[has_head], head[has_head], a[has_head])


def _render_tubes(shape: Shape3, vox: np.ndarray, curves: _Curves, lat: float) -> np.ndarray:
    """Tube intensity from the centreline samples.

    Centreline samples are rasterised into a grid twice as coarse and
    ``distance_transform_edt`` (physical voxel size as sampling) finds, for every cell, the
    nearest sample: its owner. At full resolution the distance of a voxel to its owner's
    centreline is the distance to the owner's tangent line (so a coarse owner that sits half a
    cell along the tube costs nothing), clamped to a point distance beyond half a cell along it
    (tube ends, spine heads). The nearest sample is the wrong owner where a thin tube runs
    inside a thick one, so thin and thick samples get one transform each, combined by max.
    """
    from scipy import ndimage

    pts, rad, amp, hollow, tan = curves.arrays()
    out = np.zeros(shape, dtype=np.float32)
    if len(pts) == 0:
        return out
    # Coarsen an axis by 2 only where its voxels are not already much coarser than the finest.
    fac = np.array([2 if (v <= 1.5 * vox.min() and n >= 16) else 1 for v, n in zip(vox, shape)])
    cshape = tuple(int(math.ceil(n / f)) for n, f in zip(shape, fac))
    idx = np.floor(pts / (vox * fac) + 0.5 / fac).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(cshape)), axis=1)
    pts, rad, amp, hollow, tan, idx = (x[inside] for x in (pts, rad, amp, hollow, tan, idx))
    grid = [np.arange(n, dtype=np.float32)[tuple(slice(None) if a == i else None for a in range(3))] * np.float32(vox[i])
            for i, n in enumerate(shape)]
    w = np.float32(0.3 * lat)  # edge softness: anti-aliasing, a third of a voxel
    h = np.float32(0.5 * np.linalg.norm(fac * vox) + float(vox.min()))
    edges = np.array([0.0, 1.6, np.inf]) * lat
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (rad >= lo) & (rad < hi)
        if not sel.any():
            continue
        # Largest radius last, so it owns a cell shared by several samples.
        order = np.argsort(rad[sel], kind="stable")
        p_i, r_i, a_i, h_i, t_i, ix = (x[sel][order] for x in (pts, rad, amp, hollow, tan, idx))
        ids = np.full(cshape, -1, dtype=np.int32)
        ids[ix[:, 0], ix[:, 1], ix[:, 2]] = np.arange(len(p_i), dtype=np.int32)
        near = ndimage.distance_transform_edt(ids < 0, sampling=vox * fac, return_distances=False,
                                              return_indices=True)
        nid = ids[near[0], near[1], near[2]]
        del near
        for ax, f in enumerate(fac):
            if f > 1:
                nid = np.repeat(nid, f, axis=ax)
        nid = nid[: shape[0], : shape[1], : shape[2]]
        p_n = p_i.astype(np.float32)[nid]
        t_n = t_i.astype(np.float32)[nid]
        dz, dy, dx = grid[0] - p_n[..., 0], grid[1] - p_n[..., 1], grid[2] - p_n[..., 2]
        del p_n
        along = dz * t_n[..., 0] + dy * t_n[..., 1] + dx * t_n[..., 2]
        perp2 = np.maximum(dz * dz + dy * dy + dx * dx - along * along, 0)
        del t_n, dz, dy, dx
        d = np.sqrt(perp2 + np.maximum(np.abs(along) - h, 0) ** 2)
        r_n = r_i.astype(np.float32)[nid]
        solid = 0.5 * (1.0 - np.tanh((d - r_n) / w))
        if h_i.any():  # labelled vessel wall (e.g. CD31/lectin): bright ring, dim lumen
            t = np.maximum(np.float32(0.6 * lat), 0.15 * r_n)
            wall = np.exp(-0.5 * ((d - r_n) / t) ** 2) + 0.25 * solid
            solid = np.where(h_i[nid], wall, solid)
        np.maximum(out, solid * a_i.astype(np.float32)[nid], out=out)
    return out


# --------------------------------------------------------------------------------------------
# nuclei
# --------------------------------------------------------------------------------------------


def _nuclei(shape: Shape3, vox: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ext = np.asarray(shape) * vox
    lat = float(min(vox[1], vox[2]))
    monolayer = rng.random() < 0.55  # adherent culture (flat nuclei in one layer) vs tissue
    diam = rng.uniform(6.0, 17.0)  # mean lateral diameter, um (cultured cells ~ 10-17, tissue ~ 6-10)
    flat = rng.uniform(0.35, 0.6) if monolayer else rng.uniform(0.7, 1.0)  # axial / lateral
    elong = rng.uniform(0.0, 0.35)  # max in-plane elongation
    touch = rng.uniform(0.8, 1.1)  # < 1: some nuclei touch / slightly overlap
    packing = rng.uniform(0.35, 0.9)

    # Rejection sampling of centres (dart throwing) in a metric where nuclei are ~ spheres.
    metric = np.array([1.0 / flat, 1.0, 1.0])
    lo, hi = -0.3 * diam * np.ones(3), ext + 0.3 * diam
    if monolayer:
        zc = rng.uniform(0.3, 0.7) * ext[0]
        lo[0], hi[0] = zc, zc
    if monolayer:
        target = packing * (hi[1] - lo[1]) * (hi[2] - lo[2]) / (math.pi * (diam / 2) ** 2)
    else:
        box = np.prod(hi - lo) * flat
        target = packing * 0.8 * box / (4 / 3 * math.pi * (diam / 2) ** 3)
    target = int(min(max(target, 1), 400))
    centres, radii = [], []
    cand = rng.uniform(lo, hi, (target * 30, 3))
    if monolayer:  # not perfectly one plane: +- 15% of the height
        cand[:, 0] += rng.normal(0, 0.15 * diam * flat, len(cand))
    cand_r = diam / 2 * np.exp(rng.normal(0, 0.15, len(cand)))
    for c, r in zip(cand, cand_r):
        if centres:
            dist = np.linalg.norm((np.asarray(centres) - c) * metric, axis=1)
            if np.any(dist < touch * (np.asarray(radii) + r)):
                continue
        centres.append(c)
        radii.append(r)
        if len(centres) >= target:
            break

    vol = np.zeros(shape, dtype=np.float32)
    if not centres:
        return vol
    # Shared random fields: irregular outlines and chromatin texture at two scales.
    s_low = _smooth_noise(shape, rng.uniform(1.5, 3.5) / vox, rng)  # lobes, dents
    s_fine = _smooth_noise(shape, rng.uniform(0.15, 0.35) / vox, rng)  # chromatin granules
    s_mid = _smooth_noise(shape, rng.uniform(0.8, 1.6) / vox, rng)
    t_fine, t_mid = rng.uniform(0.2, 0.5), rng.uniform(0.05, 0.3)
    irreg = rng.uniform(0.02, 0.1)
    bend = rng.uniform(0.0, 0.25)  # kidney / bean shapes
    rim_amp, rim_w = rng.uniform(0.1, 0.8), rng.uniform(0.25, 0.6)
    nucleoli_depth = rng.uniform(0.2, 0.6)
    chromocentres = rng.random() < 0.3
    edge_w = max(0.12, 0.35 * lat)
    p_mitosis = rng.uniform(0.0, 0.08)

    for c, r in zip(centres, radii):
        a = r * (1 + rng.uniform(0, elong))
        b = r
        cz = r * flat * rng.uniform(0.9, 1.1)
        semi = np.array([cz, b, a])
        rot = (_rotation_about_z(rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(0, 12)), rng)
               if monolayer else _random_rotation(rng))
        # bounding box of the rotated ellipsoid (+ room for the outline noise and the bend)
        half = np.sqrt(((rot * semi[None, :]) ** 2).sum(1)) * (1 + 3 * irreg) + bend * a + 2 * edge_w
        i0 = np.maximum(np.floor((c - half) / vox).astype(int), 0)
        i1 = np.minimum(np.ceil((c + half) / vox).astype(int) + 1, shape)
        if np.any(i1 <= i0):
            continue
        sl = tuple(slice(int(u), int(v)) for u, v in zip(i0, i1))
        dz = (np.arange(i0[0], i1[0]) * vox[0] - c[0])[:, None, None]
        dy = (np.arange(i0[1], i1[1]) * vox[1] - c[1])[None, :, None]
        dx = (np.arange(i0[2], i1[2]) * vox[2] - c[2])[None, None, :]
        # body-frame coordinates u = R^T d
        u = [rot[0, k] * dz + rot[1, k] * dy + rot[2, k] * dx for k in range(3)]
        # Bend the long axis (a parabola across the short one): bean-shaped nuclei.
        u[1] = u[1] + rng.uniform(-bend, bend) * u[2] ** 2 / a
        rho = np.sqrt((u[0] / semi[0]) ** 2 + (u[1] / semi[1]) ** 2 + (u[2] / semi[2]) ** 2)
        rho = rho * (1 + irreg * s_low[sl])
        rad_len = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
        # Signed distance to the surface along the ray from the centre (exact for the ellipsoid
        # along that ray), positive inside: it sets a physical edge width and the rim.
        sd = rad_len * (1 - rho) / np.maximum(rho, 1e-3)
        inside = 0.5 * (1 + np.tanh(sd / edge_w))
        gain = rng.uniform(0.45, 1.0)
        if rng.random() < p_mitosis:
            # Mitotic figure: condensed chromosomes, a compact plate (metaphase) with a ragged
            # outline, 2-3x brighter than interphase chromatin.
            rho_m = np.sqrt((u[0] / (0.35 * semi[0] + 0.8)) ** 2 + (u[1] / (0.55 * b)) ** 2 + (u[2] / (0.3 * b)) ** 2)
            plate = 0.5 * (1 + np.tanh((1 - rho_m + 0.3 * s_fine[sl]) * 5))
            val = rng.uniform(2.0, 3.0) * plate * np.exp(0.25 * s_fine[sl])
            np.maximum(vol[sl], (gain * val).astype(np.float32), out=vol[sl])
            continue
        tex = np.exp(t_fine * s_fine[sl] + t_mid * s_mid[sl])
        rim = 1 + rim_amp * np.exp(-0.5 * (np.maximum(sd, 0) / rim_w) ** 2)
        val = inside * tex * rim
        # Nucleoli: 0-4 dark ellipsoids away from the rim (DNA stains exclude them).
        for _ in range(rng.integers(0, 5)):
            nc = rng.uniform(-0.45, 0.45, 3) * semi
            nr = rng.uniform(0.6, 1.8) * np.array([0.8, 1.0, 1.0])
            d2 = ((u[0] - nc[0]) / nr[0]) ** 2 + ((u[1] - nc[1]) / nr[1]) ** 2 + ((u[2] - nc[2]) / nr[2]) ** 2
            val = val * (1 - nucleoli_depth / (1 + np.exp((np.sqrt(d2) - 1) * 6)))
        if chromocentres:  # bright heterochromatin foci (mouse cells)
            for _ in range(rng.integers(3, 12)):
                nc = rng.uniform(-0.6, 0.6, 3) * semi
                sr = rng.uniform(0.3, 0.7)
                d2 = (u[0] - nc[0]) ** 2 + (u[1] - nc[1]) ** 2 + (u[2] - nc[2]) ** 2
                val = val * (1 + 1.2 * inside * np.exp(-0.5 * d2 / sr**2))
        np.maximum(vol[sl], (gain * val).astype(np.float32), out=vol[sl])
    return vol


# --------------------------------------------------------------------------------------------
# membranes
# --------------------------------------------------------------------------------------------


def _membranes(shape: Shape3, vox: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Faces of a warped 3D Voronoi tessellation (cell outlines), thin, patchy, with gaps.

    The distance of a point x to the face between its nearest seed a and second-nearest b is
    f = (|x-b|^2 - |x-a|^2) / (2 |a-b|) (exact for the bisector plane). It is computed on a
    grid twice as coarse first; only voxels that can be within reach of a face are refined.
    """
    from scipy.spatial import cKDTree

    ext = np.asarray(shape) * vox
    lat = float(min(vox[1], vox[2]))
    diam = rng.uniform(6.0, 18.0)  # cell diameter, um
    az = rng.uniform(0.6, 2.0)  # > 1: columnar cells (elongated along z), < 1: flattened
    metric = np.array([1.0 / az, 1.0, 1.0])
    jitter = rng.uniform(0.25, 0.5)
    pad = diam
    # Jittered grid of seeds: regular epithelium (small jitter) to irregular tissue (large).
    spacing = diam * np.array([az, 1.0, 1.0])
    axes = [np.arange(-pad, e + pad + s, s) for e, s in zip(ext, spacing)]
    seeds = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    seeds = seeds + rng.uniform(-jitter, jitter, seeds.shape) * spacing
    seeds = seeds * metric  # work in the metric space
    tree = cKDTree(seeds)

    warp_amp = rng.uniform(0.0, 0.12) * diam
    warp_sigma = diam / 3 / vox
    warp = [warp_amp * _smooth_noise(shape, warp_sigma, rng) for _ in range(3)] if warp_amp > 0 else None
    thick = max(0.1, 0.5 * lat)  # membrane half-thickness (sigma), um

    seed_c = [np.ascontiguousarray(seeds[:, k], dtype=np.float32) for k in range(3)]

    def positions(iz: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> list[np.ndarray]:
        """Warped metric-space coordinates of voxels, one float32 array per axis."""
        out = []
        for k, (i, v) in enumerate(zip((iz, iy, ix), vox)):
            x = i.astype(np.float32) * np.float32(v)
            if warp is not None:
                x += warp[k][iz, iy, ix]
            x *= np.float32(metric[k])
            out.append(x)
        return out

    def face_distance(x: list[np.ndarray], cand_seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f for points x (3 arrays of n) whose two nearest seeds are among cand_seeds (n, k)."""
        # Per-axis (n, k) arrays: cheaper to gather and sum than an (n, k, 3) block.
        d2 = np.zeros(cand_seeds.shape, dtype=np.float32)
        for k in range(3):
            d = seed_c[k][cand_seeds]
            d -= x[k][:, None]
            d2 += d * d
        rows = np.arange(len(cand_seeds))
        ia = d2.argmin(1)
        d2a = d2[rows, ia]
        d2[rows, ia] = np.inf
        ib = d2.argmin(1)
        d2b = d2[rows, ib]
        a, b = cand_seeds[rows, ia], cand_seeds[rows, ib]
        sep2 = np.zeros(len(a), dtype=np.float32)
        for k in range(3):
            d = seed_c[k][a] - seed_c[k][b]
            sep2 += d * d
        return (d2b - d2a) / (2 * np.sqrt(sep2)), np.stack([a, b], 1)

    # Coarse pass: the 4 nearest seeds of every other voxel. A full-resolution voxel's two
    # nearest seeds are (but in degenerate corners) among the 4 nearest of its coarse sample,
    # so the fine pass needs no tree query, only a few distances per voxel.
    # Axes whose voxels are already much coarser than the finest are not coarsened further:
    # the margin below grows with the coarse step.
    fac = np.array([2 if (v <= 1.5 * vox.min() and n >= 8) else 1 for v, n in zip(vox, shape)])
    cz, cy, cx = (np.arange(0, n, f) for n, f in zip(shape, fac))
    g = np.meshgrid(cz, cy, cx, indexing="ij")
    x_c = positions(g[0].ravel(), g[1].ravel(), g[2].ravel())
    _, knn = tree.query(np.stack(x_c, 1), k=4, workers=-1)
    cshape = (len(cz), len(cy), len(cx))
    fc, _ = face_distance(x_c, knn)
    del g, x_c
    fc = fc.reshape(cshape)
    coarse_near = fc.repeat(fac[0], 0).repeat(fac[1], 1).repeat(fac[2], 2)[: shape[0], : shape[1], : shape[2]]
    # f is 1-Lipschitz in the metric space (times the warp's stretch, < 1.5): a voxel (f-1)
    # voxels away from its coarse sample is within this margin of the sample's value.
    margin = 1.5 * float(np.linalg.norm((fac - 1) * vox * metric)) + 3.5 * thick
    cand = np.nonzero(coarse_near < margin)
    out = np.zeros(shape, dtype=np.float32)
    if len(cand[0]) == 0:
        return out
    coarse_flat = np.ravel_multi_index(tuple(c // f for c, f in zip(cand, fac)), cshape)
    fd, nn = face_distance(positions(*cand), knn[coarse_flat])
    sheet = np.exp(-0.5 * (fd / thick) ** 2)
    # Per-cell brightness, symmetric in the two cells sharing a face.
    cell_gain = rng.uniform(0.4, 1.0, len(seeds))
    gain = 0.5 * (cell_gain[nn[:, 0]] + cell_gain[nn[:, 1]])
    out[cand] = (sheet * gain).astype(np.float32)
    # Patchy labelling and gaps (smooth masks), plus dim intracellular membranes/cytoplasm.
    patch_field = _smooth_noise(shape, rng.uniform(0.5, 1.5) / vox, rng)
    patch = np.exp(0.35 * patch_field)
    gap_field = _smooth_noise(shape, rng.uniform(1.0, 3.0) / vox, rng)
    gap_thr = rng.uniform(-2.5, -0.7)  # fraction of face area missing: ~1% to ~25%
    gaps = 1.0 / (1.0 + np.exp(-(gap_field - gap_thr) * 6))
    out = out * patch * gaps
    inner = rng.uniform(0.0, 0.12)
    if inner > 0:  # reuses the patch field: blotchy cytoplasm where labelling is patchy
        out += inner * np.exp(0.5 * patch_field) * (1 - out.clip(0, 1))
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# puncta
# --------------------------------------------------------------------------------------------


def _puncta(shape: Shape3, vox: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vesicles (sub-resolution spots) with a clustered density, plus sparse larger blobs."""
    from scipy import ndimage

    ext = np.asarray(shape) * vox
    volume_um3 = float(np.prod(ext))
    density = math.exp(rng.uniform(math.log(0.01), math.log(0.15)))  # per um^3
    n = int(min(density * volume_um3, np.prod(shape) / 60))
    n = max(n, 5)
    # Inhomogeneous density (vesicles gather in cells, near nuclei...): voxels drawn with a
    # log-normal probability field, then a uniform sub-voxel position inside each.
    clump = rng.uniform(0.0, 2.0)
    field = np.exp(clump * _smooth_noise(shape, rng.uniform(2.0, 8.0) / vox, rng)).ravel().astype(np.float64)
    flat = rng.choice(field.size, size=n, p=field / field.sum())
    pos = np.stack(np.unravel_index(flat, shape), 1) + rng.uniform(-0.5, 0.5, (n, 3))
    bright = rng.lognormal(0.0, 0.5, len(pos))
    # Physical size 50-250 nm: below the resolution, so the clean spot is tiny (>= 0.5 voxel
    # so that it is sampled); the PSF makes it diffraction limited.
    s_um = rng.uniform(0.05, 0.15)
    sig = np.maximum(s_um / vox, 0.5)
    vol = ndimage.gaussian_filter(_splat(shape, pos, bright), sig)
    vol *= float((2 * math.pi) ** 1.5 * np.prod(sig))  # peak of a spot = its brightness
    # sparse larger blobs (lysosomes, lipid droplets): ~0.5-1.5 um across
    nb = rng.poisson(max(1.0, 0.03 * len(pos)))
    if nb:
        bpos = rng.uniform(0, 1, (nb, 3)) * (np.asarray(shape) - 1)
        bsig = np.maximum(rng.uniform(0.25, 0.6) / vox, 0.7)
        blobs = ndimage.gaussian_filter(_splat(shape, bpos, rng.uniform(0.4, 1.0, nb)), bsig)
        blobs *= float((2 * math.pi) ** 1.5 * np.prod(bsig))
        # flat-topped rather than Gaussian: soft saturation of the blob profile
        vol += np.tanh(2 * blobs) * 0.6
    return vol.astype(np.float32)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

_MIX_RECIPES: tuple[tuple[str, ...], ...] = (
    ("nuclei", "puncta"),
    ("tubes", "puncta"),
    ("membranes", "nuclei"),
    ("tubes", "nuclei"),
    ("membranes", "puncta"),
    ("nuclei", "tubes", "puncta"),
    ("membranes", "nuclei", "puncta"),
)

_RENDERERS = {"tubes": _tubes, "nuclei": _nuclei, "membranes": _membranes, "puncta": _puncta}


def clean_phantom(
    shape: Sequence[int],
    kind: str = "mixed",
    rng: np.random.Generator | int | None = None,
    voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
) -> np.ndarray:
    """The fluorophore density of a phantom, before any optics: float32, ~1 at the bright end.

    ``kind`` is one of ``PHANTOM_KINDS``; ``voxel_size`` (z, y, x) in micrometres sets the
    physical scale of the structures.
    """
    if kind not in PHANTOM_KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; choose one of {', '.join(PHANTOM_KINDS)}.")
    shp, vox = _check_shape_vox(shape, voxel_size)
    rng = _as_rng(rng)
    if kind != "mixed":
        return _normalise(_RENDERERS[kind](shp, vox, rng))
    recipe = _MIX_RECIPES[int(rng.integers(len(_MIX_RECIPES)))]
    out = np.zeros(shp, dtype=np.float32)
    for i, part in enumerate(recipe):
        weight = 1.0 if i == 0 else rng.uniform(0.2, 0.8)
        out += np.float32(weight) * _normalise(_RENDERERS[part](shp, vox, rng))
    return _normalise(out)


def _draw_optics(rng: np.random.Generator, lateral_voxel_um: float) -> tuple[float, float, float]:
    """A plausible objective and fluorophore: (NA, emission wavelength um, immersion index).

    Nobody images a 0.1 um pixel grid through an NA 0.3 lens: objectives whose lateral FWHM
    would span more than 5 pixels (heavy oversampling) are redrawn."""
    for _ in range(50):
        immersion = rng.choice(3, p=[0.2, 0.4, 0.4])
        if immersion == 0:
            n, na = 1.0, rng.uniform(0.3, 0.95)  # air
        elif immersion == 1:
            n, na = 1.333, rng.uniform(0.5, 1.2)  # water (light-sheet, two-photon, live imaging)
        else:
            n, na = 1.515, rng.uniform(1.1, 1.45)  # oil (fixed-sample confocal)
        wavelength = rng.uniform(0.45, 0.68)  # DAPI ... mCherry emission
        if 0.51 * wavelength / na <= 5 * lateral_voxel_um:
            break
    return float(na), float(wavelength), float(n)


def make_phantom(
    shape: Sequence[int] = (64, 128, 128),
    kind: str = "mixed",
    seed: int | np.random.Generator | None = 0,
    voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
    psf: bool = True,
    noise_level: float = 0.0,
    background: float | None = None,
    na: float | None = None,
    wavelength_um: float | None = None,
    refractive_index: float | None = None,
) -> np.ndarray:
    """A phantom as a fluorescence microscope would record it: float32, roughly in [0, 1].

    - ``kind``: one of ``PHANTOM_KINDS``;
    - ``voxel_size``: (z, y, x) in micrometres;
    - ``psf``: blur with an anisotropic Gaussian PSF. With ``na=None`` the objective is drawn
      at random (air, water or oil) and the axial width gets a random 1-2x broadening
      (aberrations at depth, light-sheet thickness, open pinhole); the effective PSF is kept at
      least ~Nyquist-sampled on the grid (sigma >= 0.5 voxel), as it would be in a volume that
      is a proper ground truth. With ``na`` given the formulas of ``psf.py`` are used as they are;
    - ``noise_level``: relative Poisson-Gaussian noise at the bright level (0 = none);
    - ``background``: mean background (autofluorescence, offset) relative to the bright level,
      ``None`` draws it at random in [0.005, 0.12], 0 turns it off (and the haze with it).

    Deterministic for an integer ``seed``.
    """
    rng = _as_rng(seed)
    shp, vox = _check_shape_vox(shape, voxel_size)
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}.")
    vol = clean_phantom(shp, kind, rng, vox)
    ext = np.asarray(shp) * vox

    # Illumination: attenuation with depth (scattering/absorption, Beer-Lambert) and a smooth
    # lateral falloff (vignetting / Gaussian illumination profile).
    z_um = (np.arange(shp[0]) * vox[0])[:, None, None]
    if rng.random() < 0.5:
        vol = vol * np.exp(-z_um / rng.uniform(30.0, 300.0)).astype(np.float32)
    vig = rng.uniform(0.0, 0.35)
    if vig > 0:
        yy = (np.arange(shp[1]) / max(shp[1] - 1, 1) - rng.uniform(0.3, 0.7))[:, None]
        xx = (np.arange(shp[2]) / max(shp[2] - 1, 1) - rng.uniform(0.3, 0.7))[None, :]
        vol = vol * (1 - vig * (yy**2 + xx**2) / 0.5).astype(np.float32)[None]

    if psf:
        given = na is not None
        d_na, d_wl, d_n = _draw_optics(rng, float(min(vox[1], vox[2])))
        if refractive_index is not None:
            n_imm = refractive_index
        elif not given:
            n_imm = d_n
        else:  # the least dense immersion that supports this NA (air, water, oil)
            n_imm = 1.515 if na > 1.25 else 1.333 if na > 0.95 else 1.0
        sig = np.array(gaussian_psf_sigmas(vox, na if given else d_na,
                                           wavelength_um if wavelength_um is not None else d_wl, n_imm))
        if not given:
            sig[0] *= 1.0 + rng.uniform(0.0, 1.0) ** 2  # mostly mild, sometimes 2x
            sig = np.maximum(sig, 0.5)
        structure = apply_psf(vol, sig)
    else:
        structure = vol
    structure = _normalise(structure)

    bg_level = rng.uniform(0.005, 0.12) if background is None else float(background)
    if bg_level > 0:
        # Autofluorescence: a smooth field with a linear gradient across the volume.
        grad = _random_unit(rng)
        coords = [(np.arange(n) * v / max(e, 1e-9) - 0.5) for n, v, e in zip(shp, vox, ext)]
        ramp = (grad[0] * coords[0][:, None, None] + grad[1] * coords[1][None, :, None]
                + grad[2] * coords[2][None, None, :])
        smooth = _smooth_noise(shp, rng.uniform(5.0, 20.0) / vox, rng)
        bg = bg_level * np.exp(0.3 * smooth + rng.uniform(0, 0.8) * ramp).astype(np.float32)
        if psf:
            # Out-of-focus haze: structure seen through a much wider kernel (thick samples,
            # widefield/light-sheet). The kernel conserves intensity, so the haze follows the
            # local density of fluorophores: strong among packed nuclei, nil around sparse
            # puncta. Computed at quarter resolution; it is smooth anyway.
            haze_amp = rng.uniform(0.0, 0.6)
            if haze_amp > 0.05:
                f = [max(1, min(4, n // 8)) for n in shp]
                small = structure[:: f[0], :: f[1], :: f[2]]
                hs = np.maximum(rng.uniform(2.0, 6.0) / (vox * f), 0.5)
                bg = bg + haze_amp * _upsample_linear(apply_psf(small, hs), f, shp)
        structure = structure + bg
        structure = structure / np.float32(1 + bg_level)
    out = structure.astype(np.float32)
    if noise_level > 0:
        out = poisson_gaussian_noise(out, float(noise_level), rng)
    return out


def random_phantom_params(rng: np.random.Generator) -> dict[str, Any]:
    """Random acquisition settings for training variety: kind, voxel size (z 0.3-2 um,
    xy 0.1-0.5 um, log-uniform), objective and noise (a third noiseless)."""
    kind = str(rng.choice(PHANTOM_KINDS, p=[0.2, 0.2, 0.15, 0.1, 0.35]))
    vz = math.exp(rng.uniform(math.log(0.3), math.log(2.0)))
    vxy = math.exp(rng.uniform(math.log(0.1), math.log(0.5)))
    vz = max(vz, vxy)  # z sampling is never finer than lateral in practice
    noise = 0.0 if rng.random() < 0.33 else float(math.exp(rng.uniform(math.log(0.01), math.log(0.3))))
    return dict(kind=kind, voxel_size=(vz, vxy, vxy), noise_level=noise,
                seed=int(rng.integers(0, 2**63 - 1)))


def random_phantom(
    shape: Sequence[int], rng: np.random.Generator | int | None = None, return_params: bool = False
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """One training volume with random kind, voxel size, optics, background and noise.

    The objective (NA, immersion, wavelength) and the background are drawn inside
    ``make_phantom``; ``return_params=True`` also returns the drawn settings.
    """
    rng = _as_rng(rng)
    params = random_phantom_params(rng)
    vol = make_phantom(shape, **params)
    return (vol, params) if return_params else vol


__all__ = [
    "PHANTOM_KINDS",
    "DEFAULT_VOXEL_SIZE",
    "clean_phantom",
    "make_phantom",
    "random_phantom",
    "random_phantom_params",
]
