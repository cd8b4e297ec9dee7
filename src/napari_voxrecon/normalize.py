"""Percentile normalisation, defined once for metrics and models.

``percentile_range`` gives the intensity window (p_low, p_high) of a volume; ``normalize`` maps
it to [0, 1] (values outside are kept, not clipped, so the mapping is invertible) and
``denormalize`` maps back to the input's units.
"""

from __future__ import annotations

import numpy as np

#: Default window: robust to hot pixels and to large empty backgrounds.
P_LOW, P_HIGH = 0.1, 99.9


def percentile_range(volume: np.ndarray, p_low: float = P_LOW, p_high: float = P_HIGH) -> tuple[float, float]:
    """(lo, hi) percentiles of ``volume``; hi > lo is guaranteed (a constant falls back to +1)."""
    sample = np.asarray(volume)
    if sample.size > 4_000_000:  # a strided subsample is enough for percentiles of big stacks
        step = int(np.ceil(sample.size / 4_000_000))
        sample = sample.reshape(-1)[::step]
    lo, hi = (float(v) for v in np.percentile(sample, [p_low, p_high]))
    if not hi > lo:
        hi = lo + max(abs(lo), 1.0) * 1e-6 if float(np.max(sample)) == lo else float(np.max(sample))
    return lo, hi


def normalize(volume: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return ((np.asarray(volume, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def denormalize(volume: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.asarray(volume, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)).astype(np.float32)
