"""Training windows of consecutive planes from real volumes and procedural phantoms.

Every volume is normalised once with the package's percentile window (``normalize.py``) and
mapped to [-1, 1]. A window is n+1 consecutive planes (the Sparse3Diff subvolume
B^k = [s^k, X^k, s^{k+1}]), cropped laterally and augmented (flips, 90° rotations, z reversal,
gamma). Real volumes whose voxels are nearly isotropic also give windows along y and x, which
triples the real data's variety; phantoms are regenerated in the background of training so the
network never sees the same phantom for long.
"""

from __future__ import annotations

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
    _phantoms: list[TrainingVolume] = field(default_factory=list)

    def fill_phantoms(self, rng: np.random.Generator) -> None:
        while len(self._phantoms) < self.phantom_pool:
            self._phantoms.append(self._new_phantom(rng))

    def _new_phantom(self, rng: np.random.Generator) -> TrainingVolume:
        from ..simulate.phantoms import random_phantom

        vol = random_phantom(self.phantom_shape, rng)
        return TrainingVolume(to_unit_range(vol), (0,), "phantom")

    def refresh(self, rng: np.random.Generator) -> None:
        """Replace some phantoms with new ones (call every few steps)."""
        if not self._phantoms:
            return
        for _ in range(self.phantom_refresh):
            self._phantoms[int(rng.integers(len(self._phantoms)))] = self._new_phantom(rng)

    def _pick_volume(self, rng: np.random.Generator, n: int) -> tuple[TrainingVolume, int]:
        use_phantom = self._phantoms and (not self.volumes or rng.random() < self.phantom_fraction)
        pool = self._phantoms if use_phantom else self.volumes
        for _ in range(100):
            vol = pool[int(rng.integers(len(pool)))]
            axis = int(rng.choice(vol.axes))
            if vol.data.shape[axis] > n and min(s for i, s in enumerate(vol.data.shape) if i != axis) >= self.crop:
                return vol, axis
        raise ValueError(f"no training volume is large enough for windows of {n + 1} planes and {self.crop}-pixel crops")

    def window(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """One augmented window (n+1, crop, crop), float32 in about [-1, 1]."""
        vol, axis = self._pick_volume(rng, n)
        data = np.moveaxis(vol.data, axis, 0)
        z0 = int(rng.integers(0, data.shape[0] - n))
        y0 = int(rng.integers(0, data.shape[1] - self.crop + 1))
        x0 = int(rng.integers(0, data.shape[2] - self.crop + 1))
        w = np.array(data[z0: z0 + n + 1, y0: y0 + self.crop, x0: x0 + self.crop], dtype=np.float32)
        if rng.random() < 0.5:
            w = w[::-1]  # the task is symmetric in z
        w = np.rot90(w, int(rng.integers(4)), axes=(1, 2))
        if rng.random() < 0.5:
            w = w[:, :, ::-1]
        gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
        w = 2 * np.clip((w + 1) / 2, 0, None) ** gamma - 1  # intensity response varies between set-ups
        return np.ascontiguousarray(w, dtype=np.float32)

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
