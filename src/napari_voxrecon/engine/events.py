"""What a running job yields: progress, notices and finished slices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of work (usually output planes) are finished."""

    done: int
    total: int
    message: str = ""
    loss: float | None = None  # the current loss of a per-stack fit (INR, diffraction), for a live curve


@dataclass(frozen=True)
class Notice:
    """Something the user must be told (e.g. the announced CPU fallback)."""

    message: str
    level: str = "info"  # "info" or "warning"


@dataclass(frozen=True)
class SliceResult:
    """A finished output plane: z index in the output grid and the 2D array (input units).

    ``output`` names the volume it belongs to: "result" for the reconstruction, other names
    (e.g. "uncertainty") for companion volumes of the same shape.
    """

    z: int
    data: np.ndarray
    output: str = "result"


@dataclass(frozen=True)
class Preview:
    """A provisional whole volume of an output (e.g. an INR's rendering while it is still being
    fitted), for viewers to show until that output's final planes arrive. Sinks ignore it:
    nothing provisional is ever written to a file."""

    data: np.ndarray
    output: str = "result"


@dataclass(frozen=True)
class ChunkDone:
    """A chunked run (``chunks.py``) finished the output region ``[z0:z1, y0:y1, x0:x1]``; it is
    on disk in the output store (viewers reading that store refresh the region)."""

    region: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


Event = Progress | Notice | SliceResult | Preview | ChunkDone
