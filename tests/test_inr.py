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
        assert names == ["iterations", "lr", "encoding", "neighbour_sigma"]


def test_inr_reports_fit_progress_on_the_plane_scale():
    from napari_voxrecon.engine import Progress

    sparse = simulate_sparse(_volume(), 4)
    events = list(Job("sparse", sparse, {"interval": 4, "iterations": 30}, method="inr", device="cpu").run())
    fit = [e for e in events if isinstance(e, Progress) and "INR" in e.message]
    assert fit and all(e.total == (sparse.shape[0] - 1) * 4 + 1 and e.done == 0 for e in fit)


def test_inr_fit_streams_previews_that_converge_and_never_reach_the_sinks(monkeypatch):
    """While it fits, the INR's current rendering comes as Preview events of the whole output
    volume (in input units), getting closer to the final result; sinks never see them."""
    from napari_voxrecon.engine import Preview
    from napari_voxrecon.methods import inr_methods

    monkeypatch.setattr(inr_methods, "PREVIEW_SECONDS", 0.0)
    proj = simulate_projection(_volume(), 4)
    job = lambda: Job("projection", proj, {"interval": 4, "iterations": 200}, method="inr", seed=2, device="cpu")
    events = []
    out = run_job(job(), on_event=events.append)["result"]
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) >= 3 and all(p.output == "result" and p.data.shape == out.shape for p in previews)
    first, last = (float(np.mean((p.data - out) ** 2)) for p in (previews[0], previews[-1]))
    assert last < first  # the fit moves toward its final rendering
    monkeypatch.setattr(inr_methods, "PREVIEW_SECONDS", 1e9)
    plain = []
    assert np.array_equal(run_job(job(), on_event=plain.append)["result"], out)  # previews change nothing
    assert not any(isinstance(e, Preview) for e in plain)


def test_fourier_inr_and_neighbour_inference_run_and_keep_group_means():
    gt = _volume()[:, :16, :16]
    n = 4
    proj = simulate_projection(gt, n)
    params = {"interval": n, "iterations": 40, "encoding": "fourier", "neighbour_sigma": 0.2}
    out = run_job(Job("projection", proj, params, method="inr", device="cpu"))["result"]
    means = out.reshape(proj.shape[0], n, 16, 16).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(means, proj, rtol=1e-5, atol=1e-3)
    assert out.min() >= 0  # the consistency correction creates no negative intensity


def test_neighbour_weights_match_the_authors_code_for_n6():
    from napari_voxrecon.models.inr import neighbour_weights

    offsets, q = neighbour_weights(6, 0.2)
    assert list(offsets) == [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]
    np.testing.assert_allclose(q, [0.05, 0.15, 0.3, 0.3, 0.15, 0.05], atol=0.02)
    assert abs(q.sum() - 1) < 1e-12


def test_neighbour_inference_of_a_plane_linear_in_z_is_the_plane_itself():
    import torch

    from napari_voxrecon.models.inr import render_output_plane

    class Ramp(torch.nn.Module):  # intensity = z coordinate: symmetric weights must return it
        align_corners = False

        def forward(self, coords):
            return coords[:, 0]

    depth, n = 24, 6
    for z in (8, 12, 15):
        plane = render_output_plane(Ramp(), z, depth, 4, 4, n=n, neighbour_sigma=0.2)
        np.testing.assert_allclose(plane, (2 * z + 1) / depth - 1, atol=1e-6)


def test_group_mean_correction_is_exact_nonnegative_and_least_squares():
    from napari_voxrecon.methods.projection_baselines import enforce_group_means

    rng = np.random.default_rng(0)
    group = rng.normal(1, 2, (6, 20, 20)).astype(np.float32)
    proj = np.abs(rng.normal(0.5, 1, (20, 20))).astype(np.float32)
    out = enforce_group_means(group, proj, 0.0)
    np.testing.assert_allclose(out.astype(np.float64).mean(axis=0), proj, atol=1e-6)
    assert out.min() >= 0
    # KKT of min ||x - g||^2 s.t. mean(x) = p, x >= 0: x = max(g + lambda, 0) with one lambda per pixel
    free = out > 0
    lam = np.where(free, out - group, np.nan)
    spread = np.nanmax(lam, axis=0) - np.nanmin(lam, axis=0)
    assert np.nanmax(spread) < 1e-5
    assert np.all(group[~free] + np.nanmax(lam, axis=0)[None].repeat(6, 0)[~free] <= 1e-5)
    # no floor: a uniform shift
    shifted = enforce_group_means(group, proj)
    np.testing.assert_allclose(shifted - group, np.broadcast_to(shifted[0] - group[0], group.shape), atol=1e-5)
