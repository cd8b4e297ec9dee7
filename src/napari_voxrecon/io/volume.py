"""The in-memory volume and the checks every task runs on its input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

#: Voxel size (z, y, x) in micrometres used when a file carries none.
DEFAULT_VOXEL_SIZE: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class Volume:
    """A ZYX stack with its voxel size in micrometres (z, y, x)."""

    data: np.ndarray
    voxel_size: tuple[float, float, float] = DEFAULT_VOXEL_SIZE
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def squeeze_to_3d(data: Any, axes: str | None = None, what: str = "input") -> tuple[Any, str]:
    """Drop singleton axes (channel, time, ...) until three remain; refuse anything else.

    ``axes`` is the axis string of the source (e.g. 'TZCYX') when known. Works on numpy and
    lazy arrays alike (only indexing is used). Returns the array and the remaining axes.
    """
    shape = tuple(int(s) for s in data.shape)
    if axes is None or len(axes) != len(shape):
        axes = "".join("?" for _ in shape)
    if len(shape) > 3:
        keep = [i for i, s in enumerate(shape) if s != 1]
        # Keep the last three axes when all are singleton-free except some in front.
        if len(keep) < 3:
            keep = list(range(len(shape) - 3, len(shape)))
        if len(keep) == 3:
            index = tuple(slice(None) if i in keep else 0 for i in range(len(shape)))
            data = data[index]
            axes = "".join(axes[i] for i in keep)
            shape = tuple(int(s) for s in data.shape)
    non_spatial = [a for a in axes if a in "CSTE"]  # channel, RGB sample, time, lambda
    if len(shape) == 3 and non_spatial:
        kind = "an RGB image" if "S" in axes else "a multichannel or time-lapse image"
        raise InputError(
            f"{what}: found {kind} of shape {shape} (axes {axes}); a 3D stack (Z, Y, X) is expected: "
            "save a single channel's z-stack (e.g. in Fiji: Image > Color > Split Channels)."
        )
    if len(shape) != 3:
        found = f"{len(shape)}D array of shape {shape}"
        if axes and "?" not in axes:
            found += f" (axes {axes})"
        hint = (
            "a single 2D image cannot be reconstructed in 3D; load the whole z-stack "
            "(for `diffraction`, the stack of K images, one per source)"
            if len(shape) == 2
            else "select one channel/time point first (e.g. in Fiji or napari) and save it as a 3D stack"
        )
        raise InputError(f"{what}: found a {found}; a 3D stack (Z, Y, X) is expected: {hint}.")
    return data, axes


def as_volume_array(data: Any, what: str = "input") -> np.ndarray:
    """Squeeze to 3D and load as float32 (the dtype every method computes and writes)."""
    data, _ = squeeze_to_3d(data, None, what)
    return np.asarray(data, dtype=np.float32)


def check_volume(data: np.ndarray, what: str = "input", min_planes: int = 1, allow_constant: bool = False) -> None:
    """Refuse volumes no reconstruction can make sense of, with the reason.

    Checks: 3D, non-empty, at least ``min_planes`` planes, finite, not constant (unless
    ``allow_constant``: a chunk of empty background in a bigger volume is fine).
    """
    if data.ndim != 3:
        squeeze_to_3d(data, None, what)  # raises with the standard message
    if data.size == 0:
        raise InputError(f"{what}: the stack is empty (shape {tuple(data.shape)}).")
    if data.shape[0] < min_planes:
        raise InputError(
            f"{what}: {data.shape[0]} plane(s) found, at least {min_planes} are needed for this task."
        )
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            z, y, x = (int(i) for i in np.argwhere(bad)[0])
            raise InputError(
                f"{what}: {int(bad.sum())} voxel(s) are NaN or infinite (first at z={z}, y={y}, x={x}); "
                "replace them (e.g. with 0 or the background value) before reconstructing."
            )
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo == hi and not allow_constant:
        raise InputError(
            f"{what}: every voxel has the same value ({lo:g}); there is no structure to reconstruct. "
            "Check that the right file or channel was loaded."
        )
