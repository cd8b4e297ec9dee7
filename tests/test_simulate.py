import numpy as np
import pytest

from napari_voxrecon.errors import InputError
from napari_voxrecon.simulate import simulate_projection, simulate_restore, simulate_sparse


def test_sparse_keeps_planes_bit_exact(small_volume):
    out = simulate_sparse(small_volume, 4)
    assert out.shape[0] == 5  # planes 0, 4, 8, 12, 16 of 17
    np.testing.assert_array_equal(out, small_volume[::4])


def test_projection_is_exact_group_mean(small_volume):
    out = simulate_projection(small_volume, 3)
    assert out.shape == (5, *small_volume.shape[1:])  # 17 // 3; the incomplete last group is dropped
    for k in range(5):
        np.testing.assert_allclose(out[k], small_volume[3 * k: 3 * k + 3].mean(0), rtol=1e-6)


@pytest.mark.parametrize("a,l", [(2, 1), (4, 2), (3, 1)])
def test_restore_shapes_and_seed(small_volume, a, l):
    out = simulate_restore(small_volume, a, l, noise_level=0.05, seed=3)
    assert out.shape == (len(range(0, 17, a)), len(range(0, 24, l)), len(range(0, 20, l)))
    np.testing.assert_array_equal(out, simulate_restore(small_volume, a, l, noise_level=0.05, seed=3))
    assert not np.array_equal(out, simulate_restore(small_volume, a, l, noise_level=0.05, seed=4))


def test_restore_without_noise_or_blur_is_subsampling(small_volume):
    out = simulate_restore(small_volume, 2, 2, noise_level=0, axial_blur=0, lateral_blur=0)
    np.testing.assert_array_equal(out, small_volume[::2, ::2, ::2])


def test_noise_level_sets_relative_noise():
    from napari_voxrecon.simulate import poisson_gaussian_noise

    flat = np.full((4, 64, 64), 100.0, np.float32)
    flat[:, :, :32] = 0  # dark half (the offset) and bright half at 100
    noisy = poisson_gaussian_noise(flat, 0.1, np.random.default_rng(0))
    rel = noisy[:, :, 32:].std() / 100
    assert 0.09 < rel < 0.14  # shot noise 0.1 plus read noise 0.05 in quadrature = 0.112


@pytest.mark.parametrize("fn", [simulate_sparse, simulate_projection])
def test_interval_larger_than_stack_refused(small_volume, fn):
    with pytest.raises(InputError, match="too large"):
        fn(small_volume, 40)
