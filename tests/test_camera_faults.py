"""Camera faults in diffraction images: saturated (clipped) pixels left out of the fit, offsets that must not shrink the spots."""

import numpy as np
import pytest
import torch

from napari_voxrecon.models.diffraction_fit import FitConfig, _measured, image_loss
from napari_voxrecon.physics.optics import Optics
from napari_voxrecon.physics.saturation import saturated_pixels


def _spot_images(k: int = 3, size: int = 24) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.stack([np.exp(-((yy - 8 - 3 * i) ** 2 + (xx - 12) ** 2) / 18.0) for i in range(k)]).astype(np.float32)


def test_clipped_pixels_are_found_and_nothing_else():
    images = _spot_images()
    clipped = np.minimum(images, 0.6)
    np.testing.assert_array_equal(saturated_pixels(clipped), images >= 0.6)
    assert not saturated_pixels(images).any()  # an unclipped smooth spot holds its maximum once or twice


@pytest.mark.parametrize("peak", [10, 30, 1000])
def test_photon_counts_are_not_taken_for_saturation(peak):
    rng = np.random.default_rng(peak)
    counts = rng.poisson(_spot_images(6) * peak).astype(np.float32)  # few counts: ties at the top are common
    assert not saturated_pixels(counts).any()
    clipped = np.minimum(counts, np.float32(0.5 * peak))  # the same frames from a camera that clips
    assert saturated_pixels(clipped).sum() == (counts >= 0.5 * peak).sum()


def test_pixels_left_out_do_not_change_the_loss():
    images = np.minimum(_spot_images(), 0.6)
    valid = ~saturated_pixels(images)
    for cfg in (FitConfig(), FitConfig(coherence_mask=0.9, background_order=1)):
        data = _measured(images, Optics(), cfg, "cpu", valid)
        pred = torch.from_numpy(_spot_images()) * 0.8
        before = image_loss(pred, data.images, cfg.ssim_weight, data.weight, data.basis, data.left_out)
        changed = data.images.clone()
        changed[torch.from_numpy(~valid)] = 5.0  # what a clipped pixel holds does not matter ...
        after = image_loss(pred, changed, cfg.ssim_weight, data.weight, data.basis, data.left_out)
        assert float(after) == pytest.approx(float(before), rel=1e-5)
        changed[torch.from_numpy(valid)] *= 1.5  # ... what the others hold does
        assert float(image_loss(pred, changed, cfg.ssim_weight, data.weight, data.basis, data.left_out)) != pytest.approx(float(before))


def test_a_camera_offset_does_not_shrink_the_spots_when_a_background_is_fitted():
    images = _spot_images()
    offset = 5.0 * images.max()  # dim spots on a camera's offset
    with_bg = FitConfig(background_order=1)
    plain, shifted = (_measured(x, Optics(), with_bg, "cpu").images for x in (images, images + offset))
    # the same spots, only raised: the fitted background takes the offset, the priors see the same data
    np.testing.assert_allclose((shifted - plain).numpy(), float(shifted[0, 0, 0] - plain[0, 0, 0]), atol=1e-5)
    no_bg = FitConfig(background_order=-1)
    assert float(_measured(images + offset, Optics(), no_bg, "cpu").images.max()) == pytest.approx(1.0)


def test_frames_clipped_and_then_shifted_or_scaled_one_by_one_are_found():
    images = _spot_images(4) * np.array([1.0, 0.9, 0.8, 0.7], np.float32)[:, None, None]
    clipped = np.minimum(images, 0.5)
    truth = images >= 0.5
    offsets = np.array([0.1, 0.3, 0.0, 0.2], np.float32)[:, None, None]  # each frame minus its own background
    np.testing.assert_array_equal(saturated_pixels(clipped - offsets), truth)
    exposure = np.array([1.0, 2.0, 0.5, 4.0], np.float32)[:, None, None]  # each divided by its exposure time
    np.testing.assert_array_equal(saturated_pixels(clipped / exposure), truth)
    assert not saturated_pixels(images - offsets).any()


def test_a_blank_frame_is_not_taken_for_a_saturated_one():
    images = _spot_images(3)
    images[1] = 0.25  # a dropped frame written as a constant: left to the blank-frame check
    assert not saturated_pixels(images).any()


def test_few_photon_counts_rarely_tie_at_a_frames_top(monkeypatch):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :24]
    centres = rng.uniform(6, 18, (400, 2))
    spots = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 18.0)
    counts = rng.poisson(spots * 10).astype(np.float32)  # 400 frames, 10 counts at the peak
    assert saturated_pixels(counts).any(axis=(1, 2)).mean() < 0.015  # 0.25 % of them
    from napari_voxrecon.physics import saturation

    monkeypatch.setattr(saturation, "MIN_PLATEAU_FRAME", saturation.MIN_PLATEAU)
    assert saturated_pixels(counts).any(axis=(1, 2)).mean() > 0.015  # 2.5 % with the stack's plateau of 3


def test_a_blurred_comparison_takes_nothing_from_the_pixels_left_out():
    from napari_voxrecon.models.diffraction_fit import _fit_pass, gaussian_blur
    from napari_voxrecon.simulate.diffraction import draw_sources, simulate_diffraction

    images = torch.from_numpy(_spot_images())
    keep = (images < 0.6).float()
    changed = torch.where(keep > 0, images, torch.full_like(images, 5.0))
    np.testing.assert_allclose(gaussian_blur(images, 1.0, keep).numpy(), gaussian_blur(changed, 1.0, keep).numpy(), atol=1e-6)
    assert not torch.allclose(gaussian_blur(images, 1.0), gaussian_blur(changed, 1.0))  # plain blur: it spreads

    optics = Optics(depth=4)
    sources = draw_sources((4, 16, 16), optics, 3, seed=0)
    clean = simulate_diffraction(np.full((4, 16, 16), optics.n_background, np.float32), optics, sources)
    clipped = np.minimum(clean, np.float32(0.5 * clean.max()))
    valid = ~saturated_pixels(clipped)
    assert (~valid).sum() >= 3
    cfg = FitConfig(iterations=1, compare_blur=1.0, anneal_blur=0.0)

    def first_loss(plateau: float) -> float:
        data = _measured(clipped, optics, cfg, "cpu", valid)
        data.images[torch.from_numpy(~valid)] = plateau  # what the clipped pixels hold, after the scaling
        losses: list[float] = []
        for _ in _fit_pass(data, sources, optics, 4, "explicit", cfg, "cpu", 1, losses, None):
            pass
        return losses[0]

    assert first_loss(1.0) == pytest.approx(first_loss(5.0), rel=1e-6)
