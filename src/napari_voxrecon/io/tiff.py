"""TIFF volumes with ImageJ or OME voxel-size metadata."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import InputError
from .volume import DEFAULT_VOXEL_SIZE, Volume, squeeze_to_3d

_UNIT_TO_UM = {
    "nm": 1e-3, "nanometer": 1e-3,
    "um": 1.0, "µm": 1.0, "\\u00B5m": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6,
}


def _unit_scale(unit: str | None) -> float:
    if not unit:
        return 1.0
    return _UNIT_TO_UM.get(str(unit).strip().lower(), _UNIT_TO_UM.get(str(unit).strip(), 1.0))


def _ome_voxel_size(xml: str) -> tuple[float | None, float | None, float | None]:
    root = ET.fromstring(xml)
    for el in root.iter():
        if el.tag.endswith("Pixels"):
            out = []
            for ax in ("Z", "Y", "X"):
                v = el.get(f"PhysicalSize{ax}")
                out.append(float(v) * _unit_scale(el.get(f"PhysicalSize{ax}Unit", "µm")) if v else None)
            return out[0], out[1], out[2]
    return None, None, None


def _resolution_size(page, tag: str, unit_scale: float) -> float | None:
    t = page.tags.get(tag)
    if t is None:
        return None
    num, den = t.value
    if not num or not den or (num == 1 and den == 1):
        return None  # 1 pixel per unit is the "no calibration" default
    return den / num * unit_scale


def series_axes(tf) -> str:
    """Axis letters of the first series of an open ``tifffile.TiffFile``."""
    series = tf.series[0]
    axes = series.axes
    if axes.startswith("S") and len(axes) == 3 and series.shape[0] in (3, 4):
        # tifffile stores a plain (3|4, Y, X) stack as planar samples: it is a short z-stack.
        axes = "Z" + axes[1:]
    return axes


def tiff_voxel_size(tf) -> tuple[float | None, float | None, float | None]:
    """(z, y, x) voxel size in µm from OME or ImageJ metadata of an open TiffFile (None: absent)."""
    vz = vy = vx = None
    if tf.is_ome and tf.ome_metadata:
        vz, vy, vx = _ome_voxel_size(tf.ome_metadata)
    if tf.is_imagej and tf.imagej_metadata is not None:
        meta = tf.imagej_metadata
        scale = _unit_scale(meta.get("unit"))
        page = tf.pages[0]
        vx = vx or _resolution_size(page, "XResolution", scale)
        vy = vy or _resolution_size(page, "YResolution", scale)
        if meta.get("spacing"):
            vz = vz or float(meta["spacing"]) * scale
    return vz, vy, vx


def read_tiff(path: str | os.PathLike) -> Volume:
    import logging

    import tifffile

    # tifffile logs its own complaints about damaged files; ours is the one-line error below.
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise InputError(f"{path}: the TIFF holds no image data.")
            axes = series_axes(tf)
            data = tf.series[0].asarray()
            vz, vy, vx = tiff_voxel_size(tf)
    except InputError:
        raise
    except Exception as err:  # tifffile raises many types for corrupt files
        raise InputError(f"{path}: not a readable TIFF file ({type(err).__name__}: {err}).") from err
    if data.size == 0:
        raise InputError(f"{path}: the TIFF is empty (shape {data.shape}).")
    data, axes = squeeze_to_3d(data, axes, what=str(path))
    default = DEFAULT_VOXEL_SIZE
    voxel = (vz or default[0], vy or default[1], vx or default[2])
    return Volume(data, voxel, {"axes": axes, "calibrated": any(v is not None for v in (vz, vy, vx))})


def imagej_compatible(data: np.ndarray) -> np.ndarray:
    """ImageJ stores uint8, uint16 and float32 stacks: booleans become uint8, other types float32."""
    data = np.asarray(data)
    if data.dtype == bool:
        return data.astype(np.uint8)
    if data.dtype in (np.uint8, np.uint16, np.float32):
        return data
    return data.astype(np.float32)


def write_tiff(path: str | os.PathLike, data: np.ndarray, voxel_size: tuple[float, float, float]) -> None:
    """Write an ImageJ hyperstack (ZYX, float32 or integer) with voxel size in micrometres.

    Written to a hidden temporary file and renamed at the end, so an interrupted write never
    leaves a file that looks complete.
    """
    import tifffile

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    data = imagej_compatible(data)
    vz, vy, vx = (float(v) for v in voxel_size)
    big = data.nbytes > 3.9 * 2**30
    try:
        if big:  # ImageJ files stop at 4 GiB: OME-TIFF (BigTIFF) keeps the voxel size in its XML
            tifffile.imwrite(tmp, data, bigtiff=True, ome=True, metadata={
                "axes": "ZYX", "PhysicalSizeZ": vz, "PhysicalSizeY": vy, "PhysicalSizeX": vx,
                "PhysicalSizeZUnit": "µm", "PhysicalSizeYUnit": "µm", "PhysicalSizeXUnit": "µm"})
        else:
            tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / vx, 1.0 / vy),
                             metadata={"spacing": vz, "unit": "um", "axes": "ZYX"})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
