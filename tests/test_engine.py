import time

import numpy as np
import pytest

from napari_voxrecon.engine import CancelToken, Job, Method, Param, run_job
from napari_voxrecon.engine.events import Progress, SliceResult
from napari_voxrecon.engine.registry import get_task, list_methods, register
from napari_voxrecon.errors import InputError, JobCancelled, VoxreconError


@pytest.mark.parametrize("method", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("n", [2, 3, 6])
def test_sparse_baselines_keep_acquired_planes(small_volume, method, n):
    out = run_job(Job("sparse", small_volume, {"interval": n}, method=method))["result"]
    assert out.shape == ((small_volume.shape[0] - 1) * n + 1, *small_volume.shape[1:])
    np.testing.assert_array_equal(out[::n], small_volume)
    assert np.isfinite(out).all()


def test_linear_midpoint_and_nearest(small_volume):
    lin = run_job(Job("sparse", small_volume, {"interval": 2}, method="linear"))["result"]
    np.testing.assert_allclose(lin[1], (small_volume[0] + small_volume[1]) / 2, rtol=1e-6)
    near = run_job(Job("sparse", small_volume, {"interval": 4}, method="nearest"))["result"]
    np.testing.assert_array_equal(near[1], small_volume[0])
    np.testing.assert_array_equal(near[3], small_volume[1])


def test_cubic_reproduces_a_cubic_polynomial_along_z():
    z = np.arange(0, 25, dtype=np.float64)
    truth = (0.01 * z**3 - 0.2 * z**2 + z + 5)[:, None, None] * np.ones((1, 3, 4))
    out = run_job(Job("sparse", truth[::4].astype(np.float32), {"interval": 4}, method="cubic"))["result"]
    np.testing.assert_allclose(out, truth, rtol=1e-4)


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_projection_baselines_keep_group_means(small_volume, method):
    n = 4
    out = run_job(Job("projection", small_volume, {"interval": n}, method=method))["result"]
    assert out.shape == (small_volume.shape[0] * n, *small_volume.shape[1:])
    means = out.reshape(small_volume.shape[0], n, *small_volume.shape[1:]).mean(1)
    np.testing.assert_allclose(means, small_volume, rtol=1e-5)


def test_projection_of_linear_ramp_is_exact():
    z = np.arange(24, dtype=np.float64)
    truth = (3 * z + 10)[:, None, None] * np.ones((1, 2, 2))
    proj = truth.reshape(6, 4, 2, 2).mean(1).astype(np.float32)
    out = run_job(Job("projection", proj, {"interval": 4}, method="linear"))["result"]
    np.testing.assert_allclose(out, truth, rtol=1e-5)  # exact, ends included (extrapolated half groups)


@pytest.mark.parametrize("method", ["trilinear", "tricubic"])
def test_restore_baselines_hit_input_samples(small_volume, method):
    out = run_job(Job("restore", small_volume, {"axial_factor": 3, "lateral_factor": 2}, method=method))["result"]
    assert out.shape == (17 * 3, 48, 40)
    np.testing.assert_allclose(out[::3, ::2, ::2], small_volume, rtol=1e-4, atol=1e-2)


def test_output_voxel_size_follows_the_task():
    v = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    assert Job("sparse", v, {"interval": 4}, voxel_size=(2.0, 0.5, 0.5)).output_voxel_size == (0.5, 0.5, 0.5)
    assert Job("restore", v, {"axial_factor": 2, "lateral_factor": 2}, voxel_size=(2.0, 0.5, 0.5)).output_voxel_size == (1.0, 0.25, 0.25)


def test_progress_events_count_planes(small_volume):
    events = list(Job("sparse", small_volume, {"interval": 2}).run())
    slices = [e for e in events if isinstance(e, SliceResult)]
    progress = [e for e in events if isinstance(e, Progress)]
    assert [s.z for s in slices] == list(range(33))
    assert progress[-1].done == progress[-1].total == 33


def test_deterministic_output(small_volume):
    a = run_job(Job("sparse", small_volume, {"interval": 3}, method="cubic", seed=5))["result"]
    b = run_job(Job("sparse", small_volume, {"interval": 3}, method="cubic", seed=5))["result"]
    np.testing.assert_array_equal(a, b)


def _slow_method(ctx):
    for z in range(ctx.output_shape[0]):
        time.sleep(0.01)
        yield SliceResult(z, ctx.volume[min(z // ctx.params["interval"], ctx.volume.shape[0] - 1)])


@pytest.fixture
def slow_method():
    from napari_voxrecon.engine.registry import unregister

    register(Method("sparse", "_test_slow", "test: 10 ms per plane", _slow_method))
    yield "_test_slow"
    unregister("sparse", "_test_slow")


def test_cancel_stops_within_one_slice(small_volume, slow_method):
    token = CancelToken()
    seen = []

    def on_event(ev):
        if isinstance(ev, SliceResult):
            seen.append(ev.z)
            if len(seen) == 3:
                token.cancel()

    sinks = None
    with pytest.raises(JobCancelled):
        from napari_voxrecon.engine.sinks import NumpySink

        job = Job("sparse", small_volume, {"interval": 4}, method="_test_slow")
        sinks = {"result": NumpySink(job.output_shape)}
        run_job(job, sinks, cancel=token, on_event=on_event)
    assert seen == [0, 1, 2]
    arr = sinks["result"].array
    assert np.isfinite(arr[:3]).all() and np.isnan(arr[3:]).all()


@pytest.mark.parametrize(
    "volume,match",
    [
        (np.ones((8, 8), np.float32), "2D"),
        (np.ones((2, 3, 8, 8), np.float32), "4D"),
        (np.full((4, 8, 8), 7.0, np.float32), "same value"),
        (np.where(np.arange(256).reshape(4, 8, 8) == 70, np.nan, 1.0).astype(np.float32), "NaN or infinite.*z=1, y=0, x=6"),
        (np.zeros((0, 8, 8), np.float32), "empty"),
    ],
)
def test_bad_input_is_refused_with_reason(volume, match):
    with pytest.raises(InputError, match=match):
        Job("sparse", volume, {"interval": 2})


def test_single_plane_cannot_be_filled():
    with pytest.raises(InputError, match="at least 2 acquired planes"):
        Job("sparse", np.random.rand(1, 8, 8).astype(np.float32), {"interval": 4})


def test_parameter_errors(small_volume):
    with pytest.raises(VoxreconError, match="--interval is required"):
        Job("sparse", small_volume, {})
    with pytest.raises(VoxreconError, match="below the minimum"):
        Job("sparse", small_volume, {"interval": 1})
    with pytest.raises(VoxreconError, match="no parameter"):
        Job("sparse", small_volume, {"interval": 2, "steps": 5}, method="linear")
    with pytest.raises(VoxreconError, match="unknown method 'magic'.*linear"):
        Job("sparse", small_volume, {"interval": 2}, method="magic")
    with pytest.raises(VoxreconError, match="unknown task"):
        get_task("nope")


def test_param_coercion():
    p = Param("steps", int, 10, "sampling steps", min=1, max=100)
    assert p.coerce("12") == 12
    with pytest.raises(VoxreconError, match="expected a int"):
        p.coerce("many")
    with pytest.raises(VoxreconError, match="above the maximum"):
        p.coerce(101)


def test_registry_lists_baselines():
    names = {(m.task, m.name) for m in list_methods()}
    for key in [("sparse", "nearest"), ("sparse", "linear"), ("sparse", "cubic"), ("projection", "linear"),
                ("projection", "cubic"), ("restore", "trilinear"), ("restore", "tricubic")]:
        assert key in names


def test_cuda_request_falls_back_to_cpu_with_notice(monkeypatch):
    import torch

    from napari_voxrecon.engine.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, notice = resolve_device("cuda")
    assert device == "cpu" and "running on the CPU" in notice
    with pytest.raises(VoxreconError, match="--device"):
        resolve_device("tpu")


def test_job_does_not_share_memory_with_the_caller(small_volume):
    data = small_volume.copy()
    job = Job("sparse", data, {"interval": 2})
    data[:] = 0
    assert job.volume.max() > 0


def test_precision_choice():
    from napari_voxrecon.engine.device import use_bf16
    from napari_voxrecon.errors import VoxreconError

    assert use_bf16("cpu", "bf16") and not use_bf16("cuda", "fp32")
    assert use_bf16("cuda", "auto") and not use_bf16("mps", "auto")
    with pytest.raises(VoxreconError, match="precision"):
        use_bf16("cpu", "fp16")
