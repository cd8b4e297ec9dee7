"""Hot pixels: found where no light through the pupil could put them, replaced, and never in a real spot."""

import numpy as np
import pytest

from napari_voxrecon.physics.hot_pixels import find_hot_pixels, replace_hot_pixels, spot_neighbour_ratio
from napari_voxrecon.physics.optics import Optics
from napari_voxrecon.simulate.diffraction import simulate_diffraction


def _spots(optics: Optics, size: int = 24) -> np.ndarray:
    """In-focus point sources in water (the sharpest image the optics can form), centred on a
    pixel, between two and between four."""
    px = optics.voxel_size[2]
    focus = optics.focal_plane(4)
    src = np.array([[focus, size / 2 * px + dy, size / 2 * px + dx] for dy, dx in ((0, 0), (px / 2, 0), (px / 2, px / 2))],
                   np.float32)
    return simulate_diffraction(np.full((4, size, size), optics.n_background, np.float32), optics, src)


def test_the_in_focus_spot_matches_the_airy_ratio_the_bound_assumes():
    optics = Optics(depth=4)
    images = _spots(optics)
    ratio = spot_neighbour_ratio(optics)
    assert ratio == pytest.approx(0.352, abs=0.01)  # (2 J1(v)/v)^2 at v = 2π 0.8 0.2 / 0.515
    centred = np.sort(images[0].ravel())
    assert centred[-2] / centred[-1] == pytest.approx(ratio, rel=0.1)


@pytest.mark.parametrize("na, pixel", [(0.8, 0.2), (1.2, 0.1), (0.5, 0.3), (1.2, 0.2)])
def test_no_real_spot_is_flagged(na, pixel):
    optics = Optics(na=na, voxel_size=(0.4, pixel, pixel), depth=4)
    assert not find_hot_pixels(_spots(optics), optics).any()


def test_an_isolated_bright_pixel_is_found_and_replaced_by_its_neighbours():
    optics = Optics(depth=4)
    images = _spots(optics)
    hot = images.copy()
    hot[1, 3, 4] = 10.0  # in the dark beside the spot
    hot[2, 12, 13] = 10.0 * images.max()  # on the spot itself
    mask = find_hot_pixels(hot, optics)
    assert np.argwhere(mask).tolist() == [[1, 3, 4], [2, 12, 13]]
    fixed = replace_hot_pixels(hot, mask)
    assert fixed[1, 3, 4] == pytest.approx(np.median(np.delete(hot[1, 2:5, 3:6].ravel(), 4)))
    assert fixed[2, 12, 13] <= images[2].max()
    np.testing.assert_array_equal(fixed[~mask], hot[~mask])  # nothing else touched
    assert hot[1, 3, 4] == 10.0  # the input is not modified


def test_pixels_too_coarse_for_the_na_flag_nothing():
    optics = Optics(na=1.3, voxel_size=(0.4, 0.25, 0.25), wavelength=0.45, depth=4)
    assert spot_neighbour_ratio(optics) < 0.2
    images = _spots(optics)
    images[1, 3, 4] = 10.0
    assert not find_hot_pixels(images, optics).any()


@pytest.mark.parametrize("kind", ["cell", "tubes"])
def test_photon_noise_is_not_taken_for_hot_pixels(kind):
    from napari_voxrecon.simulate.diffraction import draw_sources
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    optics = Optics(depth=8)
    ri = make_ri_phantom((8, 32, 32), kind, seed=3, voxel_size=optics.voxel_size)
    sources = draw_sources(ri.shape, optics, 4, seed=1)
    noisy = simulate_diffraction(ri, optics, sources, noise_level=0.3, seed=2)  # 30 % Poisson noise at the peak
    assert not find_hot_pixels(noisy, optics).any()
