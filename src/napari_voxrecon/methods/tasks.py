"""The tasks' geometry: output grid, voxel size and input checks (architecture table)."""

from __future__ import annotations

from typing import Any

from ..engine.registry import Chunking, Param, Task, register_task
from ..errors import InputError

INTERVAL = Param("interval", int, None, "acquisition interval n: every n-th plane was imaged (sparse) or each image is the mean of n planes (projection)", min=2, max=64)


def _sparse_shape(shape: tuple[int, int, int], p: dict[str, Any]) -> tuple[int, int, int]:
    return ((shape[0] - 1) * p["interval"] + 1, shape[1], shape[2])


def _sparse_validate(shape: tuple[int, int, int], p: dict[str, Any]) -> None:
    if shape[0] < 2:
        raise InputError(
            f"input: the sparse task needs at least 2 acquired planes to fill between, found {shape[0]}."
        )


def _projection_shape(shape: tuple[int, int, int], p: dict[str, Any]) -> tuple[int, int, int]:
    return (shape[0] * p["interval"], shape[1], shape[2])


def _axial_voxel(vs: tuple[float, float, float], p: dict[str, Any]) -> tuple[float, float, float]:
    return (vs[0] / p["interval"], vs[1], vs[2])


def _no_check(shape: tuple[int, int, int], p: dict[str, Any]) -> None:
    return None


def _restore_shape(shape: tuple[int, int, int], p: dict[str, Any]) -> tuple[int, int, int]:
    a, l = p["axial_factor"], p["lateral_factor"]
    return (shape[0] * a, shape[1] * l, shape[2] * l)


def _restore_voxel(vs: tuple[float, float, float], p: dict[str, Any]) -> tuple[float, float, float]:
    a, l = p["axial_factor"], p["lateral_factor"]
    return (vs[0] / a, vs[1] / l, vs[2] / l)


def _restore_validate(shape: tuple[int, int, int], p: dict[str, Any]) -> None:
    if p["axial_factor"] > 1 and shape[0] < 2:
        raise InputError("input: axial upsampling needs at least 2 planes.")


def _interval(p: dict[str, Any]) -> int:
    return int(p["interval"])


def _axial_factor(p: dict[str, Any]) -> int:
    return int(p["axial_factor"])


def _lateral_factor(p: dict[str, Any]) -> int:
    return int(p["lateral_factor"])


SPARSE = register_task(
    Task(
        name="sparse",
        help="only every n-th z-plane was imaged: fill the n-1 planes between acquired planes",
        params=(INTERVAL,),
        output_shape=_sparse_shape,
        output_voxel_size=_axial_voxel,
        validate=_sparse_validate,
        default_method="linear",
        # A unit is one gap: acquired planes u and u+1 and the n-1 planes between them.
        chunking=Chunking(z_factor=_interval, unit_span=2, z_halo=0),
    )
)

PROJECTION = register_task(
    Task(
        name="projection",
        help="each image is the axial mean of n consecutive planes: recover the n planes",
        params=(INTERVAL,),
        output_shape=_projection_shape,
        output_voxel_size=_axial_voxel,
        validate=_no_check,
        default_method="linear",
        # A unit is one projection and its n planes; neighbouring projections give context.
        chunking=Chunking(z_factor=_interval, z_halo=1),
    )
)

RESTORE = register_task(
    Task(
        name="restore",
        help="a fast low-resolution, noisy volume: restore axial/lateral resolution and denoise",
        params=(
            Param("axial_factor", int, None, "axial upsampling factor a (output has Z*a planes)", min=1, max=32),
            Param("lateral_factor", int, 1, "lateral upsampling factor l (output is H*l x W*l)", min=1, max=8),
        ),
        output_shape=_restore_shape,
        output_voxel_size=_restore_voxel,
        validate=_restore_validate,
        default_method="trilinear",
        # A unit is one input plane and the a output planes from it towards the next one.
        chunking=Chunking(z_factor=_axial_factor, lateral_factor=_lateral_factor, z_halo=2),
    )
)


def _diffraction_optics(p: dict[str, Any]) -> Any:
    from ..physics.optics import Optics

    return Optics.load(p["optics"] or None)


def _diffraction_depth(p: dict[str, Any]) -> int:
    depth = p["depth"] or _diffraction_optics(p).depth
    if not depth:
        raise InputError("diffraction: give --depth (planes of the index volume to reconstruct) or an optics file "
                         "that records it (voxrecon simulate diffraction writes one).")
    return int(depth)


def _diffraction_shape(shape: tuple[int, int, int], p: dict[str, Any]) -> tuple[int, int, int]:
    b = _diffraction_optics(p).binning
    return (_diffraction_depth(p), shape[1] * b, shape[2] * b)


def _diffraction_voxel(vs: tuple[float, float, float], p: dict[str, Any]) -> tuple[float, float, float]:
    return _diffraction_optics(p).voxel_size


def _diffraction_validate(shape: tuple[int, int, int], p: dict[str, Any]) -> None:
    from ..simulate.diffraction import check_source_geometry, read_sources

    if not p["sources"]:  # estimated from the images by the method (physics.source_fit)
        _diffraction_depth(p)
        return
    sources = read_sources(p["sources"])
    n = sources.shape[0]
    if n != shape[0]:
        raise InputError(f"diffraction: the image stack holds {shape[0]} image(s) but {p['sources']} lists {n} source(s); "
                         "they must match one to one.")
    check_source_geometry(sources, _diffraction_shape(shape, p), _diffraction_optics(p), p["sources"])


DIFFRACTION = register_task(
    Task(
        name="diffraction",
        help="K images of fluorescent point sources seen through the sample: recover its 3D refractive index",
        params=(
            Param("sources", str, "", "JSON file of the K source positions in µm (z, y, x), one per image; empty: "
                  "estimated from the spots (a generalised Gaussian fit of each image) and refined by self-calibration",
                  file_filter="*.json"),
            Param("optics", str, "", "optics.json (wavelength, na, n_background, voxel_size, ...); empty: the defaults",
                  file_filter="*.json"),
            Param("depth", int, 0, "planes of the index volume (0: the optics file's depth)", min=0, max=4096),
        ),
        output_shape=_diffraction_shape,
        output_voxel_size=_diffraction_voxel,
        validate=_diffraction_validate,
        default_method="nvp",
    )
)
