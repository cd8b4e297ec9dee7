"""The learned methods of the `restore` task (`care`, `dit`) with tiny models."""

import json

import numpy as np
import pytest
import torch

from napari_voxrecon.engine import Job, run_job
from napari_voxrecon.simulate import simulate_restore


def _volume() -> np.ndarray:
    from napari_voxrecon.simulate.phantoms import make_phantom

    return (make_phantom((24, 40, 40), kind="nuclei", seed=1, voxel_size=(0.5, 0.25, 0.25)) * 1000 + 50).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Both models trained a few steps on phantoms."""
    from napari_voxrecon.training.train_restore import train_restore

    root = tmp_path_factory.mktemp("restore_weights")
    return {m: str(train_restore(m, [], str(root / m), steps=3, batch_size=2, crop=32, depth=8, channels=(8, 16),
                                 dim=32, blocks=2, heads=2, phantom_pool=2, phantom_shape=(12, 40, 40),
                                 log=lambda s: None, threads=2))
            for m in ("care", "dit")}


def _run(method, lq, weights, a=4, **params):
    job = Job("restore", lq, {"axial_factor": a, "weights": weights[method], **params}, method=method, seed=5, device="cpu")
    return run_job(job)


def test_weights_record_the_restore_task_and_degradation(weights):
    for method in ("care", "dit"):
        config = json.loads((__import__("pathlib").Path(weights[method]) / "config.json").read_text())
        assert (config["method"], config["task"], config["restore_degradation"]) == (method, "restore", "axial4")
        assert config["degradation"]["axial_factors"] == [4] and "slice_guidance" not in config


@pytest.mark.parametrize("method", ["care", "dit"])
def test_restore_output_grid_determinism_and_slab_seams(weights, method):
    lq = simulate_restore(_volume(), 4, 1, 0.05, seed=0)
    out = _run(method, lq, weights, tile=32, samples=2) if method == "dit" else _run(method, lq, weights, tile=32)
    res = out["result"]
    assert res.shape == (lq.shape[0] * 4, 40, 40) and np.isfinite(res).all()
    again = _run(method, lq, weights, tile=32, samples=2) if method == "dit" else _run(method, lq, weights, tile=32)
    np.testing.assert_array_equal(again["result"], res)
    if method == "dit":
        assert out["uncertainty"].shape == res.shape and (out["uncertainty"] >= 0).all()


def test_untrained_care_returns_the_trilinear_upsampling_through_slabs_and_tiles():
    """The zero-initialised output layer predicts no residual: whatever the slab and tile
    layout, blending must give back exactly the trilinear baseline (no seams, no shift)."""
    from napari_voxrecon.models.restore_models import CareNet, RestoreModel, reconstruct_restore

    lq = simulate_restore(_volume(), 3, 1, 0.05, seed=1)
    model = RestoreModel(CareNet((8, 16)).eval())
    planes = dict((z, p) for z, p, _ in reconstruct_restore(model, lq, 3, 1, depth=8, z_overlap=3, tile=32, overlap=8))
    got = np.stack([planes[z] for z in sorted(planes)])
    expected = run_job(Job("restore", lq, {"axial_factor": 3}, method="trilinear"))["result"]
    assert sorted(planes) == list(range(expected.shape[0]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3 * float(np.ptp(expected)))


def test_dit_with_a_regression_prior_starts_as_that_prior_and_keeps_it_frozen(weights, tmp_path):
    """With a care prior the dit diffuses the residual over the prior's estimate: untrained
    (zero-initialised outputs) its one-step sample is exactly the prior's result, and training
    leaves the prior's weights untouched."""
    from napari_voxrecon.models.restore_dit import RestoreDiT
    from napari_voxrecon.models.restore_models import CareNet, RestoreModel
    from napari_voxrecon.training.train_restore import train_restore
    from napari_voxrecon.weights import load_weights

    care_state, care_config, _ = load_weights(weights["care"], "care")
    care = CareNet(tuple(care_config["architecture"]["channels"]))
    torch.manual_seed(0)
    for p in care.parameters():  # a prior that visibly changes its input
        torch.nn.init.normal_(p, std=0.1)
    dit = RestoreDiT(dim=32, depth=2, heads=2, patch=4, prior_channels=care_config["architecture"]["channels"])
    dit.prior.load_state_dict(care.state_dict())
    lq = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (8, 36, 36)).astype(np.float32))
    expected, _ = RestoreModel(care.eval()).fill(lq)
    got, _ = RestoreModel(dit.eval()).fill(lq, steps=1, samples=1, generator=torch.Generator().manual_seed(0))
    assert float((expected - lq).abs().mean()) > 1e-2  # the prior does something
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    out = train_restore("dit", [], str(tmp_path / "dit"), steps=2, batch_size=2, crop=32, depth=8, dim=32, blocks=2, heads=2,
                        phantom_pool=2, phantom_shape=(12, 40, 40), log=lambda s: None, threads=2, prior=weights["care"])
    state, config, _ = load_weights(str(out), "dit")
    assert config["architecture"]["prior_channels"] == care_config["architecture"]["channels"]
    for k, v in care_state.items():
        torch.testing.assert_close(state[f"prior.{k}"].float(), v.float(), rtol=0, atol=0)
    lq = simulate_restore(_volume(), 4, 1, 0.05, seed=0)
    res = _run("dit", lq, {"dit": str(out)}, tile=32, samples=1)["result"]
    assert res.shape == (lq.shape[0] * 4, 40, 40) and np.isfinite(res).all()


def test_dit_with_a_dinov2_global_condition_trains_saves_without_the_encoder_and_runs(tmp_path):
    """The optional DINOv2 path, offline: a tiny randomly initialised DINOv2 saved to a folder
    stands in for a Hub model (never a download). The encoder is frozen and not part of the
    saved weights; its features reach the network through a zero-initialised projection."""
    transformers = pytest.importorskip("transformers")
    from napari_voxrecon.errors import VoxreconError
    from napari_voxrecon.models.restore_dit import RestoreDiT
    from napari_voxrecon.training.train_restore import train_restore
    from napari_voxrecon.weights import load_weights

    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=28, patch_size=14)
    transformers.Dinov2Model(cfg).save_pretrained(tmp_path / "dino")
    net = RestoreDiT(dim=32, depth=1, heads=2, patch=4, global_encoder=str(tmp_path / "dino"))
    assert not any("encoder" in k and "global_dino" in k for k in net.state_dict())
    assert set(k for k in net.state_dict() if k.startswith("global_dino")) == {"global_dino.proj.weight", "global_dino.proj.bias"}
    a, b = torch.zeros(1, 4, 16, 16), torch.ones(1, 4, 16, 16) * 0.5
    assert not torch.allclose(net.global_dino.features(a), net.global_dino.features(b))  # the features see the input
    for p in net.parameters():  # past adaLN-Zero's identity start: a gradient must reach the projection
        torch.nn.init.normal_(p, std=0.05)
    net(a, b, torch.ones_like(a), torch.full((1,), 0.5)).pow(2).mean().backward()
    assert float(net.global_dino.proj.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in net.global_dino.encoder.parameters())  # frozen

    out = train_restore("dit", [], str(tmp_path / "dit"), steps=2, batch_size=2, crop=32, depth=8, dim=32, blocks=1, heads=2,
                        phantom_pool=2, phantom_shape=(12, 40, 40), log=lambda s: None, threads=2,
                        global_encoder=str(tmp_path / "dino"))
    state, config, _ = load_weights(str(out), "dit")
    assert config["architecture"]["global_encoder"] == str(tmp_path / "dino")
    lq = simulate_restore(_volume(), 4, 1, 0.05, seed=0)
    res = _run("dit", lq, {"dit": str(out)}, tile=32, samples=1, steps=1)["result"]
    assert res.shape == (lq.shape[0] * 4, 40, 40) and np.isfinite(res).all()
    with pytest.raises(VoxreconError, match="could not load the DINOv2 encoder"):
        RestoreDiT(dim=32, depth=1, heads=2, global_encoder=str(tmp_path / "missing"))


def test_decomposed_attention_mixes_planes_and_patches_and_matches_full_attention_shapes():
    from napari_voxrecon.models.restore_dit import RestoreDiT

    torch.manual_seed(0)
    net = RestoreDiT(dim=32, depth=2, heads=2, patch=4)
    for p in net.parameters():  # leave adaLN-Zero's identity start so information can flow
        torch.nn.init.normal_(p, std=0.05)
    lq, mask, t = torch.zeros(1, 6, 16, 16), torch.ones(1, 6, 16, 16), torch.full((1,), 0.5)
    state = torch.zeros(1, 6, 16, 16)
    base = net(state, lq, mask, t)
    bumped = lq.clone()
    bumped[0, 0, 0, 0] = 1.0  # one voxel of the first plane, first patch
    diff = (net(state, bumped, mask, t) - base).abs()
    assert diff[0, 5].max() > 0  # reaches the last plane (axial attention) ...
    assert diff[0, 0, 12:, 12:].max() > 0  # ... and the far patch of the plane (lateral attention)
    full = RestoreDiT(dim=32, depth=2, heads=2, patch=4, attention="full")
    assert full(state, lq, mask, t).shape == base.shape


def test_training_pairs_mask_blocks_and_keep_the_task_geometry():
    from napari_voxrecon.training.restore_pairs import DEGRADATIONS, Degradation, make_pair

    rng = np.random.default_rng(0)
    # constant along z: axial blur, subsampling and trilinear upsampling give it back exactly,
    # so input and target must agree voxel for voxel (same grid, same intensity mapping)
    window = np.repeat(np.linspace(-1, 1, 16 * 16, dtype=np.float32).reshape(1, 16, 16), 9, axis=0)
    up, mask, target = make_pair(window, Degradation((4,), (1,), (0.0, 0.0)), rng)
    assert up.shape == target.shape == (9, 16, 16) and mask.min() == 1
    np.testing.assert_allclose(up, target, atol=1e-5)
    assert target.min() < -0.99 and target.max() > 0.99  # mapped by the input's own percentiles
    deg = DEGRADATIONS["pretrain"]
    masked = [make_pair(window, Degradation((1,), (1,), (0.0, 0.0), mask_prob=1.0), rng)[1] for _ in range(5)]
    hidden = [1 - m.mean() for m in masked]
    assert all(0.4 < h < 0.85 for h in hidden) and deg.mask_prob == 0.9


def test_restore_models_train_from_the_cli(tmp_path, capsys):
    from napari_voxrecon.cli import main
    from napari_voxrecon.io import write_volume

    write_volume(tmp_path / "gt.tif", _volume())
    out = tmp_path / "care"
    assert main(["train", "care", "--data", str(tmp_path / "gt.tif"), "-o", str(out), "--degradation", "denoise",
                 "--steps", "2", "--batch-size", "2", "--crop", "32", "--channels", "8", "16", "--phantom-pool", "2"]) == 0
    assert json.loads((out / "config.json").read_text())["restore_degradation"] == "denoise"
    assert main(["train", "unet", "--degradation", "denoise", "-o", str(tmp_path / "x")]) != 0
    assert "--degradation applies to the restore models" in capsys.readouterr().err
    assert main(["train", "care", "--bank-phantoms", "3", "-o", str(tmp_path / "y")]) != 0
    assert "--bank-phantoms applies to microdiffusion only" in capsys.readouterr().err


def test_missing_default_restore_weights_say_how_to_get_them(monkeypatch):
    from napari_voxrecon import weights as weights_module
    from napari_voxrecon.errors import VoxreconError

    monkeypatch.setattr(weights_module, "embedded_names", lambda: [])
    with pytest.raises(VoxreconError, match="voxrecon train care --degradation denoise"):
        run_job(Job("restore", simulate_restore(_volume(), 1, 1, 0.1), {"axial_factor": 1}, method="care", device="cpu"))


@pytest.mark.parametrize("method", ["care", "dit"])
def test_embedded_restore_weights_beat_trilinear_on_a_phantom_stack(method):
    """The shipped `care-axial4` and `dit-axial4` weights are the `default` at axial factor 4
    and restore a x4-subsampled, noisy phantom better than trilinear upsampling (1-3 dB)."""
    from napari_voxrecon.metrics import evaluate
    from napari_voxrecon.simulate.phantoms import make_phantom

    gt = (make_phantom((32, 64, 64), kind="tubes", seed=3, voxel_size=(0.5, 0.25, 0.25)) * 1000 + 50).astype(np.float32)
    lq = simulate_restore(gt, 4, 1, 0.05)
    score = {m: evaluate(run_job(Job("restore", lq, {"axial_factor": 4}, method=m, device="cpu"))["result"], gt,
                         metrics=("psnr", "ssim")) for m in ("trilinear", method)}
    assert score[method]["psnr"] > score["trilinear"]["psnr"] + 0.5
    assert score[method]["ssim"] > score["trilinear"]["ssim"]


def test_embedded_dit_denoise_weights_are_the_default_at_factor_1_and_denoise():
    from napari_voxrecon.metrics import evaluate
    from napari_voxrecon.simulate.phantoms import make_phantom

    gt = (make_phantom((16, 64, 64), kind="nuclei", seed=4, voxel_size=(0.5, 0.25, 0.25)) * 1000 + 50).astype(np.float32)
    lq = simulate_restore(gt, 1, 1, 0.2, seed=1)
    out = run_job(Job("restore", lq, {"axial_factor": 1}, method="dit", device="cpu"))
    assert set(out) == {"result"}  # defaults: 1 step, 1 sample, no uncertainty output
    assert evaluate(out["result"], gt, metrics=("psnr",))["psnr"] > evaluate(lq, gt, metrics=("psnr",))["psnr"] + 3


@pytest.mark.parametrize("factor", [4, 1])
def test_cli_with_default_weights_picks_the_embedded_weights_of_the_job(tmp_path, factor):
    """'default' resolves per job (axial4 or denoise) before any output is created, in the
    in-memory path and the chunked path alike (it once failed up front as 'ambiguous')."""
    from napari_voxrecon.cli import main
    from napari_voxrecon.io import read_volume
    from napari_voxrecon.io.tiff import write_tiff

    rng = np.random.default_rng(0)
    write_tiff(tmp_path / "low.tif", (rng.random((4, 24, 24)) * 100).astype(np.float32), (1, 1, 1))
    for out, extra in (("a.tif", []), ("b.zarr", ["--chunked", "--chunk-tile", "16"])):
        rc = main(["reconstruct", "restore", str(tmp_path / "low.tif"), "-o", str(tmp_path / out), "--axial-factor",
                   str(factor), "--method", "care", "-q", *extra])
        assert rc == 0
        assert read_volume(tmp_path / out).data.shape == (4 * factor, 24, 24)
