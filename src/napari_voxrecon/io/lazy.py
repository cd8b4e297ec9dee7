"""Volumes opened without loading them: TIFF (memory-mapped where its layout allows) and zarr.

The chunked runner (``engine/chunks.py``) reads one block at a time from a ``LazyVolume``, so a
stack bigger than memory can be reconstructed. Singleton channel/time axes are dropped the same
way as for in-memory reads (``squeeze_to_3d``), but as an index applied at read time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .volume import DEFAULT_VOXEL_SIZE, squeeze_to_3d


class _IndexProxy:
    """Stands in for an array in ``squeeze_to_3d``: records the index instead of reading data."""

    def __init__(self, shape: tuple[int, ...], index: tuple[Any, ...] = ()) -> None:
        self.shape, self.index = shape, index

    def __getitem__(self, index: tuple[Any, ...]) -> "_IndexProxy":
        shape = tuple(s for s, i in zip(self.shape, index) if isinstance(i, slice))
        return _IndexProxy(shape, index)


@dataclass
class LazyVolume:
    """A ZYX view of an on-disk array; ``read`` loads one block as float32."""

    path: Path
    array: Any  # numpy memmap or zarr array, possibly with leading singleton axes
    prefix: tuple[Any, ...]  # index that drops the singleton axes (ints) and keeps Z, Y, X (slices)
    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size: tuple[float, float, float]
    _closer: Any = field(default=None, repr=False)

    @property
    def nbytes_float32(self) -> int:
        """Size of the volume once loaded as float32 (what an in-memory run would hold)."""
        return int(np.prod(self.shape)) * 4

    def read(self, z: slice, y: slice = slice(None), x: slice = slice(None)) -> np.ndarray:
        """The block ``[z, y, x]`` as float32 (a copy; the file is never modified)."""
        want = iter((z, y, x))
        index = tuple(next(want) if isinstance(i, slice) else i for i in self.prefix) if self.prefix else (z, y, x)
        return np.array(self.array[index], dtype=np.float32, copy=True)

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()
            self._closer = None


def _squeeze_index(shape: tuple[int, ...], axes: str | None, what: str) -> tuple[tuple[Any, ...], tuple[int, int, int]]:
    if len(shape) == 3:
        squeeze_to_3d(_IndexProxy(shape), axes, what)  # refuses e.g. RGB with the usual message
        return (), shape  # type: ignore[return-value]
    proxy, _ = squeeze_to_3d(_IndexProxy(shape), axes, what)
    return proxy.index, proxy.shape


def _open_tiff(path: Path) -> LazyVolume:
    import logging

    import tifffile

    from .tiff import series_axes, tiff_voxel_size

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        tf = tifffile.TiffFile(path)
    except Exception as err:
        raise InputError(f"{path}: not a readable TIFF file ({type(err).__name__}: {err}).") from err
    try:
        if not tf.series:
            raise InputError(f"{path}: the TIFF holds no image data.")
        series = tf.series[0]
        axes = series_axes(tf)
        vz, vy, vx = tiff_voxel_size(tf)
        closer: Any = tf
        try:  # uncompressed, contiguous data: the OS pages it in as blocks are read
            array: Any = tifffile.memmap(path, series=0, mode="r")
            tf.close()
            closer = None
        except Exception:  # compressed or scattered: read page by page through tifffile's zarr view
            import zarr

            array = zarr.open(series.aszarr(), mode="r")
    except InputError:
        tf.close()
        raise
    except Exception as err:
        tf.close()
        raise InputError(f"{path}: not a readable TIFF file ({type(err).__name__}: {err}).") from err
    shape = tuple(int(s) for s in array.shape)
    if int(np.prod(shape)) == 0:
        raise InputError(f"{path}: the TIFF is empty (shape {shape}).")
    prefix, zyx = _squeeze_index(shape, axes, str(path))
    d = DEFAULT_VOXEL_SIZE
    return LazyVolume(path, array, prefix, zyx, np.dtype(array.dtype), (vz or d[0], vy or d[1], vx or d[2]), closer)


def _open_zarr(path: Path) -> LazyVolume:
    from .zarr_store import open_zarr_array, zarr_progress

    progress = zarr_progress(path)
    if progress is not None and not progress.get("complete", True):
        raise InputError(
            f"{path}: an unfinished voxrecon output; finish it by running the same reconstruct command again, then use it."
        )
    array, axes, voxel = open_zarr_array(path)
    shape = tuple(int(s) for s in array.shape)
    if int(np.prod(shape)) == 0:
        raise InputError(f"{path}: the zarr array is empty (shape {shape}).")
    prefix, zyx = _squeeze_index(shape, axes, str(path))
    return LazyVolume(path, array, prefix, zyx, np.dtype(array.dtype), voxel)


def open_lazy(path: str | os.PathLike) -> LazyVolume:
    """Open a TIFF or zarr volume for block reads, checking its shape but loading no voxels."""
    from .formats import input_format

    path = Path(path)
    return _open_tiff(path) if input_format(path) == "tiff" else _open_zarr(path)


@dataclass
class ArrayVolume:
    """Any 3D array-like (numpy, dask, zarr: e.g. a napari layer's data) with ``LazyVolume``'s
    ``read``, so the same sampling code serves files and layers."""

    array: Any
    path: str = "layer"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def read(self, z: slice, y: slice = slice(None), x: slice = slice(None)) -> np.ndarray:
        return np.array(self.array[z, y, x], dtype=np.float32, copy=True)
