"""Training windows of consecutive planes from real volumes and procedural phantoms.

Every volume is normalised once with the package's percentile window (``normalize.py``) and
mapped to [-1, 1]. A window is n+1 consecutive planes (the Sparse3Diff subvolume
B^k = [s^k, X^k, s^{k+1}]), cropped laterally and augmented (flips, 90° rotations, z reversal,
gamma). Real volumes whose voxels are nearly isotropic also give windows along y and x, which
triples the real data's variety; phantoms are regenerated in the background of training so the
network never sees the same phantom for long.
"""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..normalize import normalize, percentile_range


def to_unit_range(volume: np.ndarray) -> np.ndarray:
    """Percentile-normalise to [0, 1] then map to [-1, 1] (the models' working range)."""
    lo, hi = percentile_range(volume)
    return 2 * normalize(volume, lo, hi) - 1


@dataclass
class TrainingVolume:
    data: np.ndarray  # in [-1, 1]
    axes: tuple[int, ...] = (0,)  # axes along which windows may be taken
    name: str = ""


def volume_axes(voxel_size: Sequence[float], max_anisotropy: float = 1.5) -> tuple[int, ...]:
    """Axes usable as 'z' for windows: only z, unless voxels are nearly isotropic."""
    vz, vy, vx = voxel_size
    return (0, 1, 2) if vz / min(vy, vx) <= max_anisotropy else (0,)


def make_phantom_volume(shape: tuple[int, int, int], seed: int) -> TrainingVolume:
    """A fresh procedural phantom in the models' range (module level, so worker processes can run it)."""
    from ..simulate.phantoms import random_phantom

    return TrainingVolume(to_unit_range(random_phantom(shape, np.random.default_rng(seed))), (0,), "phantom")


@dataclass
class WindowSampler:
    """Draws batches of windows of n+1 planes, n from ``intervals``."""

    volumes: list[TrainingVolume] = field(default_factory=list)
    intervals: Sequence[int] = (2, 3, 4, 5, 6, 7, 8)
    crop: int = 64
    phantom_fraction: float = 0.5
    phantom_shape: tuple[int, int, int] = (40, 96, 96)
    phantom_pool: int = 12
    phantom_refresh: int = 1  # phantoms replaced per call to ``refresh``
    #: Worker processes that make phantoms in the background. A fast accelerator trains faster
    #: than one core renders phantoms; with workers the phantom stream no longer depends only
    #: on the seed (which phantom arrives when depends on timing), so 0 keeps runs reproducible.
    phantom_workers: int = 0
    _phantoms: list[TrainingVolume] = field(default_factory=list)
    _executor: ProcessPoolExecutor | None = None
    _pending: list[Future] = field(default_factory=list)

    def _seed(self, rng: np.random.Generator) -> int:
        return int(rng.integers(2**63))

    def fill_phantoms(self, rng: np.random.Generator) -> None:
        missing = self.phantom_pool - len(self._phantoms)
        if missing <= 0:
            return
        seeds = [self._seed(rng) for _ in range(missing)]
        if self.phantom_workers:
            self._phantoms.extend(self._pool().map(make_phantom_volume, [self.phantom_shape] * missing, seeds))
        else:
            self._phantoms.extend(make_phantom_volume(self.phantom_shape, s) for s in seeds)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            import multiprocessing

            # spawn, not fork: the parent may hold a CUDA context, which must not be forked.
            self._executor = ProcessPoolExecutor(self.phantom_workers, mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    def refresh(self, rng: np.random.Generator) -> None:
        """Replace some phantoms with new ones (call every few steps)."""
        if not self._phantoms:
            return
        if not self.phantom_workers:
            for _ in range(self.phantom_refresh):
                self._phantoms[int(rng.integers(len(self._phantoms)))] = make_phantom_volume(self.phantom_shape, self._seed(rng))
            return
        for fut in [f for f in self._pending if f.done()]:
            self._pending.remove(fut)
            self._phantoms[int(rng.integers(len(self._phantoms)))] = fut.result()
        while len(self._pending) < 2 * self.phantom_workers:
            self._pending.append(self._pool().submit(make_phantom_volume, self.phantom_shape, self._seed(rng)))

    def close(self) -> None:
        """Stop the phantom workers (if any)."""
        if self._executor is not None:
            for fut in self._pending:
                fut.cancel()
            self._pending.clear()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _pick_volume(self, rng: np.random.Generator, n: int) -> tuple[TrainingVolume, int]:
        use_phantom = self._phantoms and (not self.volumes or rng.random() < self.phantom_fraction)
        pools = [self._phantoms, self.volumes] if use_phantom else [self.volumes, self._phantoms]
        for pool in pools:  # the other kind of data when none of this kind is large enough
            fits = [(vol, axis) for vol in pool for axis in vol.axes
                    if vol.data.shape[axis] > n and min(s for i, s in enumerate(vol.data.shape) if i != axis) >= self.crop]
            if fits:
                return fits[int(rng.integers(len(fits)))]
        raise ValueError(f"no training volume is large enough for windows of {n + 1} planes and {self.crop}-pixel crops")

    def window(self, rng: np.random.Generator, n: int, return_position: bool = False) -> np.ndarray | tuple[np.ndarray, float]:
        """One augmented window (n+1, crop, crop), float32 in about [-1, 1].

        ``return_position``: also the window's centre as a fraction of the volume's depth (0..1,
        after the random z reversal)."""
        vol, axis = self._pick_volume(rng, n)
        data = np.moveaxis(vol.data, axis, 0)
        z0 = int(rng.integers(0, data.shape[0] - n))
        y0 = int(rng.integers(0, data.shape[1] - self.crop + 1))
        x0 = int(rng.integers(0, data.shape[2] - self.crop + 1))
        w = np.array(data[z0: z0 + n + 1, y0: y0 + self.crop, x0: x0 + self.crop], dtype=np.float32)
        pos = (z0 + n / 2) / max(data.shape[0] - 1, 1)
        if rng.random() < 0.5:
            w = w[::-1]  # the task is symmetric in z
            pos = 1 - pos
        w = np.rot90(w, int(rng.integers(4)), axes=(1, 2))
        if rng.random() < 0.5:
            w = w[:, :, ::-1]
        gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
        w = 2 * np.clip((w + 1) / 2, 0, None) ** gamma - 1  # intensity response varies between set-ups
        w = np.ascontiguousarray(w, dtype=np.float32)
        return (w, float(pos)) if return_position else w

    def batch(self, rng: np.random.Generator, batch_size: int, n: int | None = None) -> tuple[np.ndarray, int]:
        """(windows (B, n+1, crop, crop), n); one n per batch so windows stack."""
        n = int(rng.choice(self.intervals)) if n is None else n
        return np.stack([self.window(rng, n) for _ in range(batch_size)]), n


def split_holdout(volume: np.ndarray, fraction: float = 0.375) -> tuple[np.ndarray, np.ndarray]:
    """Split a real volume laterally: the last ``fraction`` of x is held out of training.

    Returns (train part, held-out part). Used so scores on a real volume come from a region
    the model never saw.
    """
    cut = int(round(volume.shape[2] * (1 - fraction)))
    return volume[:, :, :cut], volume[:, :, cut:]
