"""Sparse and projection acquisitions, exactly as the tasks define them.

- sparse: keep planes 0, n, 2n, ... of the ground truth (values untouched);
- projection: plane k of the output is the mean of ground-truth planes k*n .. k*n+n-1
  (a trailing incomplete group is dropped, since it would not be the mean of n planes).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..io.volume import check_volume


def _check_interval(gt: np.ndarray, interval: int, what: str, need: int) -> None:
    if int(interval) != interval or interval < 2:
        raise InputError(f"--interval must be an integer of at least 2, got {interval}.")
    if gt.shape[0] < need:
        raise InputError(
            f"the interval {interval} is too large for a stack of {gt.shape[0]} planes: "
            f"{what} needs at least {need} planes; use an interval of at most {max(1, (gt.shape[0] - 1) if what == 'sparse sampling' else gt.shape[0])}."
        )


def simulate_sparse(gt: np.ndarray, interval: int) -> np.ndarray:
    """Every ``interval``-th plane of ``gt`` (bit-exact), at least two of them."""
    check_volume(gt, "ground truth")
    _check_interval(gt, interval, "sparse sampling", interval + 1)
    return np.ascontiguousarray(gt[::interval])


def simulate_projection(gt: np.ndarray, interval: int) -> np.ndarray:
    """Axial means of consecutive groups of ``interval`` planes (float32)."""
    check_volume(gt, "ground truth")
    _check_interval(gt, interval, "projection", interval)
    m = gt.shape[0] // interval
    groups = np.asarray(gt[: m * interval], dtype=np.float64).reshape(m, interval, *gt.shape[1:])
    return groups.mean(axis=1).astype(np.float32)
