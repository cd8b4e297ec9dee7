"""The learned methods of the `projection` task (`unet`, `microdiffusion`) with tiny models."""

import json

import numpy as np
import pytest
import torch

from napari_voxrecon.engine import Job, run_job
from napari_voxrecon.errors import VoxreconError
from napari_voxrecon.simulate import simulate_projection

N = 4


def _volume() -> np.ndarray:
    from napari_voxrecon.simulate.phantoms import make_phantom

    return (make_phantom((24, 32, 32), kind="nuclei", seed=1, voxel_size=(0.5, 0.25, 0.25)) * 1000 + 50).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Both models trained a few steps on phantoms (microdiffusion with its INR prior bank)."""
    from napari_voxrecon.training.train_projection import train_projection

    root = tmp_path_factory.mktemp("proj_weights")
    out = {}
    for method in ("unet", "microdiffusion"):
        out[method] = str(train_projection(method, [], str(root / method), steps=3, batch_size=2, crop=32,
                                           channels=(8, 16, 32), intervals=(2, N), bank_phantoms=1, bank_iterations=20,
                                           phantom_shape=(16, 40, 40), phantom_pool=2, log=lambda m: None, threads=2))
    return out


def _run(method, proj, weights, **params):
    return run_job(Job("projection", proj, {"interval": N, "weights": weights[method], **params}, method=method, seed=5, device="cpu"))


def test_weights_carry_the_projection_task_and_their_own_method_names(weights):
    for method, name in (("unet", "projection-unet"), ("microdiffusion", "microdiffusion")):
        config = json.loads(open(f"{weights[method]}/config.json").read())
        assert (config["method"], config["task"]) == (name, "projection")


def test_unet_keeps_group_means_exactly_and_creates_no_negative_values(weights):
    proj = simulate_projection(_volume(), N)
    out = _run("unet", proj, weights)["result"]
    assert out.shape == (proj.shape[0] * N, 32, 32)
    means = out.reshape(proj.shape[0], N, 32, 32).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(means, proj, rtol=1e-5, atol=1e-3)
    assert out.min() >= 0


def test_microdiffusion_outputs_prior_and_uncertainty_same_seed_same_result(weights):
    proj = simulate_projection(_volume(), N)
    params = dict(iterations=20, steps=2, samples=2)
    a = _run("microdiffusion", proj, weights, **params)
    assert set(a) == {"result", "prior", "uncertainty"}
    assert a["prior"].shape == a["result"].shape == a["uncertainty"].shape
    assert a["uncertainty"].min() >= 0 and a["uncertainty"].max() > 0
    np.testing.assert_array_equal(a["result"], _run("microdiffusion", proj, weights, **params)["result"])
    means = a["result"].reshape(proj.shape[0], N, 32, 32).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(means, proj, rtol=1e-5, atol=1e-3)
    # without the consistency step the sampled groups do not match their projections
    raw = _run("microdiffusion", proj, weights, consistency=False, **params)["result"]
    raw_means = raw.reshape(proj.shape[0], N, 32, 32).astype(np.float64).mean(axis=1)
    assert np.abs(raw_means - proj).max() > 1e-2


def test_sparse_unet_weights_are_refused_by_the_projection_unet(weights):
    proj = simulate_projection(_volume(), N)
    with pytest.raises(VoxreconError, match="projection-unet"):
        _run("unet", proj, {"unet": "unet"})  # the embedded sparse-task U-Net


def test_linear_prior_is_exact_on_a_linear_ramp_and_keeps_the_group_mean():
    from napari_voxrecon.models.projection_group_net import linear_prior

    z = torch.arange(3 * 6, dtype=torch.float32)
    vol = (0.1 * z - 0.5)[:, None, None].expand(-1, 5, 5)
    proj = vol.reshape(3, 6, 5, 5).mean(1)[None]
    prior = linear_prior(proj, 6)[0]
    torch.testing.assert_close(prior, vol[6:12], atol=1e-6, rtol=0)


def test_projection_network_conditions_on_the_projections_and_drops_them_unconditionally():
    from napari_voxrecon.models.projection_group_net import ProjectionGroupNet

    torch.manual_seed(0)
    net = ProjectionGroupNet((8, 16), diffusion=True)
    for p in net.parameters():  # leave the zero-initialised output layer out of it
        torch.nn.init.normal_(p, std=0.1)
    x, prior = torch.randn(2, N, 16, 16), torch.randn(2, N, 16, 16)
    proj_a, proj_b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    t, pos = torch.full((2,), 0.5), torch.zeros(2)
    keep = torch.tensor([True, False])
    out_a, out_b = net(x, prior, proj_a, t, keep, pos), net(x, prior, proj_b, t, keep, pos)
    assert not torch.allclose(out_a[0], out_b[0])  # conditional: the projections matter
    torch.testing.assert_close(out_a[1], out_b[1])  # unconditional: they are dropped


def test_warm_start_makes_the_diffusion_network_answer_minus_the_regression():
    """At equal time input the warm-started network ignores the noisy state and returns -x0 of the
    regression (the v-target at zero terminal SNR), whatever the state holds."""
    from napari_voxrecon.models.projection_group_net import ProjectionGroupNet
    from napari_voxrecon.models.projection_models import warm_start_from_regression

    torch.manual_seed(0)
    reg = ProjectionGroupNet((8, 16), diffusion=False)
    for p in reg.parameters():
        torch.nn.init.normal_(p, std=0.1)
    diff = ProjectionGroupNet((8, 16), diffusion=True)
    warm_start_from_regression(diff, reg.state_dict())
    prior, proj = torch.randn(2, N, 16, 16) * 0.3, torch.randn(2, 3, 16, 16) * 0.3
    t, keep, pos = torch.zeros(2), torch.tensor([True, False]), torch.tensor([0.0, 0.6])
    a = reg(None, prior, proj, t, keep, pos)
    for scale in (0.0, 5.0):
        b = diff(torch.randn(2, N, 16, 16) * scale, prior, proj, t, keep, pos)
        assert torch.allclose(a, -b, atol=1e-5)
    assert a.abs().mean() > 1e-3
    with pytest.raises(ValueError, match="same --channels|shape"):
        warm_start_from_regression(ProjectionGroupNet((8, 32), diffusion=True), reg.state_dict())


def test_microdiffusion_trains_from_projection_unet_weights_and_refuses_others(weights, tmp_path):
    from napari_voxrecon.training.train_projection import train_projection

    out = train_projection("microdiffusion", [], str(tmp_path / "md"), steps=1, batch_size=2, crop=32,
                           intervals=(2, N), bank_phantoms=1, bank_iterations=10, phantom_shape=(16, 40, 40),
                           log=lambda m: None, threads=2, init=weights["unet"], p_terminal=0.5)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"]["channels"] == [8, 16, 32] and config["architecture"]["diffusion"]
    assert "projection-unet weights" in config["training"]["initialised_from"]
    assert config["training"]["p_terminal"] == 0.5
    assert "Initialised from" in (out / "README.md").read_text()
    with pytest.raises(VoxreconError, match="starts from projection-unet"):
        train_projection("unet", [], str(tmp_path / "u"), steps=1, init=weights["microdiffusion"], log=lambda m: None)


def test_naive_diffusion_ablation_trains_and_runs_on_the_linear_prior(tmp_path):
    """--no-inr-prior: no INR is fitted, in training or at inference; the linear prior is the
    ``prior`` output, and the results still keep every group's mean."""
    from napari_voxrecon.models.projection_models import linear_prior, neighbour_projections
    from napari_voxrecon.normalize import denormalize, normalize, percentile_range
    from napari_voxrecon.training.train_projection import train_projection

    logs = []
    out = train_projection("microdiffusion", [], str(tmp_path / "naive"), steps=2, batch_size=2, crop=32,
                           channels=(8, 16, 32), intervals=(2, N), phantom_shape=(16, 40, 40), phantom_pool=2,
                           log=logs.append, threads=2, inr_prior=False)
    config = json.loads((out / "config.json").read_text())
    assert config["inr_prior"] is False and "Naive-diffusion ablation" in (out / "README.md").read_text()
    assert not any("prior bank" in m or "INR" in m for m in logs[1:])
    proj = simulate_projection(_volume(), N)
    res = run_job(Job("projection", proj, {"interval": N, "weights": str(out), "steps": 1, "samples": 1},
                      method="microdiffusion", seed=5, device="cpu"))
    lo, hi = percentile_range(proj)
    norm = 2 * normalize(proj, lo, hi) - 1
    expected = np.concatenate([linear_prior(torch.from_numpy(neighbour_projections(norm, k)[None]), N)[0].numpy()
                               for k in range(proj.shape[0])])
    np.testing.assert_allclose(res["prior"], denormalize((expected + 1) / 2, lo, hi), rtol=1e-5, atol=1e-3)
    means = res["result"].reshape(proj.shape[0], N, 32, 32).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(means, proj, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="microdiffusion ablation"):
        train_projection("unet", [], str(tmp_path / "u"), steps=1, inr_prior=False, log=lambda m: None)
