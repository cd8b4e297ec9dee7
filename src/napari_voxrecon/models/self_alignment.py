"""Self-alignment fine-tuning of Sparse3Diff on a new stack without ground truth (paper section 2.3).

For each reference acquired plane s^k (k = 1 .. M-2, so it has a neighbour on both sides):

1. Step 1: the current model infers the planes X^{k-1} between s^{k-1} and s^k and X^k between
   s^k and s^{k+1}; together they form the sequence [s^{k-1}, X^{k-1}, s^k, X^k, s^{k+1}] of
   2n+1 planes with s^k in the middle.
2. Step 2: the n-1 pseudo windows of n+1 consecutive planes of that sequence that hold s^k at
   an interior position l = 1 .. n-1 are built; for each, the model is updated once with the
   v-loss (eq. 4) computed only on s^k's plane. Only real measurements are targets: no ground
   truth is used.

Then the next reference is taken, with the updated model. ``rounds`` repeats the whole pass.

The inferred planes are made with more sampler steps (10) than a reconstruction (2). Few-step
outputs are close to the posterior mean: smoother and less noisy than a real acquired plane.
Pseudo windows built from them teach the model to turn smooth end planes into a noisy s^k, and
measured on held-out data that costs 0.2-1 dB (docs/benchmarks.md); 10-step single samples
look like real planes, noise included, as the paper's full sampler's do.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from .sparse3diff import SparseDiffusionTrainable, SparseModel


def _random_crops(window: np.ndarray, crop: int, count: int, rng: np.random.Generator) -> np.ndarray:
    _, h, w = window.shape
    c = min(crop, h, w)
    out = []
    for _ in range(count):
        y0 = int(rng.integers(0, h - c + 1))
        x0 = int(rng.integers(0, w - c + 1))
        out.append(window[:, y0:y0 + c, x0:x0 + c])
    return np.stack(out)


def self_align(model: SparseModel, volume: np.ndarray, n: int, *, rounds: int = 1, lr: float = 1e-5,
               steps: int = 10, crops: int = 4, crop: int = 128, seed: int = 0, tile: int = 256,
               check_cancel: Callable[[], None] | None = None) -> Iterator[dict]:
    """Fine-tune ``model`` in place on an acquired stack (M, H, W) at interval n.

    Yields a progress record after every update: {"round", "reference", "update", "total", "loss"}.
    """
    from ..normalize import normalize, percentile_range

    if volume.shape[0] < 3:
        raise ValueError("self-alignment needs at least 3 acquired planes (a reference with a neighbour on each side)")
    lo, hi = percentile_range(volume)
    norm = 2 * normalize(volume, lo, hi) - 1
    net = model.network
    trainable = SparseDiffusionTrainable(net, windows=None, residual_scale=model.residual_scale, schedule=model.schedule)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    m = volume.shape[0]
    total = rounds * (m - 2) * (n - 1)
    done = 0
    for r in range(rounds):
        for k in range(1, m - 1):
            if check_cancel is not None:
                check_cancel()
            # Step 1: infer the planes on both sides of s^k with the current model.
            net.eval()
            prev, _ = model.fill_tiled(norm[k - 1], norm[k], n, tile=tile, seed=int(rng.integers(2**31)), steps=steps)
            nxt, _ = model.fill_tiled(norm[k], norm[k + 1], n, tile=tile, seed=int(rng.integers(2**31)), steps=steps)
            seq = np.concatenate([norm[k - 1][None], prev, norm[k][None], nxt, norm[k + 1][None]])  # s^k at index n
            # Step 2: n-1 pseudo windows with s^k at interior position l; loss on s^k only.
            net.train()
            for pos in range(1, n):
                if check_cancel is not None:
                    check_cancel()
                window = seq[n - pos: 2 * n - pos + 1]
                batch = torch.from_numpy(_random_crops(window, crop, crops, rng)).to(model.device)
                loss = trainable.loss(net, batch, gen, loss_planes=torch.tensor([pos]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                done += 1
                yield {"round": r, "reference": k, "update": done, "total": total, "loss": float(loss.detach())}
    net.eval()


def finetune_to_folder(stack: np.ndarray, interval: int, out: str, weights: str | None = "default", *,
                       device: str = "cpu", overwrite: bool = False, source_name: str = "",
                       on_progress: Callable[[dict], None] | None = None,
                       check_cancel: Callable[[], None] | None = None, **kw) -> str:
    """Load weights, self-align them on ``stack`` and save the result as a weights folder
    (same format as the shipped weights, so ``--weights OUT`` uses it)."""
    import copy
    import datetime

    from ..weights import save_weights
    from .loading import load_model

    model = load_model("sparse3diff", weights, device, cached=False)
    records = []
    for rec in self_align(model, stack, interval, check_cancel=check_cancel, **kw):
        records.append(rec)
        if on_progress is not None:
            on_progress(rec)
    config = copy.deepcopy(model.config)
    config.pop("default", None)
    config["self_alignment"] = {
        "base_weights": str(weights or "default"), "stack": source_name, "interval": interval,
        "updates": len(records), "final_loss": float(np.mean([r["loss"] for r in records[-10:]])) if records else None,
        "date": datetime.date.today().isoformat(), **{k: v for k, v in kw.items() if isinstance(v, (int, float, str))},
    }
    card = (f"# sparse3diff, self-aligned\n\nFine-tuned from `{weights or 'default'}` on `{source_name}` "
            f"(interval {interval}) with Sparse3Diff self-alignment: {len(records)} updates, no ground truth used.\n")
    return str(save_weights(out, model.network.state_dict(), config, card, overwrite=overwrite))
