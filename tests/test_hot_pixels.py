"""Hot pixels: found where no light through the pupil could put them, replaced, and never in a real spot."""

import numpy as np
import pytest

from napari_voxrecon.physics.hot_pixels import (
    find_hot_pixels, replace_hot_pixels, spot_neighbour_ratio, spot_neighbour_ratios)
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


@pytest.mark.parametrize("na, pixel", [(0.8, 0.2), (1.1, 0.17), (0.5, 0.3)])  # (1.1, 0.17): ratio 0.23, near the limit
def test_no_spot_is_flagged_wherever_it_falls_on_the_pixels(na, pixel):
    optics = Optics(na=na, voxel_size=(0.4, pixel, pixel), depth=4)
    offsets = np.random.default_rng(0).uniform(0, 1, (24, 2))
    src = np.array([[optics.focal_plane(4), (12 + dy) * pixel, (12 + dx) * pixel] for dy, dx in offsets], np.float32)
    images = simulate_diffraction(np.full((4, 24, 24), optics.n_background, np.float32), optics, src)
    assert not find_hot_pixels(images, optics).any()


def test_the_kth_neighbour_ratios_start_at_the_centred_spot_and_fall():
    optics = Optics(depth=4)
    ratios = spot_neighbour_ratios(optics)
    assert ratios[0] == pytest.approx(spot_neighbour_ratio(optics), rel=1e-6)
    assert ratios[0] > ratios[1] > ratios[2] > 0.1


CLUSTERS = {"pair": [(0, 0), (0, 1)], "diagonal pair": [(0, 0), (1, 1)], "line of three": [(0, 0), (0, 1), (0, 2)],
            "corner of three": [(0, 0), (0, 1), (1, 1)]}


@pytest.mark.parametrize("shape", CLUSTERS)
@pytest.mark.parametrize("where", [(3, 3), (11, 11)])  # in the dark; on the spot
def test_a_cosmic_ray_of_two_or_three_pixels_is_found_and_replaced(shape, where):
    optics = Optics(depth=4)
    images = _spots(optics)
    hot = images.copy()
    cells = [(where[0] + dy, where[1] + dx) for dy, dx in CLUSTERS[shape]]
    for y, x in cells:
        hot[0, y, x] = 10.0 * images.max()
    mask = find_hot_pixels(hot, optics)
    assert sorted(map(tuple, np.argwhere(mask[0]).tolist())) == sorted(cells) and not mask[1:].any()
    fixed = replace_hot_pixels(hot, mask)
    # the median of the neighbours that are not hot: nowhere near the ray
    assert fixed[0].max() <= images[0].max() * 1.01


def test_a_block_of_four_is_left_as_a_spot_on_a_pixel_corner_would_be():
    optics = Optics(depth=4)
    hot = _spots(optics)
    hot[0, 3:5, 3:5] = 10.0 * hot.max()
    assert not find_hot_pixels(hot, optics).any()


def test_a_hot_pixel_on_the_border_is_found_and_replaced_by_its_neighbours_inside():
    optics = Optics(depth=4)
    hot = _spots(optics)
    hot[1, 0, 0] = hot[1, 0, 7] = 10.0 * hot.max()
    mask = find_hot_pixels(hot, optics)
    assert np.argwhere(mask).tolist() == [[1, 0, 0], [1, 0, 7]]
    fixed = replace_hot_pixels(hot, mask)
    assert fixed[1, 0, 0] == pytest.approx(np.median([hot[1, 0, 1], hot[1, 1, 0], hot[1, 1, 1]]))


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


@pytest.mark.parametrize("kind, noise, seed", [("cell", 0.3, 3), ("tubes", 0.3, 1), ("tubes", 0.5, 4), ("cell", 0.5, 5)])
def test_photon_noise_is_not_taken_for_hot_pixels(kind, noise, seed):
    from napari_voxrecon.simulate.diffraction import draw_sources
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    optics = Optics(depth=8)
    ri = make_ri_phantom((8, 32, 32), kind, seed=3, voxel_size=optics.voxel_size)
    sources = draw_sources(ri.shape, optics, 4, seed=seed)
    # 30 or 50 % Poisson noise at the peak, read noise of half that (seeds that flagged pixels
    # before the noise term)
    noisy = simulate_diffraction(ri, optics, sources, noise_level=noise, seed=seed + 1)
    assert not find_hot_pixels(noisy, optics).any()
