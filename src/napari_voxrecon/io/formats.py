"""Choose the file format by suffix: ``.tif``/``.tiff`` or ``.zarr``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError, VoxreconError
from .tiff import read_tiff, write_tiff
from .volume import Volume
from .zarr_store import read_zarr, write_zarr

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)


def format_of(path: str | os.PathLike) -> str | None:
    """'tiff', 'zarr' or None for a path this package does not read or write."""
    name = str(path).rstrip("/\\").lower()
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if name.endswith(ZARR_SUFFIXES) or name.endswith(".ome.zarr"):
        return "zarr"
    return None


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D volume (ZYX) and its voxel size from a TIFF or zarr path."""
    path = Path(path)
    return read_tiff(path) if input_format(path) == "tiff" else read_zarr(path)


def input_format(path: str | os.PathLike) -> str:
    """The format ("tiff" or "zarr") of an input path that exists and is not empty, or a
    message saying what is wrong with it."""
    path = Path(path)
    fmt = format_of(path)
    if fmt is None:
        raise InputError(f"{path}: unsupported file type; use .tif, .tiff or .zarr.")
    if not path.exists():
        raise InputError(f"{path}: no such file or folder.")
    if fmt == "tiff" and path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes).")
    return fmt


def output_exists(path: str | os.PathLike) -> bool:
    return Path(path).exists()


def remove_output(path: str | os.PathLike) -> None:
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def check_output_path(path: str | os.PathLike, overwrite: bool) -> str:
    """Validate an output path before any work starts; returns its format."""
    fmt = format_of(path)
    if fmt is None:
        raise VoxreconError(f"{path}: unsupported output type; use a .tif, .tiff or .zarr path.")
    if output_exists(path) and not overwrite:
        raise VoxreconError(f"{path} already exists; pass --overwrite to replace it, or choose another path.")
    parent = Path(path).absolute().parent
    if not parent.is_dir():
        raise VoxreconError(f"{path}: the folder {parent} does not exist.")
    return fmt


def write_volume(
    path: str | os.PathLike,
    volume: Volume | np.ndarray,
    voxel_size: tuple[float, float, float] | None = None,
    overwrite: bool = False,
) -> None:
    """Write a volume as TIFF or OME-Zarr (by suffix), refusing to replace an existing file."""
    if isinstance(volume, Volume):
        data, vs = volume.data, volume.voxel_size
    else:
        data, vs = volume, (1.0, 1.0, 1.0)
    if voxel_size is not None:
        vs = voxel_size
    fmt = check_output_path(path, overwrite)
    if fmt == "tiff":
        write_tiff(path, np.asarray(data), vs)
    else:
        # Written beside the target and swapped in at the end: a failure keeps the old store.
        target = Path(path)
        tmp = target.with_name(f".{target.name}.partial")
        if tmp.exists():
            remove_output(tmp)
        write_zarr(tmp, np.asarray(data), vs)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            remove_output(old)
