"""Training windows for ``microdiffusion`` with the INR prior it will see at inference.

MicroDiffusion mixes the INR rendering into the diffusion state in training as in sampling
(Algorithm 1), so each training volume needs its own INR fitted to its own simulated
projections, once per interval n. The bank holds, per (volume, n): the volume's planes, its
projections and the rendered prior, all in [-1, 1]; windows are one projection group with
its neighbours, cropped and flipped identically in all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch


@dataclass
class BankEntry:
    truth: np.ndarray  # (M*n, H, W) in [-1, 1]
    projections: np.ndarray  # (M, H, W) in [-1, 1]
    prior: np.ndarray  # (M*n, H, W) in [-1, 1]
    n: int
    name: str = ""


def fit_prior(truth: np.ndarray, n: int, *, iterations: int = 600, neighbour_sigma: float = 0.0, seed: int = 0,
              encoding: str = "grid", device: str = "cpu") -> BankEntry:
    """Simulate the projections of ``truth`` ([-1, 1], depth cut to a multiple of n), fit the
    INR to them exactly as the ``microdiffusion`` method does, and render the prior."""
    from ..models.inr import fit_projection, render_output_plane

    m = truth.shape[0] // n
    truth = np.ascontiguousarray(truth[: m * n], dtype=np.float32)
    proj = truth.reshape(m, n, *truth.shape[1:]).mean(axis=1)
    unit = (proj + 1) / 2
    model = None
    for item in fit_projection(unit, n, iterations=iterations, seed=seed, encoding=encoding, device=device):
        model = item
    h, w = truth.shape[1:]
    with torch.no_grad():
        prior = np.stack([render_output_plane(model, z, m * n, h, w, n=n, neighbour_sigma=neighbour_sigma) for z in range(m * n)])
    return BankEntry(truth, proj, 2 * prior - 1, n)


@dataclass
class PriorBank:
    entries: list[BankEntry] = field(default_factory=list)
    crop: int = 64

    @property
    def intervals(self) -> tuple[int, ...]:
        return tuple(sorted({e.n for e in self.entries}))

    def window(self, rng: np.random.Generator, entry: BankEntry) -> dict[str, np.ndarray | float]:
        from ..models.projection_models import neighbour_projections, stack_position

        n = entry.n
        m = entry.projections.shape[0]
        k = int(rng.integers(m))
        h, w = entry.truth.shape[1:]
        y0 = int(rng.integers(0, h - self.crop + 1))
        x0 = int(rng.integers(0, w - self.crop + 1))
        sl = (slice(y0, y0 + self.crop), slice(x0, x0 + self.crop))
        target = entry.truth[k * n:(k + 1) * n][(slice(None), *sl)]
        prior = entry.prior[k * n:(k + 1) * n][(slice(None), *sl)]
        proj3 = neighbour_projections(entry.projections[(slice(None), *sl)], k)
        pos = stack_position(k, m)
        if rng.random() < 0.5:  # z reversal: planes reversed, neighbours swapped
            target, prior, proj3, pos = target[::-1], prior[::-1], proj3[::-1], 1 - pos
        rot = int(rng.integers(4))
        flip = rng.random() < 0.5
        out = []
        for a in (target, prior, proj3):
            a = np.rot90(a, rot, axes=(1, 2))
            out.append(np.ascontiguousarray(a[:, :, ::-1] if flip else a, dtype=np.float32))
        return {"target": out[0], "prior": out[1], "projections": out[2], "stack_pos": float(pos)}

    def batch(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        n = int(rng.choice(self.intervals))  # one n per batch so windows stack
        pool = [e for e in self.entries if e.n == n]
        items = [self.window(rng, pool[int(rng.integers(len(pool)))]) for _ in range(batch_size)]
        return {key: torch.from_numpy(np.stack([it[key] for it in items])) if key != "stack_pos"
                else torch.tensor([it[key] for it in items], dtype=torch.float32) for key in items[0]}


def build_prior_bank(volumes: Sequence[tuple[str, np.ndarray]], intervals: Sequence[int], *, crop: int = 64,
                     phantoms: int = 8, phantom_shape: tuple[int, int, int] = (52, 96, 96), phantom_intervals: int = 2,
                     iterations: int = 600, seed: int = 0, log: Callable[[str], None] = print,
                     device: str = "cpu") -> PriorBank:
    """Fit priors for every real volume at every interval and for ``phantoms`` fresh phantoms
    at ``phantom_intervals`` random intervals each (the fits run on ``device``: a GPU run
    affords many more phantoms)."""
    import time

    from .windows import make_phantom_volume

    rng = np.random.default_rng([seed, 7])
    bank = PriorBank(crop=crop)
    jobs: list[tuple[str, np.ndarray, int]] = []
    for name, vol in volumes:
        jobs += [(name, vol, n) for n in intervals if vol.shape[0] >= 2 * n]
    for i in range(phantoms):
        vol = make_phantom_volume(phantom_shape, int(rng.integers(2**63))).data
        fits = [n for n in intervals if phantom_shape[0] >= 2 * n]
        for n in rng.choice(fits, size=min(phantom_intervals, len(fits)), replace=False):
            jobs.append((f"phantom{i}", vol, int(n)))
    t0 = time.perf_counter()
    for j, (name, vol, n) in enumerate(jobs):
        entry = fit_prior(vol, n, iterations=iterations, seed=seed + j, device=device)
        entry.name = name
        bank.entries.append(entry)
        log(f"INR prior {j + 1}/{len(jobs)}: {name} n={n} ({time.perf_counter() - t0:.0f} s)")
    return bank


def save_bank(bank: PriorBank, path: str | Path) -> None:
    """Arrays only (npz, no pickle), so a resumed training run skips the INR fits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, e in enumerate(bank.entries):
        arrays.update({f"{i}_truth": e.truth, f"{i}_projections": e.projections, f"{i}_prior": e.prior,
                       f"{i}_n": np.array(e.n), f"{i}_name": np.array(e.name)})
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_bank(path: str | Path, crop: int) -> PriorBank | None:
    """The bank saved by ``save_bank``, or None when the file cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            count = len({k.split("_", 1)[0] for k in z.files})
            entries = [BankEntry(z[f"{i}_truth"], z[f"{i}_projections"], z[f"{i}_prior"], int(z[f"{i}_n"]), str(z[f"{i}_name"]))
                       for i in range(count)]
    except (OSError, ValueError, KeyError):
        return None
    return PriorBank(entries, crop) if entries else None
