import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_voxrecon.errors import InputError
from napari_voxrecon.metrics import ccc, evaluate, missing_planes, ms_ssim_2d
from napari_voxrecon.normalize import denormalize, normalize, percentile_range


@pytest.fixture
def pair(rng):
    from scipy import ndimage

    gt = ndimage.gaussian_filter(rng.random((5, 64, 64)), 2).astype(np.float32) * 500 + 20
    pred = (gt + rng.normal(0, 5, gt.shape)).astype(np.float32)
    return pred, gt


def test_psnr_ssim_match_scikit_image_slice_means(pair):
    pred, gt = pair
    lo, hi = percentile_range(gt)
    p, g = normalize(pred, lo, hi), normalize(gt, lo, hi)
    ref_psnr = np.mean([peak_signal_noise_ratio(a, b, data_range=1.0) for b, a in zip(p, g)])
    ref_ssim = np.mean([structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False) for b, a in zip(p, g)])
    s = evaluate(pred, gt)
    assert s["psnr"] == pytest.approx(ref_psnr, abs=1e-3)
    assert s["ssim"] == pytest.approx(ref_ssim, abs=1e-5)


def test_perfect_prediction_scores(pair):
    _, gt = pair
    s = evaluate(gt, gt)
    assert s["psnr"] == 100.0 and s["ssim"] == pytest.approx(1.0)
    assert s["ms_ssim"] == pytest.approx(1.0) and s["dice"] == 1.0 and s["ccc"] == pytest.approx(1.0)


def test_scores_fall_with_noise(pair, rng):
    _, gt = pair
    prev = None
    for sigma in (5, 20, 80):
        s = evaluate(gt + rng.normal(0, sigma, gt.shape).astype(np.float32), gt)
        if prev:
            assert all(s[k] < prev[k] for k in ("psnr", "ssim", "ms_ssim", "ccc"))
        prev = s


def test_ms_ssim_is_between_ssim_like_bounds(pair):
    pred, gt = pair
    lo, hi = percentile_range(gt)
    v = ms_ssim_2d(normalize(pred[0], lo, hi), normalize(gt[0], lo, hi))
    assert 0.0 < v < 1.0


def test_ccc_penalises_bias_unlike_correlation(pair):
    _, gt = pair
    assert ccc(gt + 100, gt) < 0.9
    assert np.corrcoef((gt + 100).ravel(), gt.ravel())[0, 1] == pytest.approx(1.0)


def test_missing_planes_and_subset(pair):
    pred, gt = pair
    assert missing_planes(9, 4) == [1, 2, 3, 5, 6, 7]
    pred = pred.copy()
    pred[[0, 4]] = gt[[0, 4]]
    sub = evaluate(pred, gt, planes=[0, 4])
    assert sub["psnr"] == 100.0


def test_shape_mismatch(pair):
    pred, gt = pair
    with pytest.raises(InputError, match="differ"):
        evaluate(pred[:-1], gt)


def test_normalisation_round_trip(pair):
    _, gt = pair
    lo, hi = percentile_range(gt)
    np.testing.assert_allclose(denormalize(normalize(gt, lo, hi), lo, hi), gt, rtol=1e-5)
