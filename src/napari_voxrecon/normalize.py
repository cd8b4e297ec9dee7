"""Percentile normalisation, defined once for metrics and models.

``percentile_range`` gives the intensity window (p_low, p_high) of a volume; ``normalize`` maps
it to [0, 1] (values outside are kept, not clipped, so the mapping is invertible) and
``denormalize`` maps back to the input's units.

A chunked run (``engine/chunks.py``) sees one piece of a volume at a time; inside
``whole_volume_window(lo, hi)`` the default window is the whole volume's, estimated once, so
every chunk is scaled alike and tiles meet without a step in brightness.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import numpy as np

#: Default window: robust to hot pixels and to large empty backgrounds.
P_LOW, P_HIGH = 0.1, 99.9


#: The whole volume's (lo, hi, minimum) while a chunk of it is reconstructed; None otherwise.
_WHOLE_WINDOW: ContextVar[tuple[float, float, float] | None] = ContextVar("voxrecon_whole_window", default=None)


@contextmanager
def whole_volume_window(lo: float, hi: float, minimum: float) -> Iterator[None]:
    """Within this block, ``percentile_range`` with the default percentiles returns (lo, hi)
    and ``whole_volume_minimum`` the volume's minimum."""
    token = _WHOLE_WINDOW.set((float(lo), float(hi), float(minimum)))
    try:
        yield
    finally:
        _WHOLE_WINDOW.reset(token)


def whole_volume_minimum() -> float | None:
    """The whole volume's minimum inside ``whole_volume_window``, else None."""
    fixed = _WHOLE_WINDOW.get()
    return None if fixed is None else fixed[2]


def percentile_range(volume: np.ndarray, p_low: float = P_LOW, p_high: float = P_HIGH) -> tuple[float, float]:
    """(lo, hi) percentiles of ``volume``; hi > lo is guaranteed (a constant falls back to +1).

    Inside ``whole_volume_window`` the default window is the whole volume's, not this piece's.
    """
    fixed = _WHOLE_WINDOW.get()
    if fixed is not None and (p_low, p_high) == (P_LOW, P_HIGH):
        return fixed[0], fixed[1]
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
