"""napari writer: an image layer as TIFF (ImageJ hyperstack) or OME-Zarr, with its voxel size.

napari's save dialog has already asked the user before replacing an existing file, so the
writer writes to the path it is given. It never destroys the old file before the new one is
complete: TIFFs are written to a hidden temporary file and renamed (``io.tiff.write_tiff``), and
zarr stores are written beside the target and swapped in only once complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def write_image(path: str | os.PathLike, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer; returns the written path (napari's single-layer writer API)."""
    from .errors import VoxreconError
    from .io.formats import format_of, write_volume

    path = Path(path)
    fmt = format_of(path)
    if fmt is None:
        raise VoxreconError(f"{path}: unsupported output type; use a .tif, .tiff or .zarr path.")
    if meta.get("rgb"):
        raise VoxreconError(f"{path}: RGB layers are not volumes; save them with napari's built-in writer.")
    if isinstance(data, (list, tuple)):  # a multiscale layer: the full-resolution level
        data = data[0]
    volume, voxel = _as_volume(np.asarray(data), meta.get("scale"))
    # write_volume converts types ImageJ cannot hold and writes atomically for both formats
    # (TIFF: temporary file + rename; zarr: new store beside the old one, swapped at the end).
    write_volume(path, volume, voxel, overwrite=True)
    return [str(path)]


def _as_volume(data: np.ndarray, scale: Any) -> tuple[np.ndarray, tuple[float, float, float]]:
    """ZYX array and voxel size (µm) from layer data and its ``scale`` (last three entries)."""
    from .io.volume import squeeze_to_3d

    scale_t = tuple(float(s) for s in scale) if scale is not None else (1.0,) * data.ndim
    if data.ndim == 2:
        # A single plane is stored as a one-plane stack; its z size is unknown, so 1.
        return data[None], (1.0, *scale_t[-2:])
    keep = scale_t[-3:]
    if data.ndim > 3:
        data, _ = squeeze_to_3d(data, None, "layer")  # raises with a message for real 4D data
    return data, (keep[0], keep[1], keep[2])


