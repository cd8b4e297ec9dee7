"""Wave optics of the `diffraction` task against cases with known answers."""

import math

import numpy as np
import pytest
import torch

from napari_voxrecon.errors import InputError
from napari_voxrecon.physics import Optics, forward_images, point_source_field, propagate, transfer_function
from napari_voxrecon.physics.wave_optics import airy_fwhm


def _smooth_field(h=64, w=64, cutoff=0.5, seed=0):
    """A random complex field whose spectrum lies well inside the propagating band (|k| < cutoff k)."""
    g = torch.Generator().manual_seed(seed)
    spec = torch.randn(h, w, generator=g) + 1j * torch.randn(h, w, generator=g)
    ky = 2 * math.pi * torch.fft.fftfreq(h, d=0.1)[:, None]
    kx = 2 * math.pi * torch.fft.fftfreq(w, d=0.1)[None, :]
    k = 2 * math.pi * 1.33 / 0.5
    spec = spec * ((kx ** 2 + ky ** 2) < (cutoff * k) ** 2)
    return torch.fft.ifft2(spec.to(torch.complex64)), k


def test_free_space_propagation_forward_and_back_returns_the_field():
    field, k = _smooth_field()
    there = propagate(field, 1.5, k, 0.1, 0.1)
    assert (there - field).abs().max() > 0.1 * field.abs().max()  # it did change
    back = propagate(there, -1.5, k, 0.1, 0.1)
    torch.testing.assert_close(back, field, rtol=0, atol=1e-4 * float(field.abs().max()))


def test_energy_is_conserved_through_a_phase_sample_without_a_pupil():
    field, k = _smooth_field(cutoff=0.3, seed=1)
    optics = Optics(wavelength=0.5, na=1.0, n_background=1.33, voxel_size=(0.2, 0.1, 0.1))
    g = torch.Generator().manual_seed(2)
    dn = torch.nn.functional.avg_pool2d(torch.randn(8, 1, 64, 64, generator=g), 9, 1, 4)[:, 0] * 0.02  # smooth, weak
    tf = transfer_function(64, 64, 0.1, 0.1, 0.2, k)
    from napari_voxrecon.physics.wave_optics import _through_slabs

    out = _through_slabs(field[None], dn, optics.k0, 0.2, tf, 0)[0]
    e0, e1 = float((field.abs() ** 2).sum()), float((out.abs() ** 2).sum())
    assert abs(e1 - e0) / e0 < 1e-3


def test_a_uniform_slab_shifts_the_phase_by_k0_dn_L():
    """A normally incident plane wave through L = 10 slabs of Δn: extra phase k0 Δn L."""
    from napari_voxrecon.physics.wave_optics import _through_slabs

    optics = Optics(wavelength=0.5, na=1.0, n_background=1.33, voxel_size=(0.25, 0.1, 0.1))
    dz, k = 0.25, optics.k0 * 1.33
    tf = transfer_function(32, 32, 0.1, 0.1, dz, k)
    plane = torch.ones(1, 32, 32, dtype=torch.complex64)
    dn_value = 0.01
    with_sample = _through_slabs(plane, torch.full((10, 32, 32), dn_value), optics.k0, dz, tf, 0)[0]
    free = _through_slabs(plane, torch.zeros(10, 32, 32), optics.k0, dz, tf, 0)[0]
    shift = torch.angle(with_sample * free.conj())
    expected = optics.k0 * dn_value * 10 * dz  # 0.31 rad
    torch.testing.assert_close(shift, torch.full_like(shift, expected), rtol=0, atol=1e-4)
    torch.testing.assert_close(with_sample.abs(), torch.ones(32, 32), rtol=0, atol=1e-5)


def test_point_source_field_matches_the_band_limited_spherical_wave_on_axis():
    """Weyl's construction limited to transverse frequencies below b has the closed-form
    on-axis value (exp(ikd) - exp(i sqrt(k² - b²) d)) / d (the first term is exp(ikr)/r)."""
    import cmath

    k = 2 * math.pi * 1.33 / 0.5
    h, dx = 512, 0.05
    for d, b in ((2.0, 0.5 * k), (1.0, 0.8 * k)):
        src = torch.tensor([[0.0, h / 2 * dx, h / 2 * dx]])
        field = point_source_field(src, d, (h, h), dx, dx, k, band=b)[0]
        expected = (cmath.exp(1j * k * d) - cmath.exp(1j * math.sqrt(k * k - b * b) * d)) / d
        assert abs(complex(field[h // 2, h // 2]) - expected) < 0.02 * abs(expected)  # k-space sampling of the sharp band edge
        # the wave is symmetric about its source, and a sub-pixel shift of the source moves it
        torch.testing.assert_close(field[h // 2, h // 2 + 7], field[h // 2 + 7, h // 2], rtol=1e-3, atol=1e-5)
    shifted = point_source_field(torch.tensor([[0.0, h / 2 * dx, h / 2 * dx + 0.5 * dx]]), 2.0, (h, h), dx, dx, k, band=0.5 * k)[0]
    torch.testing.assert_close(shifted[h // 2, h // 2], shifted[h // 2, h // 2 + 1], rtol=1e-3, atol=1e-5)


def test_a_point_source_images_to_an_airy_spot_at_its_position():
    optics = Optics(wavelength=0.5, na=0.6, n_background=1.33, voxel_size=(0.2, 0.05, 0.05), focus=-1.0)
    dn = torch.zeros(4, 128, 128)
    ys, xs = 3.2, 3.1  # µm: pixel (64, 62)
    img = forward_images(dn, torch.tensor([[-1.0, ys, xs]]), optics, pad=32)[0]
    peak = np.unravel_index(int(img.argmax()), img.shape)
    assert peak == (64, 62)
    profile = img[64].numpy() / float(img.max())
    x = (np.arange(128) - 62) * 0.05
    above = x[profile >= 0.5]
    fwhm = above.max() - above.min() + 0.05  # half-maximum crossing resolved to a pixel
    assert abs(fwhm - airy_fwhm(0.5, 0.6)) < 0.1 * airy_fwhm(0.5, 0.6) + 0.05
    first_zero = 0.61 * 0.5 / 0.6
    near = np.abs(np.abs(x) - first_zero) < 0.04
    assert profile[near].max() < 0.05  # the dark ring


def test_images_are_differentiable_in_the_index_and_the_source_positions():
    optics = Optics(wavelength=0.5, na=0.8, n_background=1.33, voxel_size=(0.2, 0.1, 0.1))
    dn = torch.zeros(6, 32, 32)
    dn[2:4, 12:20, 12:20] = 0.02
    dn.requires_grad_(True)
    src = torch.tensor([[-1.0, 1.6, 1.5], [-0.8, 1.4, 1.7]], requires_grad=True)
    imgs = forward_images(dn, src, optics, pad=8, checkpoint_slabs=2)
    assert imgs.shape == (2, 32, 32) and torch.isfinite(imgs).all()
    imgs.sum().backward()
    assert dn.grad.abs().sum() > 0 and src.grad.abs().sum() > 0
    # checkpointing changes memory, not values
    plain = forward_images(dn.detach(), src.detach(), optics, pad=8)
    torch.testing.assert_close(imgs.detach(), plain, rtol=1e-4, atol=1e-6 * float(plain.max()))


def test_camera_binning_and_view_chunks():
    optics = Optics(wavelength=0.5, na=0.8, voxel_size=(0.2, 0.1, 0.1), camera_pixel=0.2)
    dn = torch.zeros(4, 32, 32)
    src = torch.tensor([[-1.0, 1.6, 1.6], [-1.0, 1.0, 2.0], [-0.5, 2.0, 1.0]])
    full = forward_images(dn, src, Optics(wavelength=0.5, na=0.8, voxel_size=(0.2, 0.1, 0.1)))
    binned = forward_images(dn, src, optics, view_chunk=2)
    assert binned.shape == (3, 16, 16)
    torch.testing.assert_close(binned, full.reshape(3, 16, 2, 16, 2).mean(dim=(2, 4)), rtol=1e-4, atol=1e-6 * float(full.max()))
    with pytest.raises(ValueError, match="below the top slab"):
        forward_images(dn, torch.tensor([[5.0, 1.0, 1.0]]), optics)


def test_optics_file_round_trip_and_clear_errors(tmp_path):
    o = Optics(wavelength=0.6, na=0.9, voxel_size=(0.3, 0.15, 0.15), camera_pixel=0.3)
    assert Optics.load(o.save(tmp_path / "optics.json")) == o and o.binning == 2
    assert Optics.load(None) == Optics()
    with pytest.raises(InputError, match="na must be"):
        Optics(na=1.5, n_background=1.33)
    with pytest.raises(InputError, match="whole multiple"):
        Optics(voxel_size=(0.3, 0.2, 0.2), camera_pixel=0.3)
    (tmp_path / "bad.json").write_text('{"wavelenght": 0.5}')
    with pytest.raises(InputError, match="unknown optics field"):
        Optics.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="does not exist"):
        Optics.load(tmp_path / "missing.json")
    (tmp_path / "typed.json").write_text('{"na": "high", "voxel_size": [0.4, "a", 0.2], "focus": null}')
    with pytest.raises(InputError, match=r"na must be a number, not 'high'; voxel_size must be a list of three"):
        Optics.load(tmp_path / "typed.json")


def test_inverse_fft_is_scaled_once_at_every_size():
    """torch 2.13's CPU ifft2 scales twice at 2048 x 2048; the physics' own ifft2 must not."""
    from napari_voxrecon.physics.wave_optics import ifft2

    for n in (64, 2048):
        x = torch.zeros(n, n, dtype=torch.complex64)
        x[3, 5] = 1 + 2j
        torch.testing.assert_close(ifft2(torch.fft.fft2(x)), x, rtol=0, atol=1e-5)


def test_ri_phantoms_have_cell_contrasts_and_are_reproducible():
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    cell = make_ri_phantom((16, 48, 48), "cell", seed=1)
    assert cell.dtype == np.float32 and cell.min() >= 1.33 - 1e-6
    assert 1.35 < cell.max() < 1.45  # cytoplasm + nucleus + organelles over water
    assert (cell > 1.34).mean() > 0.05  # a cell fills part of the field
    np.testing.assert_array_equal(cell, make_ri_phantom((16, 48, 48), "cell", seed=1))
    tubes = make_ri_phantom((16, 48, 48), "tubes", seed=2)
    assert 1.335 < tubes.max() < 1.37
    with pytest.raises(InputError, match="unknown refractive-index phantom"):
        make_ri_phantom((8, 8, 8), "blob")


def test_tissue_phantom_holds_many_cells_at_different_depths():
    from scipy import ndimage

    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    tissue = make_ri_phantom((32, 64, 64), "tissue", seed=4)
    np.testing.assert_array_equal(tissue, make_ri_phantom((32, 64, 64), "tissue", seed=4))
    assert tissue.min() >= 1.33 - 1e-6 and 1.35 < tissue.max() < 1.45
    labels, count = ndimage.label(tissue > 1.345)  # cell bodies (cytoplasm is at least +0.015)
    assert count >= 3
    depths = ndimage.center_of_mass(tissue > 1.345, labels, range(1, count + 1))
    assert np.ptp([d[0] for d in depths]) > 8  # not all in one layer: no sum of planes describes it


def test_irregular_outlines_dent_the_cells_where_the_ellipsoidal_phantom_has_them():
    from scipy import ndimage
    from skimage.measure import regionprops

    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    def body(ri: np.ndarray):  # the largest cell body (cytoplasm is at least +0.015)
        labels, _ = ndimage.label(ri > 1.345)
        return max(regionprops(labels), key=lambda p: p.area)

    plain = make_ri_phantom((16, 48, 48), "cell", seed=1)
    np.testing.assert_array_equal(plain, make_ri_phantom((16, 48, 48), "cell", seed=1, irregular=0.0))
    lobed = make_ri_phantom((16, 48, 48), "cell", seed=1, irregular=0.25)
    np.testing.assert_array_equal(lobed, make_ri_phantom((16, 48, 48), "cell", seed=1, irregular=0.25))
    assert body(plain).solidity > 0.88 and body(lobed).solidity < 0.8  # an ellipsoid is convex, a lobed cell is not
    a, b = plain > 1.345, lobed > 1.345
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.6  # the same cell where it was, only its outline changed
    assert 1.35 < lobed.max() < 1.45
    with pytest.raises(InputError, match="between 0"):
        make_ri_phantom((8, 16, 16), "cell", irregular=1.5)
    with pytest.raises(InputError, match="not 'tubes'"):
        make_ri_phantom((8, 16, 16), "tubes", irregular=0.2)


def test_tissue_density_packs_more_cells_of_the_same_size_into_the_field():
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    plain = make_ri_phantom((32, 64, 64), "tissue", seed=4)
    np.testing.assert_array_equal(plain, make_ri_phantom((32, 64, 64), "tissue", seed=4, density=1.0))
    dense = make_ri_phantom((32, 64, 64), "tissue", seed=4, density=3.0)
    assert (dense > 1.345).mean() > 1.5 * (plain > 1.345).mean()  # cell bodies fill more of the field
    assert 1.35 < dense.max() < 1.45  # the same make-up, not brighter cells
    with pytest.raises(InputError, match="between 0.25 and 8"):
        make_ri_phantom((8, 16, 16), "tissue", density=20)
    with pytest.raises(InputError, match="'tissue'"):
        make_ri_phantom((8, 16, 16), "cell", density=2)


def test_a_larger_tissue_holds_more_cells_not_larger_ones():
    from napari_voxrecon.simulate.ri_phantoms import TISSUE_REFERENCE_UM, tissue_cell_count

    cube = np.full(3, TISSUE_REFERENCE_UM)
    assert tissue_cell_count(cube, 9) == 9
    assert tissue_cell_count(2 * cube, 9) == 72  # eight times the volume
    assert tissue_cell_count(cube / 4, 9) == 1  # a tiny field still holds one
    assert tissue_cell_count(100 * cube, 12) == 400  # capped: generation cost grows with the count


def test_simulated_diffraction_images_see_the_sample_and_write_the_contract_files(tmp_path):
    from napari_voxrecon.cli import main
    from napari_voxrecon.io import read_volume, write_volume
    from napari_voxrecon.simulate.diffraction import read_sources
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    ri = make_ri_phantom((8, 32, 32), "cell", seed=3, voxel_size=(0.4, 0.2, 0.2))
    write_volume(tmp_path / "ri.tif", ri, (0.4, 0.2, 0.2))
    assert main(["simulate", "diffraction", str(tmp_path / "ri.tif"), "-o", str(tmp_path / "img.tif"), "--views", "3",
                 "--sources-out", str(tmp_path / "src.json"), "--seed", "1", "-q"]) == 0
    images = read_volume(tmp_path / "img.tif").data
    sources = read_sources(tmp_path / "src.json")
    optics = Optics.load(tmp_path / "img_optics.json")
    assert images.shape == (3, 32, 32) and sources.shape == (3, 3) and (sources[:, 0] < 0).all()
    assert optics.voxel_size == (0.4, 0.2, 0.2)  # taken from the volume's metadata
    # the same sources through water give different images: the sample is seen
    water = forward_images(torch.zeros(8, 32, 32), torch.from_numpy(sources), optics, pad=16).numpy()
    water /= water.max()
    assert np.abs(images - water).max() > 0.05
    assert main(["simulate", "diffraction", str(tmp_path / "ri.tif"), "-o", str(tmp_path / "hazy.tif"), "--views", "3",
                 "--seed", "1", "--haze", "0.1", "--bandwidth", "0.03", "--source-size", "0.1", "-q"]) == 0
    hazy = read_volume(tmp_path / "hazy.tif").data
    np.testing.assert_array_equal(read_sources(tmp_path / "hazy_sources.json"), sources)  # beside the images by default
    assert hazy.min() > images.min() + 0.02  # the haze lifts the dark surround
    (tmp_path / "flat.tif").unlink(missing_ok=True)
    write_volume(tmp_path / "fluo.tif", ri * 1000)
    assert main(["simulate", "diffraction", str(tmp_path / "fluo.tif"), "-o", str(tmp_path / "x.tif"), "--views", "2",
                 "--sources-out", str(tmp_path / "s.json"), "-q"]) != 0
    assert not (tmp_path / "x.tif").exists()


def test_index_fields_start_at_the_background_and_nvp_refines_its_grid():
    from napari_voxrecon.models.index_fields import NVPField, make_field

    for kind in ("explicit", "triplane", "nvp"):
        assert float(make_field(kind, (6, 16, 16))().detach().abs().max()) == 0.0
    nvp = NVPField((6, 16, 16), features=4, downsample=4)
    nvp.mlp[-1].weight.data.normal_()
    before = nvp().detach()
    assert nvp.refine() and nvp.grids[0].shape[-3:] == (3, 8, 8)
    after = nvp().detach()  # refining keeps the field up to re-interpolation
    assert float(((after - before) ** 2).mean()) < 0.05 * float((before ** 2).mean())
    assert nvp.refine() and not nvp.refine()
    # anisotropic nodes and a coarser second level: the finest grid refines, the coarse one stays
    multi = NVPField((8, 16, 16), features=4, downsample=(4, 2, 2), levels=2)
    assert [g.shape[-3:] for g in multi.grids] == [(2, 8, 8), (2, 4, 4)] and multi.mlp[0].in_features == 8
    assert multi.refine() and [g.shape[-3:] for g in multi.grids] == [(4, 16, 16), (2, 4, 4)]
    assert multi.refine() and multi.downsample == (1, 1, 1) and not multi.refine()
    assert multi().shape == (8, 16, 16)
    # ``init`` scales the random features of both feature representations
    for kind in ("triplane", "nvp"):
        small, large = make_field(kind, (6, 16, 16), init=0.01), make_field(kind, (6, 16, 16), init=1.0)
        spread = lambda f: float(torch.cat([q.flatten() for n, q in f.named_parameters() if "mlp" not in n]).std())  # noqa: E731
        assert 50 < spread(large) / spread(small) < 200
    # the fit loop's hooks: only NVP refines; only the voxel grid's parameters can be put back on Δn >= 0
    for kind in ("explicit", "triplane"):
        assert not make_field(kind, (6, 16, 16)).refine()
    grid = make_field("explicit", (6, 16, 16))
    grid.values.data.normal_()
    grid.project_nonnegative()
    assert float(grid.values.min()) == 0.0 and float(grid().max()) > 0
    tri = make_field("triplane", (6, 16, 16))
    tri.mlp[-1].weight.data.normal_()
    before = tri().detach()
    tri.project_nonnegative()  # a decoder's parameters are left alone (its output is clipped instead)
    assert float(before.min()) < 0 and torch.equal(tri().detach(), before)


def test_triplane_combines_its_planes_by_sum_or_by_product():
    from napari_voxrecon.models.index_fields import TriplaneField

    torch.manual_seed(0)
    for combine in ("sum", "product"):
        f = TriplaneField((3, 5, 4), features=2, downsample=1, combine=combine)
        xy, xz, yz = f.xy[0].detach(), f.xz[0].detach(), f.yz[0].detach()
        z, y, x = 2, 3, 1  # one node per voxel: a voxel's feature is its three planes' values
        parts = (xy[:, y, x], xz[:, z, x], yz[:, z, y])
        expect = parts[0] * parts[1] * parts[2] if combine == "product" else parts[0] + parts[1] + parts[2]
        assert torch.allclose(f.features().detach()[:, z, y, x], expect, atol=1e-6)
        assert torch.equal(f().detach(), torch.zeros(3, 5, 4))  # starts at the background like the others
    # the product's planes start near 1, so the features are not a vanishing product of small noise
    assert float(TriplaneField((3, 5, 4), combine="product").features().abs().mean()) > 0.5
    with pytest.raises(ValueError, match="combine"):
        TriplaneField((3, 5, 4), combine="concat")


def test_smooth_features_keep_the_mean_do_not_shift_and_have_no_kinks_at_the_nodes():
    from napari_voxrecon.models.index_fields import NVPField, TriplaneField, _box_blur

    spike = torch.zeros(9, 2)
    spike[4] = 1.0
    for width in (1, 2, 3, 4, 6):
        out = _box_blur(spike, width)
        assert torch.allclose(out.sum(0), torch.ones(2), atol=1e-6)  # a mean: nothing gained or lost inside
        assert torch.allclose(out, out.flip(0), atol=1e-7)  # symmetric: an even width does not shift by half a row
        assert int((out[:, 0] > 0).sum()) == width + 1 - width % 2  # odd: width taps; even: width + 1, half-weight ends
    assert torch.equal(_box_blur(spike, 0), spike)
    # NVP: trilinear features bend only at the nodes; smoothed ones bend less there than between
    torch.manual_seed(0)
    plain = NVPField((4, 4, 64), features=2, downsample=(1, 1, 8))
    smooth = NVPField((4, 4, 64), features=2, downsample=(1, 1, 8), smooth=1.0)
    smooth.load_state_dict(plain.state_dict())
    for net in (plain, smooth):  # a linear read-out of the first feature, so the field is the features
        net.mlp = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        net.mlp[0].weight.data = torch.tensor([[1.0, 0.0]])
    kink = lambda net: float(net().detach()[2, 2].diff(n=2).abs().max())  # noqa: E731
    assert kink(smooth) < 0.3 * kink(plain)
    # the triplane's smoothing is the same window on each plane; one node per voxel leaves it unchanged
    a, b = TriplaneField((5, 8, 6), features=3, downsample=1), TriplaneField((5, 8, 6), features=3, downsample=1, smooth=1.0)
    b.load_state_dict(a.state_dict())
    for net in (a, b):
        net.mlp[-1].weight.data.fill_(1.0)
    assert torch.allclose(a(), b(), atol=1e-7)


def test_fitting_recovers_a_phantom_better_than_the_background_and_calibrates_sources():
    """A tiny noise-free problem: 6 views of a cell; the fitted NVP is closer to the truth than
    Δn = 0, and with perturbed source positions self-calibration moves them towards the truth."""
    from napari_voxrecon.models.diffraction_fit import FitConfig, fit_index
    from napari_voxrecon.simulate.diffraction import draw_sources, simulate_diffraction
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    torch.set_num_threads(2)
    optics = Optics(voxel_size=(0.4, 0.2, 0.2))
    shape = (8, 24, 24)
    ri = make_ri_phantom(shape, "cell", seed=11, voxel_size=optics.voxel_size)
    src = draw_sources(shape, optics, 6, "below", seed=11)
    imgs = simulate_diffraction(ri, optics, src, 0.0, pad=8)
    gt = ri - 1.33
    seen = []
    res = fit_index(imgs, src, optics, shape[0], "nvp", FitConfig(iterations=60, calibrate=False, pad=8),
                    callback=lambda step: seen.append((step.iteration, step.loss)))
    assert res.dn.shape == shape and len(seen) == 60 and res.losses[-1] < 0.5 * res.losses[0]
    assert float(((res.dn - gt) ** 2).mean()) < 0.5 * float((gt ** 2).mean())
    shifted = src.copy()
    shifted[:, 1:] += 0.3  # µm: 1.5 pixels off laterally
    cal = fit_index(imgs, shifted, optics, shape[0], "nvp", FitConfig(iterations=60, pad=8, source_lr=0.02, calibrate_after=0.0))
    assert np.abs(cal.sources[:, 1:] - src[:, 1:]).mean() < 0.5 * 0.3
    held = fit_index(imgs, shifted, optics, shape[0], "nvp", FitConfig(iterations=5, pad=8, calibrate_after=1.0))
    np.testing.assert_array_equal(held.sources, shifted)  # held for the whole (short) fit
    # the sources' common depth trades against the index's level, a tilt of their depths against an
    # index gradient: the depths' best-fit plane is held as given by default, free on request
    deep = shifted + np.array([0.3, 0.0, 0.0], np.float32)
    kept = fit_index(imgs, deep, optics, shape[0], "nvp", FitConfig(iterations=15, pad=8, calibrate_after=0.0))
    basis = np.c_[np.ones(len(deep)), deep[:, 1:] - deep[:, 1:].mean(0)]
    plane = lambda z: np.linalg.lstsq(basis, z, rcond=None)[0]  # noqa: E731  (common depth, tilt in y, tilt in x)
    np.testing.assert_allclose(plane(kept.sources[:, 0]), plane(deep[:, 0]), atol=1e-4)
    assert np.abs(kept.sources[:, 0] - deep[:, 0]).max() > 2e-3  # depths about that plane moved,
    assert np.abs(kept.sources[:, 1:] - deep[:, 1:]).max() > 0.01  # and the lateral positions
    free = fit_index(imgs, deep, optics, shape[0], "nvp", FitConfig(iterations=15, pad=8, calibrate_after=0.0, hold_depth=False))
    assert abs(float(free.sources[:, 0].mean() - deep[:, 0].mean())) > 1e-3
    # Off in z (the defocused spot's size) as well as laterally: calibrated with the index from the
    # start, the images compared blurred at first (the schedule for estimated positions), then
    # refitted afresh from the positions found, the sources come back and the index is recovered.
    from napari_voxrecon.models.diffraction_fit import fit_passes
    from napari_voxrecon.physics.source_fit import ESTIMATED_SOURCE_CALIBRATION

    off = src + np.array([0.4, 0.3, -0.3], np.float32)
    err = lambda s: float(np.sqrt(((s - src) ** 2).sum(axis=1).mean()))  # noqa: E731
    cfg = FitConfig(iterations=40, pad=8, refit=20, **ESTIMATED_SOURCE_CALIBRATION)
    first, second = fit_passes(cfg)
    assert (first.iterations, first.calibrate_after, first.anneal_blur, first.hold_depth) == (40, 0.0, 4.0, False)
    assert (second.iterations, second.refit, second.calibrate_after, second.anneal_blur, second.hold_depth) == (20, 0, 0.5, 0.0, False)
    # the common depth is held unless the schedule searches (annealed blur or refit), or as asked
    assert fit_passes(FitConfig())[0].hold_depth and not fit_passes(FitConfig(refit=5))[0].hold_depth
    assert fit_passes(FitConfig(anneal_blur=4.0, hold_depth=True))[0].hold_depth
    assert len(fit_passes(FitConfig(refit=20, calibrate=False))) == 1
    steps = []
    joint = fit_index(imgs, off, optics, shape[0], "nvp", cfg, callback=steps.append)
    assert [s.iteration for s in steps] == list(range(1, 61)) and {s.total for s in steps} == {60}
    assert len(joint.losses) == 60 and joint.iterations == 60
    np.testing.assert_array_equal(steps[49].sources, steps[39].sources)  # the second fit holds them for its first half
    # a fresh representation stands for the first fit's estimate until its loss is lower (previews, a stop)
    np.testing.assert_array_equal(steps[40].render(), steps[39].render())
    assert not np.array_equal(joint.dn, steps[39].render())
    assert err(steps[39].sources) < 0.5 * err(off)
    assert err(joint.sources) < 0.5 * err(off)
    assert float(((joint.dn - gt) ** 2).mean()) < float((gt ** 2).mean())
    stopped = fit_index(imgs, src, optics, shape[0], "explicit", FitConfig(iterations=50, pad=8), should_stop=lambda: True)
    assert stopped.iterations == 1


def test_support_pruning_and_sparsity_priors_act_on_every_representation():
    """``support_of`` keeps a margin around what is there and nothing far from it; with
    ``prune`` the fitted index is exactly background outside the support found at ``prune_at``;
    ``sparsity`` shrinks the index towards the least one that explains the images."""
    from napari_voxrecon.models.diffraction_fit import FitConfig, fit_index, support_of
    from napari_voxrecon.simulate.diffraction import draw_sources, simulate_diffraction
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    dn = torch.zeros(8, 24, 24)
    dn[4, 12, 12] = 0.02
    dn[1, 2, 2] = 0.001  # below the 10 % threshold: pruned
    mask = support_of(dn, 0.1)
    assert mask[2:7, 8:17, 8:17].min() == 1 and float(mask.sum()) == 5 * 9 * 9
    torch.set_num_threads(2)
    optics = Optics(voxel_size=(0.4, 0.2, 0.2))
    shape = (8, 32, 32)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ri = (1.33 + 0.03 * (((z - 4) / 2) ** 2 + ((y - 16) / 5) ** 2 + ((x - 16) / 5) ** 2 < 1)).astype(np.float32)  # one bead
    src = draw_sources(shape, optics, 4, "below", seed=11)
    imgs = simulate_diffraction(ri, optics, src, 0.0, pad=8)
    for kind in ("nvp", "triplane", "explicit"):  # the priors at their weights as given (tested on their own below)
        steps = []
        res = fit_index(imgs, src, optics, shape[0], kind, FitConfig(iterations=20, pad=8, calibrate=False, prune=0.7, prune_at=(0.5,),
                                                                     cover_priors=False),
                        callback=lambda step: steps.append(step.render()))
        outside = support_of(torch.from_numpy(steps[8]), 0.7).numpy() == 0  # the estimate the support was taken from
        assert outside.mean() > 0.05 and float(np.abs(res.dn[outside]).max()) == 0.0
        assert float(np.abs(steps[8][outside]).max()) > 0  # before pruning the index was there too
    # pruning again later narrows the support further, never widens it
    steps = []
    res = fit_index(imgs, src, optics, shape[0], "nvp", FitConfig(iterations=20, pad=8, calibrate=False, prune=0.5,
                                                                  prune_at=(0.25, 0.5)), callback=lambda step: steps.append(step.render()))
    first = support_of(torch.from_numpy(steps[3]), 0.5).numpy()
    second = first * support_of(torch.from_numpy(steps[8]), 0.5).numpy()
    assert second.sum() < first.sum() and float(np.abs(res.dn[second == 0]).max()) == 0.0
    assert float(np.abs(steps[8][(first == 1) & (second == 0)]).max()) > 0  # taken away by the second pruning
    assert float(support_of(torch.zeros(2, 4, 4), 0.1).min()) == 1.0
    ri = make_ri_phantom((8, 24, 24), "cell", seed=11, voxel_size=optics.voxel_size)
    imgs = simulate_diffraction(ri, optics, src, 0.0, pad=8)
    plain = fit_index(imgs, src, optics, 8, "nvp", FitConfig(iterations=20, pad=8, calibrate=False))
    sparse = fit_index(imgs, src, optics, 8, "nvp", FitConfig(iterations=20, pad=8, calibrate=False, sparsity=0.1))
    assert np.abs(sparse.dn).mean() < 0.7 * np.abs(plain.dn).mean()


def test_partially_coherent_fluorescence_washes_out_fringes_and_adds_haze():
    from napari_voxrecon.simulate.diffraction import PartialCoherence, draw_sources, simulate_diffraction
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    optics = Optics()
    shape = (8, 48, 48)
    ri = make_ri_phantom(shape, "cell", seed=1, voxel_size=optics.voxel_size, n_background=optics.n_background)
    src = draw_sources(shape, optics, 2, seed=1)
    coherent = simulate_diffraction(ri, optics, src, 0.0, pad=8)
    assert np.array_equal(coherent, simulate_diffraction(ri, optics, src, 0.0, pad=8, coherence=PartialCoherence()))
    blurred = simulate_diffraction(ri, optics, src, 0.0, pad=8, coherence=PartialCoherence(bandwidth=0.04, source_size=0.15))

    def detail(img):  # energy of the finest fringes: the Laplacian
        return float(np.mean((4 * img[:, 1:-1, 1:-1] - img[:, :-2, 1:-1] - img[:, 2:, 1:-1] - img[:, 1:-1, :-2]
                              - img[:, 1:-1, 2:]) ** 2) / np.mean(img) ** 2)

    assert detail(blurred) < 0.7 * detail(coherent)
    hazy = simulate_diffraction(ri, optics, src, 0.0, pad=8, coherence=PartialCoherence(haze=0.1))
    dark = coherent < 0.01
    assert dark.any() and float(hazy[dark].min()) > 0.03  # the dark surround now glows
    with pytest.raises(InputError, match="partial coherence"):
        simulate_diffraction(ri, optics, src, 0.0, pad=8, coherence=PartialCoherence(haze=-1))


def test_the_loss_absorbs_a_per_view_smooth_background_and_the_blur_keeps_a_flat_image_flat():
    from napari_voxrecon.models.diffraction_fit import background_basis, gaussian_blur, image_loss

    torch.manual_seed(0)
    pred = torch.rand(3, 20, 24)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 20), torch.linspace(-1, 1, 24), indexing="ij")
    haze = torch.stack([0.1 + 0.2 * yy, 0.3 - 0.1 * xx + 0.05 * yy, 0 * yy])  # a different plane per view
    meas = 2.5 * pred + haze
    ones = torch.ones_like(meas)
    assert float(image_loss(pred, meas, 0.2)) > 0.05  # exposure alone cannot explain the haze
    assert float(image_loss(pred, meas, 0.2, None, background_basis(ones, 1))) < 1e-5
    assert float(image_loss(pred, 2.5 * pred + yy ** 2, 0.0, None, background_basis(ones, 1))) > 1e-3  # a plane cannot fit a parabola
    assert float(image_loss(pred, 2.5 * pred + yy ** 2, 0.0, None, background_basis(ones, 2))) < 1e-6
    flat = gaussian_blur(torch.full((2, 8, 8), 3.0), 1.5)
    assert torch.allclose(flat, torch.full_like(flat, 3.0))
    dot = torch.zeros(1, 15, 15)
    dot[0, 7, 7] = 1
    blurred = gaussian_blur(dot, 1.0)
    assert float(blurred.sum()) == pytest.approx(1.0, rel=1e-5) and float(blurred.max()) < 0.2
    assert gaussian_blur(torch.rand(2, 8, 8), 5.0).shape == (2, 8, 8)  # a kernel wider than the image


def test_an_annealed_comparison_blur_narrows_from_its_start_to_the_fixed_blur():
    from napari_voxrecon.models.diffraction_fit import FitConfig, comparison_blur

    assert comparison_blur(FitConfig(compare_blur=1.0), 1) == 1.0  # no annealing: the fixed blur throughout
    cfg = FitConfig(iterations=100, anneal_blur=3.0, anneal_until=0.4, compare_blur=1.0)
    sigmas = [comparison_blur(cfg, it) for it in range(1, 101)]
    assert sigmas[0] == 3.0 and sigmas[20] == pytest.approx(2.0)  # halfway through the 40 annealed iterations
    assert all(a >= b for a, b in zip(sigmas, sigmas[1:])) and set(sigmas[40:]) == {1.0}
    assert comparison_blur(FitConfig(iterations=100, anneal_blur=2.0), 51) == 0.0  # to unblurred, by half the fit by default


def test_views_see_the_acceptance_cone_above_their_sources():
    """A source sees the voxels above it within asin(NA / n) of the axis, none level with or below
    it; one far below sees the whole grid, one above it none; ``view_share`` averages the share."""
    from napari_voxrecon.physics.coverage import view_share, views_per_voxel

    optics = Optics(voxel_size=(0.4, 0.2, 0.2))  # NA 0.8 in water: tan(asin(0.8 / 1.33)) = 0.753
    tan = math.tan(math.asin(optics.na / optics.n_background))
    shape = (8, 16, 16)
    src = np.array([[0.8, 1.6, 1.6]])  # at slab 2, under pixel (8, 8)
    count = views_per_voxel(shape, src, optics)
    assert count[:3].sum() == 0 and count[3, 8, 8] == 1  # slab 2 is level with it
    height = 7 * 0.4 - 0.8  # the top slab, 2 µm above the source: the cone's radius there is 1.51 µm
    r = np.hypot(*np.meshgrid((np.arange(16) - 8) * 0.2, (np.arange(16) - 8) * 0.2, indexing="ij"))
    np.testing.assert_array_equal(count[7], (r <= tan * height).astype(np.int32))
    assert view_share(shape, np.array([[-100.0, 1.6, 1.6]]), optics) == 1.0
    assert view_share(shape, np.array([[5.0, 1.6, 1.6]]), optics) == 0.0
    two = np.array([[-100.0, 1.6, 1.6], [5.0, 1.6, 1.6]])
    assert view_share(shape, two, optics) == 0.5 and views_per_voxel(shape, two, optics).max() == 1
    assert view_share(shape, np.zeros((0, 3)), optics) == 0.0


def test_the_priors_weigh_with_the_share_of_views_that_see_the_grid():
    """``prior_scale`` is 1 at the tuning geometry's share, smaller for a field wide for its depth;
    a fit with ``cover_priors`` is the fit without it at tv and sparsity times that scale."""
    from napari_voxrecon.models.diffraction_fit import REFERENCE_VIEW_SHARE, FitConfig, fit_index, prior_scale
    from napari_voxrecon.physics.coverage import view_share
    from napari_voxrecon.simulate.diffraction import draw_sources, simulate_diffraction
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    optics = Optics(voxel_size=(0.4, 0.2, 0.2))
    small, wide = (32, 64, 64), (32, 128, 128)
    s_small = draw_sources(small, optics, 6, "below", seed=10_100)  # a tuning seed's sources
    s_wide = draw_sources(wide, optics, 6, "below", seed=10_100)
    assert prior_scale(view_share(small, s_small, optics)) == pytest.approx(view_share(small, s_small, optics) / REFERENCE_VIEW_SHARE)
    assert abs(prior_scale(view_share(small, s_small, optics)) - 1) < 0.05
    assert prior_scale(view_share(wide, s_wide, optics)) < 0.5
    assert prior_scale(view_share(small, np.array([[50.0, 3.0, 3.0]]), optics)) == pytest.approx(0.1)  # unseen: floored
    torch.set_num_threads(2)
    shape = (8, 32, 32)
    src = draw_sources(shape, optics, 3, "below", seed=5)
    scale = prior_scale(view_share(shape, src, optics))
    assert abs(scale - 1) > 0.1  # a geometry where the weighting matters
    ri = make_ri_phantom(shape, "cell", seed=5, voxel_size=optics.voxel_size)
    imgs = simulate_diffraction(ri, optics, src, 0.0, pad=8)
    base = dict(iterations=6, pad=8, calibrate=False, tv=0.05, sparsity=0.05)
    on = fit_index(imgs, src, optics, shape[0], "explicit", FitConfig(**base))
    scaled = fit_index(imgs, src, optics, shape[0], "explicit",
                       FitConfig(**{**base, "tv": 0.05 * scale, "sparsity": 0.05 * scale, "cover_priors": False}))
    off = fit_index(imgs, src, optics, shape[0], "explicit", FitConfig(**{**base, "cover_priors": False}))
    np.testing.assert_allclose(on.losses, scaled.losses, rtol=1e-5)
    assert not np.allclose(on.losses, off.losses, rtol=1e-3)


def test_a_nonnegative_index_is_clipped_with_a_gradient_that_can_raise_it():
    """``nonnegative``: Δn is clipped at 0; below 0 only the gradients that would raise a voxel
    pass (a decoder pushed negative everywhere would otherwise never come back); a fitted index
    then has no negative voxel where the unconstrained fit has some, for every representation."""
    from dataclasses import replace

    from napari_voxrecon.models.diffraction_fit import FitConfig, _NonNegative, fit_index
    from napari_voxrecon.simulate.diffraction import draw_sources, simulate_diffraction
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    x = torch.tensor([-1.0, -1.0, 0.5, 0.0], requires_grad=True)
    y = _NonNegative.apply(x)
    assert y.tolist() == [0.0, 0.0, 0.5, 0.0]
    y.backward(torch.tensor([1.0, -1.0, 1.0, 1.0]))  # descent lowers voxel 0 (blocked) and raises voxel 1 (passed)
    assert x.grad.tolist() == [0.0, -1.0, 1.0, 1.0]
    torch.set_num_threads(2)
    optics = Optics(voxel_size=(0.4, 0.2, 0.2))
    src = draw_sources((8, 24, 24), optics, 4, "below", seed=11)
    ri = make_ri_phantom((8, 24, 24), "cell", seed=11, voxel_size=optics.voxel_size)
    imgs = simulate_diffraction(ri, optics, src, 0.0, pad=8)
    for kind in ("nvp", "triplane", "explicit"):
        cfg = FitConfig(iterations=15, pad=8, calibrate=False)
        plain = fit_index(imgs, src, optics, 8, kind, cfg)
        clipped = fit_index(imgs, src, optics, 8, kind, replace(cfg, nonnegative=True))
        assert plain.dn.min() < 0 and clipped.dn.min() == 0.0, kind
        assert clipped.dn.max() > 0.2 * plain.dn.max(), kind  # it still fits the cell
