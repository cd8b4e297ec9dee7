"""The learned ``sparse`` methods end to end with a tiny model (trained for a few steps here)."""

import json

import numpy as np
import pytest
import torch

from napari_voxrecon.cli import main
from napari_voxrecon.io import read_volume, write_volume


@pytest.fixture(scope="module")
def stack_files(tmp_path_factory):
    from napari_voxrecon.simulate.phantoms import make_phantom

    d = tmp_path_factory.mktemp("sparse_models")
    gt = make_phantom((25, 48, 48), kind="nuclei", seed=3, voxel_size=(0.5, 0.25, 0.25)) * 1000 + 50
    write_volume(d / "gt.tif", gt, (0.5, 0.25, 0.25))
    write_volume(d / "sparse.tif", gt[::4], (2.0, 0.25, 0.25))
    return d, gt


@pytest.fixture(scope="module")
def tiny_weights(stack_files):
    d, _ = stack_files
    out = {}
    for model in ("sparse3diff", "unet"):
        folder = d / f"w_{model}"
        rc = main(["train", model, "--data", str(d / "gt.tif"), "-o", str(folder), "--steps", "3", "--batch-size", "2",
                   "--crop", "32", "--channels", "8", "16", "--phantom-fraction", "0", "--holdout", "0", "--threads", "1"])
        assert rc == 0
        out[model] = folder
    return out


def test_trained_weights_folder_format(tiny_weights):
    from safetensors import safe_open

    folder = tiny_weights["sparse3diff"]
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == "sparse3diff" and config["task"] == "sparse"
    assert config["training"]["steps"] == 3
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    assert (folder / "README.md").exists()


@pytest.mark.parametrize("method,extra", [("sparse3diff", ["--steps", "2", "--samples", "2", "--guidance", "1.0"]), ("unet", [])])
def test_learned_reconstruction_keeps_acquired_planes_and_is_deterministic(stack_files, tiny_weights, method, extra):
    d, gt = stack_files
    outs = []
    for i in range(2):
        out = d / f"rec_{method}_{i}.tif"
        rc = main(["reconstruct", "sparse", str(d / "sparse.tif"), "-o", str(out), "--interval", "4", "--method", method,
                   "--weights", str(tiny_weights[method]), "--tile", "64", "--device", "cpu", "-q", *extra])
        assert rc == 0
        outs.append(read_volume(out).data)
    sparse = read_volume(d / "sparse.tif").data
    assert outs[0].shape == gt.shape
    np.testing.assert_array_equal(outs[0][::4], sparse)  # acquired planes bit-exact
    np.testing.assert_array_equal(outs[0], outs[1])  # same seed, same output
    assert np.isfinite(outs[0]).all()
    if "--samples" in extra:
        sd = read_volume(d / f"rec_{method}_0_uncertainty.tif").data
        assert sd.shape == gt.shape and (sd[::4] == 0).all() and (sd[1::4] > 0).all()


def test_seed_changes_diffusion_samples(stack_files, tiny_weights):
    from napari_voxrecon.engine import Job, run_job

    d, _ = stack_files
    sparse = read_volume(d / "sparse.tif").data
    kw = dict(method="sparse3diff")
    p = {"interval": 4, "weights": str(tiny_weights["sparse3diff"]), "steps": 2}
    a = run_job(Job("sparse", sparse, p, seed=1, device="cpu", **kw))["result"]
    b = run_job(Job("sparse", sparse, p, seed=2, device="cpu", **kw))["result"]
    assert not np.array_equal(a[1::4], b[1::4])
    np.testing.assert_array_equal(a[::4], b[::4])


def test_tiling_is_seamless_for_a_deterministic_model(stack_files, tiny_weights):
    """With overlapping tiles the unet output matches the untiled output closely."""
    from napari_voxrecon.engine import Job, run_job

    d, _ = stack_files
    sparse = read_volume(d / "sparse.tif").data
    p = {"interval": 4, "weights": str(tiny_weights["unet"])}
    whole = run_job(Job("sparse", sparse, {**p, "tile": 256}, method="unet", device="cpu"))["result"]
    tiled = run_job(Job("sparse", sparse, {**p, "tile": 64}, method="unet", device="cpu"))["result"]
    np.testing.assert_allclose(whole, tiled, rtol=1e-4, atol=1e-2)


def test_self_alignment_changes_weights_and_saves_them(stack_files, tiny_weights):
    from safetensors.torch import load_file

    d, _ = stack_files
    out = d / "aligned"
    rc = main(["finetune", "sparse3diff", str(d / "sparse.tif"), "--interval", "4", "-o", str(out),
               "--weights", str(tiny_weights["sparse3diff"]), "--steps", "2", "--lr", "1e-3", "--device", "cpu", "-q"])
    assert rc == 0
    before = load_file(str(tiny_weights["sparse3diff"] / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    config = json.loads((out / "config.json").read_text())
    # 7 acquired planes -> 5 references with neighbours on both sides, n-1 = 3 updates each
    assert config["self_alignment"]["updates"] == 5 * 3
    # and the fine-tuned weights are usable as weights
    assert main(["reconstruct", "sparse", str(d / "sparse.tif"), "-o", str(d / "aligned.tif"), "--interval", "4",
                 "--method", "sparse3diff", "--weights", str(out), "--steps", "2", "-q"]) == 0


def test_self_alignment_loss_uses_only_the_reference_plane():
    """The v-loss restricted to plane l must not depend on the other planes' targets."""
    from napari_voxrecon.models.sparse3diff import SparseDiffusionTrainable
    from napari_voxrecon.models.sparse_window_net import SparseWindowNet

    torch.manual_seed(0)
    net = SparseWindowNet((8, 16), emb_dim=16, cond_dim=16, pos_dim=8)
    tr = SparseDiffusionTrainable(net, windows=None)
    w = torch.rand(2, 5, 16, 16) * 2 - 1
    w2 = w.clone()
    w2[:, 1] += 0.5  # change an interior plane that is not the reference (and is not an end)
    la = tr.loss(net, w, torch.Generator().manual_seed(1), loss_planes=torch.tensor([3]))
    lb = tr.loss(net, w2, torch.Generator().manual_seed(1), loss_planes=torch.tensor([3]))
    lc = tr.loss(net, w2, torch.Generator().manual_seed(1))
    la_all = tr.loss(net, w, torch.Generator().manual_seed(1))
    # The zero-initialised output layer makes v_pred = 0, so only targets matter here.
    assert torch.allclose(la, lb) and not torch.allclose(lc, la_all)


def test_missing_default_weights_error_is_clear(stack_files, capsys, monkeypatch, tmp_path):
    import napari_voxrecon.weights as W
    from napari_voxrecon.models.loading import clear_cache

    monkeypatch.setattr(W, "EMBEDDED_ROOT", tmp_path / "none")
    clear_cache()
    d, _ = stack_files
    rc = main(["reconstruct", "sparse", str(d / "sparse.tif"), "-o", str(d / "x.tif"), "--interval", "4", "--method", "unet", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "unet" in err and not (d / "x.tif").exists()


def test_unknown_weights_are_refused(stack_files, capsys):
    d, _ = stack_files
    rc = main(["reconstruct", "sparse", str(d / "sparse.tif"), "-o", str(d / "y.tif"), "--interval", "4",
               "--method", "sparse3diff", "--weights", "no-such-weights", "-q"])
    assert rc == 2 and "no-such-weights" in capsys.readouterr().err


def test_tiles_cover_the_plane():
    from napari_voxrecon.models.tiling import tiles

    cover = np.zeros((300, 170), np.float32)
    for y0, x0, h, w, weight in tiles(300, 170, 128, 32):
        assert weight.shape == (h, w)
        cover[y0:y0 + h, x0:x0 + w] += weight
    assert cover.min() > 0.0


def test_gpu_out_of_memory_falls_back_to_cpu_with_notice(stack_files, tiny_weights, monkeypatch):
    """A CUDA OOM mid-run continues on the CPU, announced, with the same planes as a CPU run."""
    import napari_voxrecon.engine.device as device_mod
    import napari_voxrecon.models.loading as loading
    from napari_voxrecon.engine import Job, run_job
    from napari_voxrecon.engine.events import Notice

    d, _ = stack_files
    sparse = read_volume(d / "sparse.tif").data
    params = {"interval": 4, "weights": str(tiny_weights["unet"])}
    reference = run_job(Job("sparse", sparse, params, method="unet", device="cpu"))["result"]

    real_load = loading.load_model

    class FailingOnGpu:
        def __init__(self, model):
            self.model, self.calls = model, 0

        def fill_tiled(self, *a, **k):
            self.calls += 1
            if self.calls == 2:  # the second gap runs out of GPU memory
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.model.fill_tiled(*a, **k)

    def fake_load(method, spec, device="cpu", cached=True):
        model = real_load(method, spec, "cpu", cached)
        return FailingOnGpu(model) if device == "cuda" else model

    monkeypatch.setattr(device_mod, "resolve_device", lambda request="auto": ("cuda", None))
    monkeypatch.setattr(loading, "load_model", fake_load)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    notices = []
    out = run_job(Job("sparse", sparse, params, method="unet", device="cuda"),
                  on_event=lambda e: notices.append(e.message) if isinstance(e, Notice) else None)["result"]
    assert any("out of memory" in m and "CPU" in m for m in notices)
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-3)


def test_training_continues_from_existing_weights(stack_files, tiny_weights):
    d, _ = stack_files
    out = d / "continued"
    assert main(["train", "unet", "--data", str(d / "gt.tif"), "-o", str(out), "--steps", "2", "--batch-size", "2",
                 "--crop", "32", "--phantom-fraction", "0", "--holdout", "0", "--threads", "1",
                 "--init", str(tiny_weights["unet"])]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["steps"] == 3 + 2
    assert config["architecture"]["channels"] == [8, 16]


@pytest.mark.parametrize("p_terminal,expect_all_terminal", [(1.0, True), (0.0, False)])
def test_p_terminal_trains_at_pure_noise(p_terminal, expect_all_terminal):
    """p_terminal = 1 puts every window at t = 1, where x_t is pure noise and v = -x0."""
    from napari_voxrecon.models.sparse3diff import SparseDiffusionTrainable
    from napari_voxrecon.models.sparse_window_net import SparseWindowNet

    torch.manual_seed(0)
    net = SparseWindowNet((8, 16), emb_dim=16, cond_dim=16, pos_dim=8)
    seen = []
    original = net.forward

    def spy(state, guide, t, keep):
        seen.append(t.clone())
        return original(state, guide, t, keep)

    net.forward = spy
    tr = SparseDiffusionTrainable(net, windows=None, p_terminal=p_terminal)
    tr.loss(net, torch.rand(6, 4, 16, 16) * 2 - 1, torch.Generator().manual_seed(2))
    assert bool((seen[0] == 1).all()) is expect_all_terminal


def test_bf16_precision_stays_close_to_fp32(stack_files, tiny_weights):
    """bf16 autocast changes the network's arithmetic, not the result beyond bf16 rounding."""
    from napari_voxrecon.engine import Job, run_job

    _, gt = stack_files
    sparse = gt[::4]
    outs = {p: run_job(Job("sparse", sparse, {"interval": 4, "weights": str(tiny_weights["sparse3diff"]), "samples": 1,
                                              "precision": p}, method="sparse3diff", device="cpu"))["result"]
            for p in ("fp32", "bf16")}
    assert np.array_equal(outs["fp32"][::4], sparse) and np.array_equal(outs["bf16"][::4], sparse)
    rel = np.abs(outs["fp32"] - outs["bf16"]).max() / np.ptp(gt)
    assert 0 < rel < 0.02


def test_unguided_ablation_noises_acquired_planes_and_samples_by_replacement(stack_files, tmp_path):
    """The unguided DDPM ablation: trained on whole noised windows, loaded from its config,
    sampled with the acquired planes substituted; acquired planes still come out bit-exact."""
    from napari_voxrecon.engine import Job, run_job
    from napari_voxrecon.models.sparse3diff import SparseDiffusionTrainable
    from napari_voxrecon.models.sparse_window_net import SparseWindowNet

    net = SparseWindowNet((8, 16))
    seen = {}
    real_forward = net.forward

    def spy(state, guide, t, keep):
        seen["state"], seen["guide"] = state, guide
        return real_forward(state, guide, t, keep)

    net.forward = spy
    windows = torch.rand(2, 5, 16, 16) * 2 - 1
    SparseDiffusionTrainable(net, None, slice_guidance=False).loss(net, windows, torch.Generator().manual_seed(0))
    assert torch.all(seen["guide"] == 0)  # no clean plane reaches the network
    assert not torch.allclose(seen["state"][:, 0], windows[:, 0])  # the acquired planes are noised too

    d, _ = stack_files
    folder = tmp_path / "unguided"
    assert main(["train", "sparse3diff", "--no-slice-guidance", "--data", str(d / "gt.tif"), "-o", str(folder), "--steps", "2",
                 "--batch-size", "2", "--crop", "32", "--channels", "8", "16", "--phantom-pool", "2"]) == 0
    assert json.loads((folder / "config.json").read_text())["slice_guidance"] is False
    assert "Unguided DDPM ablation" in (folder / "README.md").read_text()
    sparse = read_volume(d / "sparse.tif").data
    out = run_job(Job("sparse", sparse, {"interval": 4, "weights": str(folder), "steps": 2, "samples": 1}, method="sparse3diff", device="cpu"))["result"]
    assert np.array_equal(out[::4], sparse) and np.isfinite(out).all()


def test_projection_models_train_from_the_cli_and_mismatches_are_refused(stack_files, tmp_path, capsys):
    d, _ = stack_files
    folder = tmp_path / "proj_unet"
    assert main(["train", "unet", "--task", "projection", "--data", str(d / "gt.tif"), "-o", str(folder), "--steps", "2",
                 "--batch-size", "2", "--crop", "32", "--channels", "8", "16", "--phantom-pool", "2"]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert (config["method"], config["task"]) == ("projection-unet", "projection")
    assert main(["train", "sparse3diff", "--task", "projection", "-o", str(tmp_path / "x")]) != 0
    assert "no sparse3diff model for task projection" in capsys.readouterr().err
