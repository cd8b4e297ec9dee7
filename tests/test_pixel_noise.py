"""How noisy diffraction images are, measured from the images, and the priors weighed by it."""

import numpy as np
import pytest
import torch

from napari_voxrecon.physics.optics import Optics
from napari_voxrecon.physics.pixel_noise import noise_share, pixel_noise, signal_share
from napari_voxrecon.simulate.diffraction import draw_sources, simulate_diffraction
from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom


@pytest.fixture(scope="module")
def views():
    """Four views of a small cell phantom, noiseless, and the optics and sources that made them."""
    optics = Optics(depth=8)
    ri = make_ri_phantom((8, 48, 48), "cell", seed=3, voxel_size=optics.voxel_size)
    sources = draw_sources(ri.shape, optics, 4, seed=3)
    return ri, optics, sources, simulate_diffraction(ri, optics, sources)


def test_pixel_noise_measures_white_noise_and_ignores_smooth_structure():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    smooth = np.exp(-((yy - 32) ** 2 + (xx - 30) ** 2) / 200.0).astype(np.float32)
    assert pixel_noise(smooth) < 0.01 * 1.0
    noisy = smooth + rng.normal(0, 0.05, smooth.shape).astype(np.float32)
    # the spread about the neighbours' median: the noise, and a little of the median's own
    assert 0.05 <= pixel_noise(noisy) <= 0.05 * 1.25
    assert pixel_noise(np.ones((2, 2))) == 0.0


def test_the_noise_share_of_clean_views_is_about_zero_and_grows_with_the_noise(views):
    ri, optics, sources, clean = views
    assert noise_share(clean, clean) == 0.0
    shares = [noise_share(simulate_diffraction(ri, optics, sources, noise_level=level, seed=1), clean)
              for level in (0.01, 0.1, 0.3)]
    assert shares[0] < 0.02 < shares[1] < shares[2]
    assert 0.04 < shares[1] < 0.1  # the typical (darker) pixel's noise: below the level at the bright one


def test_the_signal_share_is_what_the_specimen_does_to_the_spots_and_survives_noise(views):
    """Views through the bare medium against views through a cell: the cell changes the spots
    by a few per cent of the range, the medium not at all, and noise hardly moves the estimate."""
    from napari_voxrecon.physics.wave_optics import forward_images

    ri, optics, sources, clean = views
    with torch.no_grad():
        medium = forward_images(torch.zeros(ri.shape), torch.from_numpy(sources), optics).numpy()
    assert signal_share(3.0 * medium + 0.5, medium) < 1e-3  # exposure and offset are fitted, not signal
    cell = signal_share(clean, medium)
    assert cell > 0.01
    noisy = signal_share(simulate_diffraction(ri, optics, sources, noise_level=0.1, seed=3), medium)
    assert noisy == pytest.approx(cell, rel=0.3)


def test_tv_weighs_up_with_noise_against_signal_and_not_for_clean_images(views):
    """Clean and lightly noisy images keep τ as tuned; noisy ones weigh it up by
    (noise - floor)² over signal², the more the less the specimen changes the spots."""
    from napari_voxrecon.models.diffraction_fit import NOISE_FLOOR, SIGNAL_FLOOR, noise_and_signal, noise_tv_scale

    ri, optics, sources, clean = views
    for level in (0.0, 0.01):
        images = simulate_diffraction(ri, optics, sources, noise_level=level, seed=2)
        assert noise_tv_scale(*noise_and_signal(images, sources, optics, ri.shape[0])) == 1.0
    noisy = simulate_diffraction(ri, optics, sources, noise_level=0.2, seed=2)
    assert noise_tv_scale(*noise_and_signal(noisy, sources, optics, ri.shape[0])) > 1.25  # the job says so above that
    assert noise_tv_scale(NOISE_FLOOR + 0.05, 0.05) == pytest.approx(2.0)
    assert noise_tv_scale(NOISE_FLOOR + 0.05, 0.025) == pytest.approx(5.0)  # half the signal: four times the excess
    assert noise_tv_scale(NOISE_FLOOR + 0.05, 0.0) == pytest.approx(1 + (0.05 / SIGNAL_FLOOR) ** 2)  # bounded


def test_a_fit_with_noise_tv_is_the_fit_at_tv_times_its_weight(views):
    from napari_voxrecon.models.diffraction_fit import FitConfig, fit_index, noise_and_signal, noise_tv_scale

    torch.set_num_threads(2)
    ri, optics, sources, _ = views
    noisy = simulate_diffraction(ri, optics, sources, noise_level=0.2, seed=4)
    weight = noise_tv_scale(*noise_and_signal(noisy, sources, optics, ri.shape[0], pad=8))
    assert weight > 1.25
    base = dict(iterations=5, pad=8, calibrate=False, tv=0.05, sparsity=0.05, cover_priors=False)
    on = fit_index(noisy, sources, optics, ri.shape[0], "explicit", FitConfig(**base))
    scaled = fit_index(noisy, sources, optics, ri.shape[0], "explicit",
                       FitConfig(**{**base, "tv": 0.05 * weight, "noise_tv": False}))
    given = fit_index(noisy, sources, optics, ri.shape[0], "explicit", FitConfig(**{**base, "noise_tv_weight": 1.0}))
    off = fit_index(noisy, sources, optics, ri.shape[0], "explicit", FitConfig(**{**base, "noise_tv": False}))
    np.testing.assert_allclose(on.losses, scaled.losses, rtol=1e-5)
    np.testing.assert_allclose(given.losses, off.losses, rtol=1e-6)  # a weight given is used as given
    assert not np.allclose(on.losses, off.losses, rtol=1e-3)
