"""napari sample data: the embedded cells3d nuclei crop and its simulated acquisitions.

The sparse, projection and low-resolution versions are simulated at load time with the same functions the CLI
uses (``voxrecon simulate``), so what napari shows is exactly what the tasks expect as input.
Each layer carries ``metadata["voxrecon_acquisition"]`` (task and parameters) so the Reconstruct
widget can preselect the matching task and interval.
"""

from __future__ import annotations

from typing import Any

from .io.volume import Volume

LayerData = tuple[Any, dict[str, Any], str]

SAMPLE_FILE = "cells3d_nuclei_crop.ome.tif"
INTERVAL = 4


def load_ground_truth() -> Volume:
    """The (60, 128, 128) uint16 crop with its voxel size (0.29, 0.26, 0.26) µm."""
    from importlib.resources import as_file, files

    from .io.formats import read_volume

    ref = files("napari_voxrecon") / "data" / SAMPLE_FILE
    with as_file(ref) as path:  # a real file even when the package is zipped
        return read_volume(path)


def _layer(data: Any, name: str, voxel: tuple[float, ...], extra: dict[str, Any]) -> LayerData:
    meta = {"source": f"napari-voxrecon sample ({SAMPLE_FILE})", "voxel_size": tuple(voxel), **extra}
    return data, {"name": name, "scale": tuple(voxel), "colormap": "gray", "metadata": meta}, "image"


def cells3d_nuclei() -> list[LayerData]:
    gt = load_ground_truth()
    return [_layer(gt.data, "nuclei (ground truth)", gt.voxel_size, {})]


def cells3d_nuclei_sparse4() -> list[LayerData]:
    from .simulate import simulate_sparse

    gt = load_ground_truth()
    vz, vy, vx = gt.voxel_size
    sparse = simulate_sparse(gt.data, INTERVAL)
    # Acquired plane k is ground-truth plane k*n: same origin, n times the z spacing.
    hint = {"voxrecon_acquisition": {"task": "sparse", "params": {"interval": INTERVAL}}}
    return [_layer(sparse, f"nuclei sparse x{INTERVAL}", (vz * INTERVAL, vy, vx), hint)]


def cells3d_nuclei_projection4() -> list[LayerData]:
    from .simulate import simulate_projection

    gt = load_ground_truth()
    vz, vy, vx = gt.voxel_size
    proj = simulate_projection(gt.data, INTERVAL)
    hint = {"voxrecon_acquisition": {"task": "projection", "params": {"interval": INTERVAL}}}
    # Projection k is stored (and shown) at the position of the first plane of its group, as in
    # the TIFF/zarr files the CLI writes; the reconstruction then lines up with the ground truth.
    return [_layer(proj, f"nuclei projection x{INTERVAL}", (vz * INTERVAL, vy, vx), hint)]


#: Noise level of the low-resolution sample: the mild noise the shipped restore models train for.
RESTORE_NOISE = 0.05


def cells3d_nuclei_lowres4() -> list[LayerData]:
    from .simulate import simulate_restore

    gt = load_ground_truth()
    vz, vy, vx = gt.voxel_size
    low = simulate_restore(gt.data, INTERVAL, 1, RESTORE_NOISE, seed=0)
    hint = {"voxrecon_acquisition": {"task": "restore", "params": {"axial_factor": INTERVAL, "lateral_factor": 1}}}
    # Low-resolution plane k is the axially blurred ground-truth plane k*a, as in `voxrecon simulate restore`.
    return [_layer(low, f"nuclei low-res x{INTERVAL}", (vz * INTERVAL, vy, vx), hint)]
