"""Source positions estimated from the spot images (physics.source_fit)."""

import math

import numpy as np
import pytest
import torch

from napari_voxrecon.errors import InputError
from napari_voxrecon.physics import Optics, forward_images
from napari_voxrecon.physics.source_fit import _model, defocus_table, estimate_sources, fit_spot


@pytest.mark.parametrize("centre", [(4.1, 5.3), (0.9, 8.8)])  # the second one's disc runs off the field
def test_a_generalised_gaussian_is_recovered_even_when_the_disc_is_clipped(centre):
    h = w = 48
    pixel = 0.2
    yy, xx = np.mgrid[0:h, 0:w] * pixel
    truth = np.array([centre[0], centre[1], 2.0, math.log(4.0), 0.8, 0.1])
    img = _model(truth, yy, xx) + np.random.default_rng(0).normal(0, 0.01, (h, w))
    spot = fit_spot(img, pixel)
    assert (spot.y, spot.x) == pytest.approx(centre, abs=0.03)
    assert spot.rho == pytest.approx(2.0, abs=0.03) and spot.sharpness == pytest.approx(4.0, rel=0.2)
    assert spot.rms < 0.05


def test_the_defocus_table_grows_like_the_numerical_aperture_cone():
    optics = Optics()
    d, rho = defocus_table(optics, 12.0, points=12)
    assert (np.diff(rho) >= 0).all() and rho[0] < 1.0
    tan = math.tan(math.asin(optics.na / optics.n_background))
    slope = (rho[-1] - rho[-3]) / (d[-1] - d[-3])
    assert slope == pytest.approx(tan, rel=0.15)  # far from focus the spot is the geometric blur disc


@pytest.mark.parametrize("camera_pixel", [None, 0.4])
def test_positions_are_recovered_from_background_medium_images(camera_pixel):
    optics = Optics(camera_pixel=camera_pixel)
    depth = 8
    # the last source's blur disc (radius about 4.5 µm) runs off the 9.6 µm field
    truth = torch.tensor([[-2.0, 4.0, 5.0], [-3.5, 5.5, 3.9], [-1.0, 4.6, 4.6], [-6.0, 4.8, 4.8]])
    with torch.no_grad():  # a wider margin than the estimate's model uses, and noise
        images = forward_images(torch.zeros(depth, 48, 48), truth, optics, pad=40).numpy()
    images = images + np.random.default_rng(0).normal(0, 0.01 * images.max(), images.shape)
    est = estimate_sources(images, optics, depth).positions
    assert est.shape == (4, 3)
    assert np.abs(est[:, 1:] - truth[:, 1:].numpy()).max() < 0.05
    assert np.abs(est[:3, 0] - truth[:3, 0].numpy()).max() < 0.03
    assert abs(est[3, 0] - truth[3, 0]) < 0.08
    # the table alone, fitted on whole discs, puts the clipped one far too shallow
    table_only = estimate_sources(images, optics, depth, refine=0).positions
    assert table_only[3, 0] - truth[3, 0] > 0.2


def test_images_without_a_spot_are_named():
    images = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32) * 0.01 + 1
    images[1] = 0.5
    with pytest.raises(InputError, match="image 1: it shows no spot"):
        estimate_sources(images, Optics(), 8)
    with pytest.raises(InputError, match="stack of K spot images"):
        estimate_sources(np.ones((32, 32)), Optics(), 8)


def test_the_coherence_mask_is_the_spot_disc_and_the_masked_loss_ignores_what_lies_outside():
    from napari_voxrecon.models.diffraction_fit import image_loss
    from napari_voxrecon.physics.source_fit import coherence_masks

    optics = Optics()
    truth = torch.tensor([[-6.0, 4.0, 5.0], [-4.0, 6.0, 4.0]])
    with torch.no_grad():
        images = forward_images(torch.zeros(8, 64, 64), truth, optics, pad=16)
    masks = coherence_masks(images.numpy(), optics, 0.8)
    assert masks.shape == images.shape and set(np.unique(masks)) == {0.0, 1.0}
    rho = [fit_spot(img, 0.2).rho for img in images.numpy()]
    for m, (_, y, x), r in zip(masks, truth.numpy(), rho):
        iy, ix = int(round(y / 0.2)), int(round(x / 0.2))
        assert m[iy, ix] == 1 and m.sum() * 0.04 == pytest.approx(math.pi * (0.8 * r) ** 2, rel=0.1)
    assert rho[0] > rho[1]  # the deeper source's disc is the wider

    w = torch.from_numpy(masks)
    pred = images * 1.7 + 0.01 * torch.rand_like(images)
    assert float(image_loss(pred, images, 0.2, torch.ones_like(images))) == pytest.approx(float(image_loss(pred, images, 0.2)), rel=1e-5)
    far = pred.clone()  # changed only more than the SSIM window's half width outside the mask
    far[(torch.nn.functional.max_pool2d(w[:, None], 9, 1, 4)[:, 0] == 0)] += 0.5
    assert float(image_loss(far, images, 0.0, w)) == pytest.approx(float(image_loss(pred, images, 0.0, w)), rel=1e-6)
    assert float(image_loss(far, images, 0.2, w)) == pytest.approx(float(image_loss(pred, images, 0.2, w)), rel=1e-6)
    assert float(image_loss(far, images, 0.2)) > float(image_loss(pred, images, 0.2))


def test_a_dark_frame_of_read_noise_is_taken_for_blank_and_noisy_views_are_not(monkeypatch):
    from napari_voxrecon.physics import source_fit
    from napari_voxrecon.physics.optics import Optics
    from napari_voxrecon.simulate.diffraction import draw_sources, simulate_diffraction
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    optics = Optics(depth=8)
    ri = make_ri_phantom((8, 40, 40), "cell", seed=3, voxel_size=optics.voxel_size)
    noisy = simulate_diffraction(ri, optics, draw_sources(ri.shape, optics, 5, seed=1), noise_level=0.1, seed=2)
    assert source_fit.blank_frames(noisy) == []  # every real view stands out of its noise
    dark = noisy.copy()
    scale = np.percentile(noisy, 99.9) - np.percentile(noisy, 0.1)
    dark[2] = np.percentile(noisy, 5) + np.random.default_rng(0).normal(0, 0.05 * scale, dark[2].shape)  # shutter closed
    assert source_fit.blank_frames(dark) == [2]
    monkeypatch.setattr(source_fit, "BLANK_SNR", 0.0)
    assert source_fit.blank_frames(dark) == []  # its noise spans more than 3 % of a view: the contrast test alone misses it


def test_noise_alone_stays_under_the_blank_threshold_and_a_spot_without_noise_far_above():
    from napari_voxrecon.physics.source_fit import BLANK_SNR, spot_snr

    rng = np.random.default_rng(1)
    assert max(spot_snr(rng.normal(100, 5, (48, 48))) for _ in range(20)) < BLANK_SNR
    yy, xx = np.mgrid[:48, :48]
    assert spot_snr(np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / 50.0)) > 1000 * BLANK_SNR
    assert spot_snr(np.zeros((48, 48))) == float("inf")  # no noise at all: nothing to measure against
