"""Procedural phantoms and the Gaussian PSF: shapes, determinism, structure and optics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_voxrecon.simulate.phantoms import (
    PHANTOM_KINDS,
    clean_phantom,
    make_phantom,
    random_phantom,
)
from napari_voxrecon.simulate.psf import apply_psf, gaussian_psf_sigmas, psf_fwhm_um

SHAPE = (24, 64, 64)
VOX = (0.5, 0.4, 0.4)  # coarse voxels keep the small test volumes physically large enough


def _foreground(v: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    return v > threshold_otsu(v)


def _largest_component(fg: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...], float]:
    lab, n = ndimage.label(fg)
    assert n > 0
    sizes = np.bincount(lab.ravel())[1:]
    big = int(np.argmax(sizes)) + 1
    sl = ndimage.find_objects(lab)[big - 1]
    return lab == big, sl, sizes[big - 1] / fg.sum()


# ---------------------------------------------------------------------------------- PSF


def test_psf_sigmas_follow_the_fwhm_formulas():
    na, wl, n = 1.4, 0.52, 1.515
    sz, sy, sx = gaussian_psf_sigmas((0.3, 0.1, 0.1), na=na, wavelength_um=wl, refractive_index=n)
    fwhm_xy = 0.51 * wl / na
    fwhm_z = 0.88 * wl / (n - math.sqrt(n**2 - na**2))
    assert sy == pytest.approx(fwhm_xy / 2.3548 / 0.1, rel=1e-3)
    assert sx == pytest.approx(sy)
    assert sz == pytest.approx(fwhm_z / 2.3548 / 0.3, rel=1e-3)
    # In micrometres the axial width always exceeds the lateral one, and both shrink with NA.
    for n_imm, nas in ((1.0, (0.3, 0.6, 0.9)), (1.333, (0.8, 1.0, 1.2)), (1.515, (1.2, 1.4))):
        prev = None
        for a in nas:
            z, xy = psf_fwhm_um(a, 0.5, n_imm)
            assert z > 1.5 * xy
            if prev is not None:
                assert z < prev[0] and xy < prev[1]
            prev = (z, xy)
    with pytest.raises(ValueError):
        gaussian_psf_sigmas((1, 1, 1), na=1.4, refractive_index=1.33)


@pytest.mark.parametrize("method", ["spatial", "fft"])
def test_blurring_a_point_gives_the_requested_anisotropic_spread(method):
    vol = np.zeros((61, 41, 41), np.float32)
    vol[30, 20, 20] = 1.0
    sig = gaussian_psf_sigmas((0.3, 0.1, 0.1), na=1.2, wavelength_um=0.5, refractive_index=1.333)
    out = apply_psf(vol, sig, method=method)
    assert out.dtype == np.float32
    assert out.sum() == pytest.approx(1.0, rel=1e-3)  # photons are conserved
    coords = np.indices(out.shape).reshape(3, -1)
    w = out.ravel() / out.sum()
    spread = [math.sqrt(np.sum(w * (c - c @ w) ** 2)) for c in coords]
    for got, want in zip(spread, sig):
        assert got == pytest.approx(want, rel=0.05)
    # Physical spread: axial clearly wider than lateral.
    assert spread[0] * 0.3 > 2 * spread[1] * 0.1


def test_fft_and_spatial_blur_agree_for_big_sigmas():
    rng = np.random.default_rng(1)
    vol = ndimage.gaussian_filter(rng.random((40, 48, 44)).astype(np.float32), 2)
    a = apply_psf(vol, (9.0, 2.0, 3.0), method="spatial")
    b = apply_psf(vol, (9.0, 2.0, 3.0), method="fft")
    assert np.abs(a - b).max() < 1e-3 * float(np.abs(a).max())
    assert np.array_equal(apply_psf(vol, (0, 0, 0)), vol)


# ---------------------------------------------------------------------------------- phantoms


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_make_phantom_shape_dtype_range(kind):
    v = make_phantom(SHAPE, kind, seed=3, voxel_size=VOX)
    assert v.shape == SHAPE and v.dtype == np.float32
    assert np.isfinite(v).all()
    assert v.std() > 1e-3  # not constant
    # roughly [0, 1]: the bright end near 1, nothing clipped flat at the top
    hi = np.percentile(v, 99.95)
    assert 0.5 < hi < 1.5
    assert v.min() > -0.02
    assert (v >= v.max() - 1e-6).mean() < 1e-3


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_phantoms_are_deterministic_and_vary_with_the_seed(kind):
    a = make_phantom(SHAPE, kind, seed=5, voxel_size=VOX, noise_level=0.05)
    b = make_phantom(SHAPE, kind, seed=5, voxel_size=VOX, noise_level=0.05)
    c = make_phantom(SHAPE, kind, seed=6, voxel_size=VOX, noise_level=0.05)
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tubes_are_thin_and_elongated(seed):
    v = clean_phantom(SHAPE, "tubes", np.random.default_rng(seed), VOX)
    fg = _foreground(v)
    assert 0.002 < fg.mean() < 0.2
    comp, sl, _ = _largest_component(fg)
    length = max((s.stop - s.start) * d for s, d in zip(sl, VOX))
    fill = comp.sum() / np.prod([s.stop - s.start for s in sl])
    assert length > 10.0  # um, in a 12 x 25.6 x 25.6 um volume
    assert fill < 0.2  # a curve fills little of its bounding box; a blob fills ~half
    assert ndimage.binary_erosion(fg).sum() < 0.5 * fg.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nuclei_are_solid_blobs_of_nuclear_size(seed):
    v = clean_phantom(SHAPE, "nuclei", np.random.default_rng(seed), VOX)
    fg = ndimage.binary_opening(_foreground(ndimage.gaussian_filter(v, 1.0)))
    assert 0.03 < fg.mean() < 0.7
    assert ndimage.binary_erosion(fg).sum() > 0.4 * fg.sum()  # solid, not sheets or curves
    lab, _ = ndimage.label(fg)
    sizes = np.bincount(lab.ravel())[1:] * np.prod(VOX)  # um^3
    # equivalent diameter of the big components: 4-25 um (nuclei are ~6-17 um across)
    d = (6 * sizes[sizes > 20] / math.pi) ** (1 / 3)
    assert len(d) >= 1 and 3.0 < np.median(d) < 25.0


def test_nuclei_scale_with_the_voxel_size():
    """Nuclei have a physical size: the same field imaged with voxels twice as large shows
    nuclei of the same size in micrometres (so half as many pixels across)."""
    def widths_um(vox, shape):
        out = []
        for seed in range(4):
            v = clean_phantom(shape, "nuclei", np.random.default_rng(seed), vox)
            fg = ndimage.binary_opening(_foreground(ndimage.gaussian_filter(v, 1.0)))
            lab, _ = ndimage.label(fg)
            for s in ndimage.find_objects(lab):  # whole nuclei only: not cut by the border
                if s[1].start > 0 and s[2].start > 0 and s[1].stop < shape[1] and s[2].stop < shape[2]:
                    out.append((s[2].stop - s[2].start) * vox[2])
        return np.asarray([w for w in out if w > 2])

    fine = np.median(widths_um((1.0, 0.2, 0.2), (16, 256, 256)))
    coarse = np.median(widths_um((1.0, 0.4, 0.4), (16, 128, 128)))
    assert 4.0 < fine < 20.0 and 4.0 < coarse < 20.0
    assert 0.75 < fine / coarse < 1.33


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_membranes_are_connected_thin_sheets(seed):
    v = clean_phantom(SHAPE, "membranes", np.random.default_rng(seed), VOX)
    fg = _foreground(v)
    assert 0.02 < fg.mean() < 0.4
    assert ndimage.binary_erosion(fg).sum() < 0.15 * fg.sum()  # ~1-2 voxels thick
    _, _, share = _largest_component(fg)
    assert share > 0.6  # one tessellation, not scattered bits
    # the sheets enclose cells: once small gaps are closed, the background splits into
    # several large pieces (tubes and puncta leave it in one piece)
    lab, _ = ndimage.label(~ndimage.binary_dilation(fg, iterations=2))
    sizes = np.bincount(lab.ravel())[1:]
    assert (sizes > 200).sum() >= 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_puncta_are_many_small_spots(seed):
    from skimage.feature import peak_local_max

    v = clean_phantom(SHAPE, "puncta", np.random.default_rng(seed), VOX)
    peaks = peak_local_max(v, min_distance=2, threshold_abs=0.05)
    assert len(peaks) >= 30
    assert (v > 0.05).mean() < 0.1
    lab, _ = ndimage.label(_foreground(v))
    sizes = np.bincount(lab.ravel())[1:] * np.prod(VOX)
    assert np.median(sizes) < 1.0  # um^3: sub-micron spots


def test_kinds_differ_in_structure():
    """A guard against every kind silently rendering the same thing."""
    keep = {}
    for kind in ("tubes", "nuclei", "membranes", "puncta"):
        fg = _foreground(clean_phantom(SHAPE, kind, np.random.default_rng(0), VOX))
        keep[kind] = ndimage.binary_erosion(fg).sum() / fg.sum()
    assert keep["nuclei"] > 2 * max(keep["membranes"], keep["puncta"])


def test_psf_blurs_the_phantom_more_axially_than_laterally():
    vox = (0.15, 0.15, 0.15)  # isotropic grid: any anisotropy comes from the optics
    sharp = make_phantom((32, 64, 64), "puncta", seed=2, voxel_size=vox, psf=False, background=0)
    # NA 0.8 water, 600 nm: sigma 0.16 um laterally, 0.84 um axially
    blurred = make_phantom((32, 64, 64), "puncta", seed=2, voxel_size=vox, na=0.8,
                           wavelength_um=0.6, refractive_index=1.333, background=0)

    def width(v, axis):  # mean squared gradient ~ 1 / width^2
        return 1.0 / math.sqrt(np.mean(np.diff(v, axis=axis) ** 2) / np.mean(v**2))

    assert width(blurred, 0) > 1.8 * width(blurred, 2)
    assert width(blurred, 2) > 1.2 * width(sharp, 2)
    assert abs(width(sharp, 0) / width(sharp, 2) - 1) < 0.3


def test_noise_level_lowers_ssim_monotonically():
    from skimage.metrics import structural_similarity

    clean = make_phantom(SHAPE, "nuclei", seed=1, voxel_size=VOX)
    scores = []
    for level in (0.02, 0.08, 0.2, 0.5):
        noisy = make_phantom(SHAPE, "nuclei", seed=1, voxel_size=VOX, noise_level=level)
        scores.append(structural_similarity(clean, noisy, data_range=float(clean.max() - clean.min())))
    assert scores[0] > 0.8
    assert all(a > b for a, b in zip(scores, scores[1:]))


def test_background_zero_and_no_psf_gives_a_dark_floor():
    v = make_phantom(SHAPE, "puncta", seed=0, voxel_size=VOX, psf=False, background=0)
    assert v.min() >= -1e-6
    assert np.median(v) < 0.02


def test_random_phantom_draws_varied_settings():
    kinds, voxels = set(), []
    for s in range(8):
        v, params = random_phantom((16, 40, 40), np.random.default_rng(s), return_params=True)
        assert v.shape == (16, 40, 40) and v.dtype == np.float32 and np.isfinite(v).all()
        kinds.add(params["kind"])
        vz, vy, vx = params["voxel_size"]
        assert 0.1 <= vy == vx <= 0.5 and 0.1 <= vz <= 2.0
        voxels.append(vz)
    assert len(kinds) >= 3
    assert max(voxels) > 1.5 * min(voxels)
    a = random_phantom((8, 24, 24), np.random.default_rng(11))
    assert np.array_equal(a, random_phantom((8, 24, 24), np.random.default_rng(11)))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        make_phantom(SHAPE, "galaxies")
    with pytest.raises(ValueError):
        make_phantom((10, 10), "tubes")
    with pytest.raises(ValueError):
        make_phantom(SHAPE, "tubes", voxel_size=(0, 1, 1))
    with pytest.raises(ValueError):
        make_phantom(SHAPE, "tubes", noise_level=-1)
