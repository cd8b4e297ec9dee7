"""The optics of the ``diffraction`` task: what ``optics.json`` holds.

Frame (the architecture doc's contract): the refractive-index (RI) grid's voxel (i, j, k) has
its centre at (i dz, j dy, k dx) micrometres; source positions are (z, y, x) micrometres in the
same frame. Light travels towards +z: from the sources, through the slabs of the volume, to an
objective on the high-z side whose focal plane is at ``focus`` (default: the volume's centre).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """The JSON content of ``path``; a missing or malformed file is an InputError naming ``what``."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise InputError(f"{what} {path} does not exist.") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{what} {path} is not valid JSON ({err}).") from err


@dataclass(frozen=True)
class Optics:
    """Microscope and sampling parameters of a diffraction acquisition (lengths in µm)."""

    wavelength: float = 0.515  # emission wavelength in vacuum (GFP)
    na: float = 0.8  # numerical aperture of the detection objective
    n_background: float = 1.33  # refractive index of the medium around the sample
    voxel_size: tuple[float, float, float] = field(default=(0.4, 0.2, 0.2))  # (z, y, x) of the RI grid
    camera_pixel: float | None = None  # pixel size in sample space; None: the grid's x spacing
    focus: float | None = None  # z of the focal plane in the RI frame; None: the volume's centre
    depth: int | None = None  # planes of the RI grid (the simulator records it; reconstruction's default)

    def __post_init__(self) -> None:
        vs = tuple(float(v) for v in self.voxel_size)
        object.__setattr__(self, "voxel_size", vs)
        problems = []
        if not (self.wavelength > 0 and math.isfinite(self.wavelength)):
            problems.append(f"wavelength must be positive (µm), not {self.wavelength}")
        if not (self.n_background >= 1 and math.isfinite(self.n_background)):
            problems.append(f"n_background must be at least 1, not {self.n_background}")
        if not (0 < self.na <= self.n_background):
            problems.append(f"na must be in (0, n_background = {self.n_background}], not {self.na}")
        if len(vs) != 3 or not all(v > 0 and math.isfinite(v) for v in vs):
            problems.append(f"voxel_size must be three positive lengths (z, y, x) in µm, not {self.voxel_size}")
        if self.camera_pixel is not None and len(vs) == 3 and vs[2] > 0:
            ratio = self.camera_pixel / vs[2]
            if ratio < 1 - 1e-6 or abs(ratio - round(ratio)) > 1e-6:
                problems.append(f"camera_pixel ({self.camera_pixel} µm) must be a whole multiple of the x voxel size ({vs[2]} µm)")
        if self.depth is not None and (int(self.depth) != self.depth or self.depth < 1):
            problems.append(f"depth must be a positive number of planes, not {self.depth}")
        if problems:
            raise InputError("invalid optics: " + "; ".join(problems) + ".")

    @property
    def k0(self) -> float:
        """Vacuum wavenumber 2π/λ (rad/µm)."""
        return 2 * math.pi / self.wavelength

    @property
    def binning(self) -> int:
        """Grid pixels per camera pixel (laterally)."""
        return 1 if self.camera_pixel is None else int(round(self.camera_pixel / self.voxel_size[2]))

    def focal_plane(self, depth: int) -> float:
        """z (µm) of the focal plane for a volume of ``depth`` slabs."""
        return (depth - 1) * self.voxel_size[0] / 2 if self.focus is None else float(self.focus)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["voxel_size"] = list(self.voxel_size)
        return d

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Optics":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown optics field(s) {', '.join(unknown)}: the fields are {', '.join(sorted(known))}.")
        kw = dict(data)
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        wrong = [f"{k} must be a number, not {v!r}" for k, v in kw.items()
                 if k != "voxel_size" and not number(v) and not (v is None and k in ("camera_pixel", "focus", "depth"))]
        if "voxel_size" in kw:
            vs = kw["voxel_size"]
            if not isinstance(vs, (list, tuple)) or not all(number(v) for v in vs):
                wrong.append(f"voxel_size must be a list of three lengths (z, y, x) in µm, not {vs!r}")
            else:
                kw["voxel_size"] = tuple(vs)
        if wrong:
            raise InputError("invalid optics: " + "; ".join(wrong) + ".")
        return cls(**kw)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None) -> "Optics":
        """The optics in ``path`` (JSON), or the defaults for None."""
        if path is None:
            return cls()
        data = read_json_file(path, "optics file")
        if not isinstance(data, dict):
            raise InputError(f"optics file {path} must hold a JSON object of fields, not {type(data).__name__}.")
        return cls.from_dict(data)
