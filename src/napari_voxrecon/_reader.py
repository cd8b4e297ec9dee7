"""napari reader: TIFF (ImageJ / OME) and zarr / OME-Zarr volumes with their voxel size.

napari asks every reader plugin whose patterns match, so ``get_reader`` must answer quickly and
never raise: it returns ``None`` for anything it cannot open (wrong suffix, missing or empty
file, a TIFF whose header does not parse, a folder that is not a zarr store) and leaves the file
to other readers. The heavy work (decoding the TIFF) happens in the returned function. zarr
stores are opened lazily (a dask array over the store), so large volumes appear at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[Any], list[LayerData]]

PathLike = str | os.PathLike


def get_reader(path: PathLike | list[PathLike]) -> ReaderFunction | None:
    """Return a reader function for ``path`` (or a list of paths), or ``None``; never raises."""
    try:
        paths = list(path) if isinstance(path, (list, tuple)) else [path]
        if not paths or not all(_can_read(p) for p in paths):
            return None
    except Exception:  # a reader plugin must never break napari's open dialog
        return None
    return read_layers


def _can_read(path: PathLike) -> bool:
    """Cheap check that ``path`` is a TIFF or zarr volume this plugin can open."""
    from .io.formats import format_of

    p = Path(path)
    fmt = format_of(p)
    if fmt is None or not p.exists():
        return False
    if fmt == "tiff":
        if not p.is_file() or p.stat().st_size == 0:
            return False
        import tifffile

        try:
            # Parses the header and the page index only (no pixel data).
            with tifffile.TiffFile(p) as tf:
                return bool(tf.series) and int(_prod(tf.series[0].shape)) > 0
        except Exception:
            return False
    if not p.is_dir():
        return False
    from .io.zarr_store import open_zarr_array

    try:
        arr, _, _ = open_zarr_array(p)  # lazy: reads metadata only
    except Exception:
        return False
    return int(_prod(arr.shape)) > 0


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def read_layers(path: PathLike | list[PathLike]) -> list[LayerData]:
    """Read one image layer per path: data, ``scale`` = voxel size (µm), metadata."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    return [_read_one(Path(p)) for p in paths]


def layer_name(path: PathLike) -> str:
    """``/a/b/cells.ome.tif`` -> ``cells`` (the name napari users expect, not ``cells.ome``)."""
    name = Path(str(path).rstrip("/\\")).name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _read_one(path: Path) -> LayerData:
    from .io.formats import format_of

    if format_of(path) == "zarr":
        data, voxel, meta = _read_zarr_lazy(path)
    else:
        data, voxel, meta = _read_tiff(path)
    meta = {"source": str(path), **meta}
    kwargs: dict[str, Any] = {"name": layer_name(path), "metadata": meta}
    rgb = bool(meta.get("rgb"))
    spatial = data.ndim - (1 if rgb else 0)
    if voxel is not None and spatial >= 3:
        meta["voxel_size"] = tuple(float(v) for v in voxel)
        # Leading non-spatial axes (only when the stack could not be squeezed) get scale 1.
        kwargs["scale"] = (1.0,) * (spatial - 3) + tuple(float(v) for v in voxel)
    elif voxel is not None and spatial == 2:
        kwargs["scale"] = tuple(float(v) for v in voxel[-2:])
    if rgb:
        kwargs["rgb"] = True
    progress = meta.get("voxrecon")
    if isinstance(progress, dict) and progress.get("complete") is False:
        # A store left by an interrupted or cancelled run: say so where the user looks.
        kwargs["name"] += " (incomplete)"
    return data, kwargs, "image"


def _read_tiff(path: Path) -> tuple[Any, tuple[float, float, float] | None, dict[str, Any]]:
    from .errors import InputError
    from .io.formats import read_volume

    try:
        vol = read_volume(path)
    except InputError as err:
        # Not a 3D stack (a 2D image, a multichannel or time series): show it as it is so the
        # user can look at it or split it in napari; the tasks refuse it later with a message.
        shown = _read_tiff_as_is(path)
        if shown is None:
            raise err
        return shown
    meta = dict(vol.metadata)
    axes = str(meta.get("axes") or "")
    data = vol.data
    if axes.endswith("S") and data.shape[-1] in (3, 4):
        meta["rgb"] = True  # a single RGB(A) image, not a 3-plane stack
        return data, None, meta
    return data, vol.voxel_size, meta


def _read_tiff_as_is(path: Path) -> tuple[Any, tuple[float, float, float] | None, dict[str, Any]] | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            data, axes = series.asarray(), series.axes
    except Exception:
        return None
    if data.size == 0:
        return None
    meta: dict[str, Any] = {"axes": axes, "note": "not a 3D (Z, Y, X) stack; shown as stored"}
    if axes.endswith("S") and data.shape[-1] in (3, 4):
        meta["rgb"] = True
    return data, None, meta


def _read_zarr_lazy(path: Path) -> tuple[Any, tuple[float, float, float], dict[str, Any]]:
    import dask.array as da

    from .errors import InputError
    from .io.volume import squeeze_to_3d
    from .io.zarr_store import open_zarr_array, zarr_progress

    arr, axes, voxel = open_zarr_array(path)
    # dask keeps the store on disk and reads only the planes napari displays.
    data = da.from_zarr(arr)
    meta: dict[str, Any] = {"axes": axes}
    try:
        data, axes3 = squeeze_to_3d(data, axes, what=str(path))
        meta["axes"] = axes3
    except InputError:
        meta["note"] = "not a 3D (Z, Y, X) stack; shown as stored"
    progress = zarr_progress(path)
    if progress is not None:
        meta["voxrecon"] = progress
    return data, voxel, meta
