"""zarr (v3) and OME-Zarr volumes, including a store that is filled one plane at a time.

Layout written here: an OME-Zarr 0.5 group with a single scale level ``0`` (ZYX, chunks of one
plane) and the voxel size as the scale transform. The group's ``voxrecon`` attribute records
which planes are finished and whether the run completed, so progress lives in the store itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .volume import DEFAULT_VOXEL_SIZE, Volume, squeeze_to_3d

_UNIT_TO_UM = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "meter": 1e6}


def _multiscales(attrs: dict[str, Any]) -> list | None:
    if "ome" in attrs and isinstance(attrs["ome"], dict):  # OME-Zarr 0.5
        return attrs["ome"].get("multiscales")
    return attrs.get("multiscales")  # OME-Zarr 0.4


def _voxel_from_multiscales(ms: dict) -> tuple[str, str, tuple[float, ...] | None]:
    axes_meta = ms.get("axes") or []
    names = "".join(
        (a["name"] if isinstance(a, dict) else str(a))[0].upper() for a in axes_meta
    )
    ds = ms["datasets"][0]
    scale = None
    for t in ds.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            scale = list(t["scale"])
    if scale is not None and axes_meta and isinstance(axes_meta[0], dict):
        scale = [s * _UNIT_TO_UM.get(a.get("unit", "micrometer"), 1.0) for s, a in zip(scale, axes_meta)]
    return ds["path"], names, tuple(scale) if scale is not None else None


def open_zarr_array(path: str | os.PathLike) -> tuple[Any, str | None, tuple[float, float, float]]:
    """Open the full-resolution array of a zarr / OME-Zarr store lazily.

    Returns (zarr array, axes or None, voxel size (z, y, x) of the trailing three axes).
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder.")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise InputError(f"{path}: not a readable zarr store ({type(err).__name__}: {err}).") from err
    axes: str | None = None
    scale: tuple[float, ...] | None = None
    if isinstance(node, zarr.Group):
        ms = _multiscales(dict(node.attrs))
        if ms:
            sub, axes, scale = _voxel_from_multiscales(ms[0])
            arr = node[sub]
        else:
            arrays = list(node.array_keys())
            if len(arrays) != 1:
                raise InputError(
                    f"{path}: a zarr group without OME-Zarr metadata and {len(arrays)} arrays "
                    f"({', '.join(arrays[:5]) or 'none'}); open the array itself, e.g. {path}/NAME."
                )
            arr = node[arrays[0]]
    else:
        arr = node
    if scale is None and "voxel_size" in arr.attrs:
        scale = tuple(float(v) for v in arr.attrs["voxel_size"])
    voxel = DEFAULT_VOXEL_SIZE
    if scale is not None and len(scale) >= 3:
        voxel = tuple(float(v) for v in scale[-3:])  # type: ignore[assignment]
    return arr, axes, voxel  # type: ignore[return-value]


def read_zarr(path: str | os.PathLike, allow_incomplete: bool = False) -> Volume:
    progress = zarr_progress(path)
    if progress is not None and not progress.get("complete", True) and not allow_incomplete:
        raise InputError(
            f"{path}: an unfinished voxrecon output; "
            "finish it by running the same reconstruct command again, then use it."
        )
    arr, axes, voxel = open_zarr_array(path)
    if arr.size == 0:
        raise InputError(f"{path}: the zarr array is empty (shape {arr.shape}).")
    data, axes = squeeze_to_3d(arr, axes, what=str(path))
    return Volume(np.asarray(data[...]), voxel, {"axes": axes})


def _ome_attrs(voxel_size: tuple[float, float, float], name: str) -> dict[str, Any]:
    return {
        "ome": {
            "version": "0.5",
            "multiscales": [
                {
                    "name": name,
                    "axes": [
                        {"name": "z", "type": "space", "unit": "micrometer"},
                        {"name": "y", "type": "space", "unit": "micrometer"},
                        {"name": "x", "type": "space", "unit": "micrometer"},
                    ],
                    "datasets": [
                        {
                            "path": "0",
                            "coordinateTransformations": [
                                {"type": "scale", "scale": [float(v) for v in voxel_size]}
                            ],
                        }
                    ],
                }
            ],
        }
    }


def create_zarr(
    path: str | os.PathLike,
    shape: tuple[int, int, int],
    voxel_size: tuple[float, float, float],
    dtype: Any = np.float32,
    job: dict[str, Any] | None = None,
    overwrite: bool = False,
    chunks: tuple[int, int, int] | None = None,
):
    """Create an empty OME-Zarr volume (one-plane chunks unless ``chunks``); returns (group, array)."""
    import zarr

    path = Path(path)
    group = zarr.open_group(str(path), mode="w" if overwrite else "w-")
    attrs = _ome_attrs(voxel_size, path.stem)
    attrs["voxrecon"] = {"complete": False, "done": [], "job": job or {}}
    group.attrs.update(attrs)
    arr = group.create_array(
        "0",
        shape=tuple(int(s) for s in shape),
        chunks=tuple(int(c) for c in chunks) if chunks else (1, int(shape[1]), int(shape[2])),
        dtype=dtype,
        fill_value=0,
        dimension_names=("z", "y", "x"),
    )
    return group, arr


def write_zarr(path: str | os.PathLike, data: np.ndarray, voxel_size: tuple[float, float, float]) -> None:
    """Write a whole volume as OME-Zarr, marked complete once every plane is on disk."""
    group, arr = create_zarr(path, data.shape, voxel_size, data.dtype, overwrite=True)
    arr[...] = data
    state = dict(group.attrs["voxrecon"])
    state.update(complete=True, done=list(range(data.shape[0])))
    group.attrs["voxrecon"] = state


def zarr_progress(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``voxrecon`` progress record of a store written by this package, or None."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:
        return None
    rec = group.attrs.get("voxrecon")
    return dict(rec) if isinstance(rec, dict) else None
