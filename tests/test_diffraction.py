"""The `diffraction` task through the engine and the CLI, with tiny sizes."""

import json

import numpy as np
import pytest

from napari_voxrecon.engine import Job, run_job
from napari_voxrecon.engine.cancel import CancelToken
from napari_voxrecon.engine.events import Notice, Preview, Progress, SliceResult
from napari_voxrecon.errors import InputError, JobCancelled, VoxreconError


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory):
    from napari_voxrecon.cli import main
    from napari_voxrecon.io import write_volume
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    root = tmp_path_factory.mktemp("diffraction")
    ri = make_ri_phantom((8, 24, 24), "cell", seed=5, voxel_size=(0.4, 0.2, 0.2))
    write_volume(root / "ri.tif", ri, (0.4, 0.2, 0.2))
    assert main(["simulate", "diffraction", str(root / "ri.tif"), "-o", str(root / "img.tif"), "--views", "4",
                 "--sources-out", str(root / "src.json"), "-q"]) == 0
    return root, ri


def _job(root, method="nvp", **params):
    from napari_voxrecon.io import read_volume

    images = read_volume(root / "img.tif").data
    p = {"sources": str(root / "src.json"), "optics": str(root / "img_optics.json"), "iterations": 15, **params}
    return Job("diffraction", images, p, method=method, device="cpu", seed=0)


@pytest.mark.parametrize("method", ["nvp", "explicit", "triplane"])
def test_every_representation_reconstructs_the_index_on_the_ri_grid(acquisition, method):
    root, ri = acquisition
    out = run_job(_job(root, method))["result"]
    assert out.shape == ri.shape and np.isfinite(out).all()
    assert 1.25 < out.min() and out.max() < 1.45 and np.ptp(out) > 1e-4  # absolute index around water, fitted


def test_cli_reconstructs_with_the_contract_command(acquisition):
    from napari_voxrecon.cli import main
    from napari_voxrecon.io import read_volume

    root, ri = acquisition
    assert main(["reconstruct", "diffraction", str(root / "img.tif"), "--sources", str(root / "src.json"),
                 "--optics", str(root / "img_optics.json"), "-o", str(root / "rec.tif"), "--iterations", "10", "-q"]) == 0
    rec = read_volume(root / "rec.tif")
    assert rec.data.shape == ri.shape and tuple(rec.voxel_size) == pytest.approx((0.4, 0.2, 0.2))


def test_the_cli_prints_the_estimated_source_positions(acquisition, capsys):
    from napari_voxrecon.cli import main

    root, _ = acquisition
    assert main(["reconstruct", "diffraction", str(root / "img.tif"), "--optics", str(root / "img_optics.json"),
                 "-o", str(root / "rec_estimated.tif"), "--iterations", "4"]) == 0
    err = capsys.readouterr().err
    assert "estimated source positions (z from" in err and "fitted afresh around the positions found (4 iterations)" in err


def test_bad_diffraction_requests_say_what_is_wrong(acquisition, tmp_path):
    root, _ = acquisition
    two = tmp_path / "two.json"
    two.write_text(json.dumps([[-2, 1, 1], [-2, 2, 2]]))
    with pytest.raises(InputError, match="4 image"):
        run_job(_job(root, sources=str(two)))
    with pytest.raises(InputError, match="give --depth"):
        run_job(_job(root, optics=""))
    # positions the fit cannot use are refused before anything runs, naming the likely mistake
    given = np.array(json.loads((root / "src.json").read_text()))
    bad = tmp_path / "bad.json"
    for positions, message in ((given * [1, 5, 5], r"source \d lies at [yx] = .* in pixels"),  # pixels (0.2 µm) for µm
                               (given + [5, 0, 0], "source 0 lies at z = .* above the top of the index volume"),
                               (given[:, ::-1], r"source \d lies at z = .* Check the axis order"),  # x, y, z
                               (np.tile([-0.1, 2.0, -4.0], (4, 1)), "no source's light cone .* reaches the index volume")):
        bad.write_text(json.dumps(positions.tolist()))
        with pytest.raises(InputError, match=message):
            run_job(_job(root, sources=str(bad)))
    # one view whose cone misses the grid runs, with a notice naming it
    blind = given.copy()
    blind[2] = [-0.1, 2.0, -4.0]
    bad.write_text(json.dumps(blind.tolist()))
    notices = []
    run_job(_job(root, sources=str(bad), iterations=2), on_event=lambda e: notices.append(e) if isinstance(e, Notice) else None)
    assert any(n.message.startswith("image 2: its source's light cone misses the index volume") for n in notices)
    job = _job(root, sources="")
    job.volume[2] = 0.3  # a frame without its spot: nothing to estimate that source from
    with pytest.raises(InputError, match="cannot estimate the source of image 2: it shows no spot"):
        run_job(job)


def test_images_without_a_positive_value_are_refused_and_subtracted_ones_get_a_warning(acquisition):
    root, _ = acquisition
    job = _job(root)
    job.volume[...] = job.volume - job.volume.max()  # inverted / over-subtracted: no peak to scale by
    with pytest.raises(InputError, match="no positive value"):
        run_job(job)
    for background, warned in ((-1, True), (1, False)):
        job = _job(root, iterations=2, background=background)
        job.volume[...] = job.volume - np.median(job.volume)  # background-subtracted: half the pixels negative
        notices = []
        run_job(job, on_event=lambda e: notices.append(e) if isinstance(e, Notice) else None)
        hit = [n for n in notices if "pixels are negative" in n.message]
        assert bool(hit) is warned and all(n.level == "warning" for n in hit)
    notices = []
    run_job(_job(root, iterations=2, background=-1), on_event=lambda e: notices.append(e) if isinstance(e, Notice) else None)
    assert not any("negative" in n.message for n in notices)  # raw intensities: nothing to say


def test_a_hot_pixel_is_replaced_before_the_fit_and_the_user_is_told(acquisition, monkeypatch):
    from napari_voxrecon.models import diffraction_fit

    root, _ = acquisition
    fitted, real = [], diffraction_fit.fit_steps
    monkeypatch.setattr(diffraction_fit, "fit_steps", lambda images, *a, **k: (fitted.append(images), real(images, *a, **k))[1])
    job = _job(root, iterations=2)
    job.volume[2, 5, 7] = 30 * job.volume.max()  # cost 6.7 dB on average before it was replaced (docs/benchmarks.md)
    given = job.volume.copy()
    notices = []
    run_job(job, on_event=lambda e: notices.append(e) if isinstance(e, Notice) else None)
    assert [n.message.split(" (first")[0] for n in notices if "hot pixel" in n.message] == [
        "replaced 1 hot pixel(s) in image(s) 2"]
    assert fitted[0][2, 5, 7] <= np.delete(given[2, 4:7, 6:9].ravel(), 4).max()  # the fit saw the repaired images
    np.testing.assert_array_equal(job.volume, given)  # the user's data are left as they were


def test_a_blank_frame_with_a_sources_file_is_left_out_with_a_warning_naming_it(acquisition, monkeypatch):
    from napari_voxrecon.models import diffraction_fit

    root, _ = acquisition
    masks, real = [], diffraction_fit.fit_steps
    monkeypatch.setattr(diffraction_fit, "fit_steps", lambda *a, valid=None, **k: (masks.append(valid), real(*a, valid=valid, **k))[1])
    for blank in (0.0, None):  # a dropped frame written as zeros, or as the background level
        job = _job(root, iterations=2)
        job.volume[1] = np.median(job.volume[1]) if blank is None else blank
        notices = []
        out = run_job(job, on_event=lambda e: notices.append(e) if isinstance(e, Notice) else None)["result"]
        assert [n.level for n in notices if n.message.startswith("image(s) 1 show no spot")] == ["warning"]
        assert not masks[-1][1].any() and masks[-1][[0, 2, 3]].all()  # the whole frame, and only it, left out
        assert np.isfinite(out).all()
    notices = []
    run_job(_job(root, iterations=2), on_event=lambda e: notices.append(e) if isinstance(e, Notice) else None)
    assert not any("no spot" in n.message for n in notices) and masks[-1] is None


def test_images_of_noise_alone_are_fitted_with_a_warning(acquisition):
    root, _ = acquisition
    job = _job(root, iterations=2)
    job.volume = np.random.default_rng(0).normal(100.0, 5.0, job.volume.shape).astype(np.float32)  # shutter closed
    notices = []
    out = run_job(job, on_event=lambda e: notices.append(e) if isinstance(e, Notice) else None)["result"]
    assert [n.level for n in notices if n.message.startswith("no image shows a spot")] == ["warning"]
    assert np.isfinite(out).all()


def test_saturated_pixels_are_left_out_of_the_fit_and_the_user_is_told(acquisition, monkeypatch):
    from napari_voxrecon.models import diffraction_fit

    root, _ = acquisition
    masks, real = [], diffraction_fit.fit_steps
    monkeypatch.setattr(diffraction_fit, "fit_steps", lambda *a, valid=None, **k: (masks.append(valid), real(*a, valid=valid, **k))[1])
    job = _job(root, iterations=2)
    ceiling = np.float32(0.4 * job.volume.max())
    clipped = job.volume >= ceiling
    job.volume[...] = np.minimum(job.volume, ceiling)  # a camera that clipped the brightest spots
    notices = []
    run_job(job, on_event=lambda e: notices.append(e) if isinstance(e, Notice) else None)
    assert any(n.message.startswith(f"{int(clipped.sum())} pixels") and "left out of the fit" in n.message
               and n.level == "warning" for n in notices)
    np.testing.assert_array_equal(masks[0], ~clipped)
    masks.clear()
    run_job(_job(root, iterations=2))
    assert masks == [None]  # unclipped images: every pixel compared


def _fit_configs(monkeypatch) -> list:
    """The FitConfig of every fit a job starts (the fit itself runs as usual)."""
    from napari_voxrecon.models import diffraction_fit

    seen, real = [], diffraction_fit.fit_steps

    def spy(images, sources, optics, depth, kind="nvp", config=None, device="cpu", valid=None):
        seen.append(config)
        return real(images, sources, optics, depth, kind, config, device, valid)

    monkeypatch.setattr(diffraction_fit, "fit_steps", spy)
    return seen


def test_without_a_sources_file_the_positions_are_estimated_and_refined(acquisition, monkeypatch):
    root, ri = acquisition
    seen = _fit_configs(monkeypatch)
    events = []
    out = run_job(_job(root, sources="", iterations=20), on_event=events.append)["result"]
    assert out.shape == ri.shape and np.isfinite(out).all()
    said = [e.message for e in events if isinstance(e, Progress)]
    told = [e.message for e in events if isinstance(e, Notice)]
    assert any("no sources file: estimating the 4 source positions" in m for m in said)
    assert any("refined with the index from the start, the images compared blurred by 4 pixels at first; then the index "
               "is fitted afresh around the positions found (20 iterations)" in m for m in told)
    assert any("fitting nvp: iteration 20/40" in m for m in said)
    assert any("fitting nvp (afresh around the sources found): iteration 21/40" in m for m in said)
    # estimates move with the index from the first iteration, compared blurred at first, then are
    # refitted around; given positions wait for half the fit, compared sharp, and are not
    run_job(_job(root, iterations=2))
    run_job(_job(root, iterations=2, anneal_blur=2.0, refit=3))
    run_job(_job(root, sources="", iterations=2, calibrate_after=0.25, anneal_blur=0.0, refit=0))
    run_job(_job(root, sources="", iterations=2, calibrate=False))
    assert [(c.calibrate_after, c.anneal_blur, c.anneal_until, c.refit) for c in seen] == [
        (0.0, 4.0, 0.5, 20), (0.5, 0.0, 0.5, 0), (0.5, 2.0, 0.5, 3), (0.25, 0.0, 0.5, 0), (0.5, 0.0, 0.5, 0)]


def test_the_feature_representations_weigh_their_priors_by_the_views_coverage_and_say_so(tmp_path, monkeypatch):
    """Four views under a field 9.6 µm wide and 3.2 µm deep see less of it than the tuning
    geometry's six: nvp's priors weigh less, with a notice giving the weight; the voxel grid keeps
    its own, as does a job that turns the weighting off."""
    from napari_voxrecon.cli import main
    from napari_voxrecon.io import write_volume
    from napari_voxrecon.models.diffraction_fit import REFERENCE_VIEW_SHARE, prior_scale
    from napari_voxrecon.physics.coverage import view_share
    from napari_voxrecon.physics.optics import Optics
    from napari_voxrecon.simulate.diffraction import read_sources
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    ri = make_ri_phantom((8, 48, 48), "cell", seed=5, voxel_size=(0.4, 0.2, 0.2))
    write_volume(tmp_path / "ri.tif", ri, (0.4, 0.2, 0.2))
    assert main(["simulate", "diffraction", str(tmp_path / "ri.tif"), "-o", str(tmp_path / "img.tif"), "--views", "4",
                 "--sources-out", str(tmp_path / "src.json"), "-q"]) == 0
    weight = prior_scale(view_share(ri.shape, read_sources(str(tmp_path / "src.json")),
                                    Optics.load(str(tmp_path / "img_optics.json"))))
    assert weight < 0.75
    seen = _fit_configs(monkeypatch)
    told = {}
    for method, params in (("nvp", {}), ("explicit", {}), ("nvp", {"cover_priors": False})):
        events = []
        run_job(_job(tmp_path, method, iterations=1, **params), on_event=events.append)
        told[(method, *params)] = [e.message for e in events if isinstance(e, Notice) and "weighted" in e.message]
    assert [c.cover_priors for c in seen] == [True, False, False]
    share = 100 * weight * REFERENCE_VIEW_SHARE
    assert told[("nvp",)] == [f"an average voxel is seen by {share:.0f} % of the views (57 % in the geometry the defaults "
                              f"were tuned on): tv and sparsity are weighted x{weight:.2f} to match (turn cover_priors off "
                              "to use them as given)"]
    assert told[("explicit",)] == [] and told[("nvp", "cover_priors")] == []


def test_noisy_images_weigh_tv_up_once_measured_and_say_so(tmp_path, monkeypatch):
    """Images at noise level 0.2: nvp's fit gets τ's weight measured once by the job (the fit
    uses it as given) and a notice with it; clean images, the voxel grid and a job that turns
    the weighting off get neither."""
    from napari_voxrecon.cli import main
    from napari_voxrecon.io import write_volume
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    ri = make_ri_phantom((8, 48, 48), "cell", seed=5, voxel_size=(0.4, 0.2, 0.2))
    write_volume(tmp_path / "ri.tif", ri, (0.4, 0.2, 0.2))
    seen = _fit_configs(monkeypatch)
    told = {}
    for level in (0.0, 0.2):
        root = tmp_path / str(level)
        root.mkdir()
        assert main(["simulate", "diffraction", str(tmp_path / "ri.tif"), "-o", str(root / "img.tif"), "--views", "6",
                     "--sources-out", str(root / "src.json"), "--noise-level", str(level), "-q"]) == 0
        for method, params in (("nvp", {}), ("explicit", {}), ("nvp", {"noise_tv": False})):
            events = []
            run_job(_job(root, method, iterations=1, **params), on_event=events.append)
            told[(level, method, *params)] = [e.message for e in events if isinstance(e, Notice) and "noise is" in e.message]
    assert [c.noise_tv for c in seen] == [True, False, False] * 2
    assert seen[0].noise_tv_weight == 1.0 and seen[3].noise_tv_weight > 1.25
    assert [m.split(": ")[-1] for m in told[(0.2, "nvp")]] == [
        f"tv is weighted x{seen[3].noise_tv_weight:.1f} against the noise (turn noise_tv off to use it as given)"]
    assert told[(0.2, "nvp")][0].startswith("the images' noise is about ")
    assert all(not v for k, v in told.items() if k != (0.2, "nvp"))


def test_the_coherence_mask_runs_from_a_job_and_names_a_frame_it_cannot_place(acquisition):
    root, ri = acquisition
    out = run_job(_job(root, coherence_mask=0.9, background=1, blur=1.0, iterations=5))["result"]
    assert out.shape == ri.shape and np.isfinite(out).all()
    job = _job(root, coherence_mask=0.9, iterations=5)
    job.volume[1] = 0.3
    with pytest.raises(InputError, match="coherence mask of image 1: it shows no spot"):
        run_job(job)


def test_the_index_is_previewed_while_fitting_and_cancel_keeps_the_estimate(acquisition, monkeypatch):
    from napari_voxrecon.methods import diffraction_methods

    root, ri = acquisition
    monkeypatch.setattr(diffraction_methods, "PREVIEW_SECONDS", 0.0)
    events = []
    cancel = CancelToken()

    def on_event(e):
        events.append(e)
        if isinstance(e, Progress) and "iteration 5/" in e.message:
            cancel.cancel()

    with pytest.raises(JobCancelled):
        run_job(_job(root, iterations=200), cancel=cancel, on_event=on_event)
    previews = [e for e in events if isinstance(e, Preview)]
    planes = [e for e in events if isinstance(e, SliceResult)]
    assert previews and previews[0].data.shape == ri.shape
    assert len(planes) == ri.shape[0]  # the estimate at iteration 5, every plane
    assert any("stopped at iteration 5" in e.message for e in events if isinstance(e, Progress))
