"""The one training loop: learning, EMA, checkpoint/resume, wall-clock budget; the window sampler."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from napari_voxrecon.training.loop import EMA, TrainConfig, _lr_at, read_checkpoint_ema, train
from napari_voxrecon.training.windows import TrainingVolume, WindowSampler


@dataclass
class LineFit:
    """y = 3x - 1 with noise: a problem whose answer is known."""

    network: nn.Module

    def sample_batch(self, rng: np.random.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = rng.uniform(-1, 1, (16, 1)).astype(np.float32)
        y = 3 * x - 1 + 0.01 * rng.standard_normal((16, 1)).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(y)

    def loss(self, network: nn.Module, batch, generator: torch.Generator) -> torch.Tensor:
        x, y = batch
        noise = 1e-3 * torch.randn(y.shape, generator=generator)  # the loop's generator must be resumed too
        return ((network(x) - y - noise) ** 2).mean()


def _fit(steps: int, folder=None, **kw) -> tuple[nn.Module, EMA, object]:
    torch.manual_seed(0)
    net = nn.Linear(1, 1)
    cfg = TrainConfig(steps=steps, batch_size=16, lr=0.05, warmup=5, device="cpu", checkpoint_dir=folder,
                      checkpoint_every=7, log_every=5, **kw)
    state, ema = train(LineFit(net), cfg)
    return net, ema, state


def test_loop_learns_and_ema_follows():
    net, ema, state = _fit(300)
    assert state.step == 300
    assert abs(net.weight.item() - 3) < 0.05 and abs(net.bias.item() + 1) < 0.05
    assert abs(ema.shadow["weight"].item() - 3) < 0.2
    assert state.losses[-1] < 0.01 < state.losses[0]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight, _, _ = _fit(40)
    # Interrupted at step 20 (stopped by the caller), then started again with the same command.
    calls = {"n": 0}

    def stop_after_20() -> bool:
        calls["n"] += 1
        return calls["n"] > 20

    torch.manual_seed(0)
    net = nn.Linear(1, 1)
    cfg = TrainConfig(steps=40, batch_size=16, lr=0.05, warmup=5, device="cpu", checkpoint_dir=str(tmp_path),
                      checkpoint_every=7, log_every=5)
    state, _ = train(LineFit(net), cfg, should_stop=stop_after_20)
    assert state.step == 20
    resumed, _, state = _fit(40, str(tmp_path))
    assert state.step == 40
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)
    ema, meta = read_checkpoint_ema(tmp_path)
    assert meta["step"] == 40 and set(ema) == {"weight", "bias"}


def test_checkpoint_with_tensors_and_metadata_apart_is_refused(tmp_path):
    import json

    _fit(10, str(tmp_path))
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    meta["step"] = 3
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="disagree"):
        _fit(20, str(tmp_path))


def test_wall_clock_budget_stops_the_run_and_decays_the_learning_rate():
    _, _, state = _fit(10**9, max_seconds=0.5)
    assert 0 < state.step < 10**9 and state.seconds < 5
    cfg = TrainConfig(steps=10**9, lr=1.0, warmup=0, max_seconds=100.0)
    assert _lr_at(10, cfg, elapsed=0.0) == pytest.approx(1.0, abs=1e-6)
    assert _lr_at(10, cfg, elapsed=50.0) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-6)
    assert _lr_at(10, cfg, elapsed=100.0) == pytest.approx(0.1)


def _sampler(**kw) -> WindowSampler:
    vol = np.linspace(-1, 1, 12 * 40 * 40, dtype=np.float32).reshape(12, 40, 40)
    return WindowSampler([TrainingVolume(vol, (0,), "ramp")], intervals=(2, 4), crop=32,
                         phantom_shape=(12, 40, 40), **kw)


def test_windows_have_the_requested_shape_and_range():
    s = _sampler(phantom_fraction=0.0, phantom_pool=0)
    batch, n = s.batch(np.random.default_rng(0), 3)
    assert n in (2, 4) and batch.shape == (3, n + 1, 32, 32) and batch.dtype == np.float32
    assert batch.min() >= -1.0001 and batch.max() <= 1.0001


def test_phantoms_from_background_workers_replace_the_pool():
    s = _sampler(phantom_fraction=1.0, phantom_pool=2, phantom_workers=1)
    try:
        rng = np.random.default_rng(1)
        s.fill_phantoms(rng)
        first = list(s._phantoms)
        assert len(first) == 2 and all(p.data.shape == (12, 40, 40) for p in first)
        import time

        deadline = time.monotonic() + 60
        while all(a is b for a, b in zip(first, s._phantoms)) and time.monotonic() < deadline:
            s.refresh(rng)
            time.sleep(0.05)
        assert any(a is not b for a, b in zip(first, s._phantoms)), "no phantom arrived from the workers"
        batch, _ = s.batch(rng, 2)
        assert np.isfinite(batch).all()
    finally:
        s.close()
    assert s._executor is None
