import json

import numpy as np
import pytest

from napari_voxrecon.cli import main
from napari_voxrecon.io import read_volume, write_volume


@pytest.fixture
def gt_path(tmp_path, small_volume):
    path = tmp_path / "gt.tif"
    write_volume(path, small_volume, (0.5, 0.2, 0.2))
    return path


def test_simulate_sparse_reconstruct_evaluate(tmp_path, gt_path, small_volume, capsys):
    sparse = tmp_path / "sparse.tif"
    assert main(["simulate", "sparse", str(gt_path), "-o", str(sparse), "--interval", "4", "-q"]) == 0
    vol = read_volume(sparse)
    np.testing.assert_array_equal(vol.data, small_volume[::4])
    assert vol.voxel_size == pytest.approx((2.0, 0.2, 0.2))
    out = tmp_path / "rec.tif"
    assert main(["reconstruct", "sparse", str(sparse), "-o", str(out), "--interval", "4", "--method", "linear", "-q"]) == 0
    rec = read_volume(out)
    assert rec.shape == small_volume.shape and rec.voxel_size == pytest.approx((0.5, 0.2, 0.2))
    capsys.readouterr()
    assert main(["evaluate", str(out), str(gt_path), "--json", "--missing-only", "--interval", "4"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["planes"] == "missing" and 10 < scores["psnr"] < 100 and 0 < scores["ssim"] < 1


@pytest.mark.parametrize("task,sim_flags,rec_flags,method", [
    ("projection", ["--interval", "3"], ["--interval", "3"], "cubic"),
    ("restore", ["--axial-factor", "2", "--lateral-factor", "2", "--noise-level", "0.05"], ["--axial-factor", "2", "--lateral-factor", "2"], "tricubic"),
])
def test_projection_and_restore_round_trip(tmp_path, gt_path, task, sim_flags, rec_flags, method):
    low = tmp_path / "low.zarr"
    assert main(["simulate", task, str(gt_path), "-o", str(low), *sim_flags, "-q"]) == 0
    out = tmp_path / "rec.zarr"
    assert main(["reconstruct", task, str(low), "-o", str(out), *rec_flags, "--method", method, "-q"]) == 0
    rec = read_volume(out)
    assert rec.voxel_size == pytest.approx((0.5, 0.2, 0.2))


def test_simulate_phantom(tmp_path):
    out = tmp_path / "ph.tif"
    assert main(["simulate", "phantom", "-o", str(out), "--shape", "8", "32", "32", "--structure", "nuclei", "-q"]) == 0
    assert read_volume(out).shape == (8, 32, 32)


def test_simulate_ri_phantom_with_irregular_cells(tmp_path, capsys):
    out = tmp_path / "ri.tif"
    assert main(["simulate", "ri-phantom", "-o", str(out), "--shape", "8", "32", "32", "--irregular", "0.25", "-q"]) == 0
    ri = read_volume(out)
    assert ri.shape == (8, 32, 32) and ri.data.max() > 1.34
    rc = main(["simulate", "ri-phantom", "-o", str(tmp_path / "t.tif"), "--structure", "tubes", "--irregular", "0.25", "-q"])
    assert rc != 0 and "not 'tubes'" in capsys.readouterr().err
    assert not (tmp_path / "t.tif").exists()


def test_simulate_ri_phantom_with_denser_tissue(tmp_path, capsys):
    out = tmp_path / "ri.tif"
    assert main(["simulate", "ri-phantom", "-o", str(out), "--shape", "8", "32", "32", "--structure", "tissue",
                 "--density", "2", "-q"]) == 0
    assert read_volume(out).shape == (8, 32, 32)
    rc = main(["simulate", "ri-phantom", "-o", str(tmp_path / "c.tif"), "--density", "2", "-q"])
    assert rc != 0 and "'tissue'" in capsys.readouterr().err
    assert not (tmp_path / "c.tif").exists()


def test_existing_output_is_protected(tmp_path, gt_path, capsys):
    out = tmp_path / "rec.tif"
    out.write_bytes(b"precious")
    rc = main(["reconstruct", "sparse", str(gt_path), "-o", str(out), "--interval", "2", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    assert main(["reconstruct", "sparse", str(gt_path), "-o", str(out), "--interval", "2", "-q", "--overwrite"]) == 0


@pytest.mark.parametrize("make,match", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"garbage" * 50), "not a readable TIFF"),
    (lambda p: write_volume(p, np.full((4, 8, 8), 3.0, np.float32)), "same value"),
    (lambda p: write_volume(p, np.where(np.arange(256).reshape(4, 8, 8) == 9, np.inf, 1).astype(np.float32)), "NaN or infinite"),
])
def test_bad_inputs_exit_with_one_line_reason(tmp_path, capsys, make, match):
    bad = tmp_path / "bad.tif"
    make(bad)
    rc = main(["reconstruct", "sparse", str(bad), "-o", str(tmp_path / "o.tif"), "--interval", "2", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("voxrecon: error:") and len(err.splitlines()) == 1
    assert match in err
    assert not (tmp_path / "o.tif").exists()


def test_interval_larger_than_stack(tmp_path, gt_path, capsys):
    rc = main(["simulate", "sparse", str(gt_path), "-o", str(tmp_path / "s.tif"), "--interval", "40", "-q"])
    assert rc == 2 and "too large" in capsys.readouterr().err


@pytest.fixture
def method_with_param():
    from napari_voxrecon.engine.registry import Method, Param, register, unregister
    from napari_voxrecon.methods.sparse_baselines import _run_linear

    register(Method("sparse", "_test_param", "test", _run_linear, params=(Param("strength", float, 1.0, "test"),)))
    yield
    unregister("sparse", "_test_param")


def test_flag_of_another_method_is_an_error(tmp_path, gt_path, capsys, method_with_param):
    rc = main(["reconstruct", "sparse", str(gt_path), "-o", str(tmp_path / "o.tif"), "--interval", "2", "--strength", "2", "-q"])
    assert rc == 2 and "does not take --strength" in capsys.readouterr().err
    assert main(["reconstruct", "sparse", str(gt_path), "-o", str(tmp_path / "o.tif"), "--interval", "2",
                 "--method", "_test_param", "--strength", "2", "-q"]) == 0


@pytest.fixture
def method_with_switch():
    from napari_voxrecon.engine.registry import Method, Param, register, unregister
    from napari_voxrecon.methods.sparse_baselines import _run_linear

    seen: list[bool] = []

    def run(ctx):
        seen.append(ctx.params["switch"])
        yield from _run_linear(ctx)

    register(Method("sparse", "_test_switch", "test", run, params=(Param("switch", bool, True, "test"),)))
    yield seen
    unregister("sparse", "_test_switch")


@pytest.mark.parametrize("word, value", [("false", False), ("Off", False), ("0", False), ("yes", True), ("TRUE", True)])
def test_bool_option_words(tmp_path, gt_path, method_with_switch, word, value):
    assert main(["reconstruct", "sparse", str(gt_path), "-o", str(tmp_path / "o.tif"), "--interval", "2",
                 "--method", "_test_switch", "--switch", word, "-q"]) == 0
    assert method_with_switch == [value]


def test_bool_option_typo_is_refused(tmp_path, gt_path, method_with_switch, capsys):
    out = tmp_path / "o.tif"
    rc = main(["reconstruct", "sparse", str(gt_path), "-o", str(out), "--interval", "2",
               "--method", "_test_switch", "--switch", "ture", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--switch" in err and "'ture'" in err and "true or false" in err
    assert method_with_switch == [] and not out.exists()  # refused before anything ran or was written


def test_zarr_output_resumes_after_interruption(tmp_path, gt_path):
    from napari_voxrecon.engine import CancelToken, Job, run_job
    from napari_voxrecon.engine.events import SliceResult
    from napari_voxrecon.engine.sinks import open_file_sinks
    from napari_voxrecon.errors import JobCancelled

    vol = read_volume(gt_path)
    out = tmp_path / "rec.zarr"
    job = Job("sparse", vol.data, {"interval": 2}, method="cubic", voxel_size=vol.voxel_size)
    sinks, done = open_file_sinks(out, job)
    token = CancelToken()
    count = []

    def stop_after_five(ev):
        if isinstance(ev, SliceResult):
            count.append(ev.z)
            if len(count) == 5:
                token.cancel()

    with pytest.raises(JobCancelled):
        run_job(job, sinks, cancel=token, on_event=stop_after_five)
    from napari_voxrecon.io.zarr_store import zarr_progress

    state = zarr_progress(out)
    assert state["complete"] is False and state["done"] == [0, 1, 2, 3, 4]
    left = tmp_path / ".rec.zarr.replaced"  # as a killed --overwrite run would leave it
    left.mkdir()
    # Same command again: resumes and completes (dropping that copy); the result equals an uninterrupted run.
    assert main(["reconstruct", "sparse", str(gt_path), "-o", str(out), "--interval", "2", "--method", "cubic", "-q"]) == 0
    full = tmp_path / "full.tif"
    assert main(["reconstruct", "sparse", str(gt_path), "-o", str(full), "--interval", "2", "--method", "cubic", "-q"]) == 0
    np.testing.assert_array_equal(read_volume(out).data, read_volume(full).data)
    assert zarr_progress(out)["complete"] is True and not left.exists()
    # A complete output is refused without --overwrite.
    assert main(["reconstruct", "sparse", str(gt_path), "-o", str(out), "--interval", "2", "--method", "cubic", "-q"]) == 2
    # An unfinished output of a different job is refused too.


def test_demo_runs_on_embedded_sample(tmp_path, capsys):
    folder = tmp_path / "demo"
    assert main(["demo", "--output", str(folder), "-q"]) == 0
    report = json.loads((folder / "scores.json").read_text())
    assert {"nearest", "linear", "cubic"} <= set(report["methods"])
    assert report["methods"]["linear"]["psnr"] > report["methods"]["nearest"]["psnr"]
    assert main(["demo", "--output", str(folder), "-q"]) == 2  # never overwrites silently


def test_methods_and_help(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "sparse:" in out and "linear" in out and "restore:" in out
    from napari_voxrecon.engine.registry import TASKS

    for task, flag in [("sparse", "--interval"), ("diffraction", "--prune")] + [(t, "--method") for t in TASKS]:
        with pytest.raises(SystemExit) as exc:  # every task's help renders (a '%' in a method's help once broke it)
            main(["reconstruct", task, "--help"])
        assert exc.value.code == 0
        assert flag in capsys.readouterr().out


def test_failed_overwrite_keeps_the_old_zarr_output(tmp_path, gt_path, capsys):
    out = tmp_path / "rec.zarr"
    assert main(["reconstruct", "sparse", str(gt_path), "-o", str(out), "--interval", "2", "-q"]) == 0
    before = read_volume(out).data
    rc = main(["reconstruct", "sparse", str(gt_path), "-o", str(out), "--interval", "2", "--method", "unet",
               "--weights", str(tmp_path / "no-weights-here"), "--overwrite", "-q"])
    assert rc == 2
    np.testing.assert_array_equal(read_volume(out).data, before)


def test_cancelled_overwrite_restores_the_old_zarr_output(tmp_path, gt_path):
    from napari_voxrecon.engine import CancelToken, Job, run_job
    from napari_voxrecon.engine.events import SliceResult
    from napari_voxrecon.engine.sinks import open_file_sinks
    from napari_voxrecon.errors import JobCancelled

    out = tmp_path / "rec.zarr"
    assert main(["reconstruct", "sparse", str(gt_path), "-o", str(out), "--interval", "2", "-q"]) == 0
    before = read_volume(out).data
    vol = read_volume(gt_path)
    job = Job("sparse", vol.data, {"interval": 2}, method="cubic", voxel_size=vol.voxel_size)
    sinks, _ = open_file_sinks(out, job, overwrite=True)
    token = CancelToken()
    with pytest.raises(JobCancelled):
        run_job(job, sinks, cancel=token, on_event=lambda e: token.cancel() if isinstance(e, SliceResult) else None)
    np.testing.assert_array_equal(read_volume(out).data, before)
    assert not list(tmp_path.glob(".*replaced"))


def test_resume_refuses_a_different_input_of_the_same_shape(tmp_path, gt_path, small_volume, capsys):
    from napari_voxrecon.engine import CancelToken, Job, run_job
    from napari_voxrecon.engine.events import SliceResult
    from napari_voxrecon.engine.sinks import open_file_sinks
    from napari_voxrecon.errors import JobCancelled

    vol = read_volume(gt_path)
    out = tmp_path / "rec.zarr"
    job = Job("sparse", vol.data, {"interval": 2}, method="linear", voxel_size=vol.voxel_size)
    sinks, _ = open_file_sinks(out, job)
    token = CancelToken()
    with pytest.raises(JobCancelled):
        run_job(job, sinks, cancel=token, on_event=lambda e: token.cancel() if isinstance(e, SliceResult) else None)
    other = tmp_path / "other.tif"
    write_volume(other, small_volume[::-1].copy(), (0.5, 0.2, 0.2))
    rc = main(["reconstruct", "sparse", str(other), "-o", str(out), "--interval", "2", "-q"])
    assert rc == 2 and "different job" in capsys.readouterr().err
    # An unfinished store is not read as a finished volume either.
    from napari_voxrecon.errors import InputError

    with pytest.raises(InputError, match="unfinished"):
        read_volume(out)


def test_a_run_failing_before_its_first_plane_leaves_no_store(tmp_path, gt_path):
    from napari_voxrecon.engine import Job, Method, run_job
    from napari_voxrecon.engine.registry import register, unregister
    from napari_voxrecon.engine.sinks import open_file_sinks

    def broken(ctx):
        raise RuntimeError("model exploded")
        yield  # pragma: no cover

    register(Method("sparse", "_test_broken", "test", broken))
    try:
        vol = read_volume(gt_path)
        job = Job("sparse", vol.data, {"interval": 2}, method="_test_broken")
        sinks, _ = open_file_sinks(tmp_path / "x.zarr", job)
        with pytest.raises(RuntimeError):
            run_job(job, sinks)
        assert not (tmp_path / "x.zarr").exists()
    finally:
        unregister("sparse", "_test_broken")


def test_the_progress_bar_shows_a_fit_s_progress_message_beside_it():
    import io

    from napari_voxrecon.cli import _bar_events
    from napari_voxrecon.engine.events import Progress
    from tqdm import tqdm

    out = io.StringIO()
    bar = tqdm(total=4, file=out, mininterval=0)
    on_event = _bar_events(bar)
    on_event(Progress(0, 4, "fitting nvp: iteration 7/300, loss 1.2e-03"))
    bar.close()
    assert "fitting nvp: iteration 7/300, loss 1.2e-03" in out.getvalue()
