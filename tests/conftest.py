import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def small_volume(rng):
    """A small structured volume (smooth blobs + noise), float32, ZYX."""
    from scipy import ndimage

    vol = ndimage.gaussian_filter(rng.random((17, 24, 20)), (1.5, 2, 2)).astype(np.float32)
    return (vol - vol.min()) / (vol.max() - vol.min()) * 1000 + 100
