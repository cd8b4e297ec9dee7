"""The `inr` method of the sparse and projection tasks (per-volume fit, no weights)."""

import numpy as np

from napari_voxrecon.engine import Job, run_job
from napari_voxrecon.engine.registry import get_method
from napari_voxrecon.simulate import simulate_projection, simulate_sparse


def _volume() -> np.ndarray:
    from napari_voxrecon.simulate.phantoms import make_phantom

    return (make_phantom((24, 32, 32), kind="nuclei", seed=1, voxel_size=(0.5, 0.25, 0.25)) * 1000 + 50).astype(np.float32)


def test_sparse_inr_keeps_acquired_planes_and_beats_nearest():
    gt = _volume()
    n = 4
    sparse = simulate_sparse(gt, n)
    run = lambda m, p: run_job(Job("sparse", sparse, {"interval": n, **p}, method=m, seed=3, device="cpu"))["result"]
    out = run("inr", {"iterations": 300})
    assert out.shape == ((sparse.shape[0] - 1) * n + 1, 32, 32)
    assert np.array_equal(out[::n], sparse)
    assert np.array_equal(out, run("inr", {"iterations": 300}))  # same seed, same result
    missing = [z for z in range(out.shape[0]) if z % n]
    err = lambda v: float(np.mean((v[missing] - gt[: out.shape[0]][missing]) ** 2))
    assert err(out) < err(run("nearest", {}))


def test_projection_inr_keeps_group_means():
    gt = _volume()
    n = 4
    proj = simulate_projection(gt, n)
    out = run_job(Job("projection", proj, {"interval": n, "iterations": 200}, method="inr", device="cpu"))["result"]
    assert out.shape == (proj.shape[0] * n, 32, 32)
    means = out.reshape(proj.shape[0], n, 32, 32).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(means, proj, rtol=1e-5, atol=1e-3)
    assert np.std(out - np.repeat(proj, n, axis=0)) > 0  # it does more than repeat the projection


def test_inr_is_registered_for_both_tasks_with_its_parameters():
    for task in ("sparse", "projection"):
        names = [p.name for p in get_method(task, "inr").params]
        assert names == ["iterations", "lr"]


def test_inr_reports_fit_progress_on_the_plane_scale():
    from napari_voxrecon.engine import Progress

    sparse = simulate_sparse(_volume(), 4)
    events = list(Job("sparse", sparse, {"interval": 4, "iterations": 30}, method="inr", device="cpu").run())
    fit = [e for e in events if isinstance(e, Progress) and "INR" in e.message]
    assert fit and all(e.total == (sparse.shape[0] - 1) * 4 + 1 and e.done == 0 for e in fit)
