"""Large stacks in the Reconstruct widget: a preview of the region in view, and a full chunked
run into a zarr store that the viewer shows filling in.

Both run in the widget's ``thread_worker`` like an ordinary run; nothing here touches a layer.
The preview reads only its region from the layer (napari keeps zarr inputs lazy) and scales it
with the whole stack's intensity window, so it looks like the same region of the full run. The
full run is the dask runner's ``ChunkedJob`` on the layer's file, one chunk at a time in the
worker thread (the command line spreads the same chunks over processes or a cluster); it writes
the zarr store chunk by chunk and yields ``ChunkDone`` so the widget refreshes the output layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..engine.cancel import CancelToken
from ..errors import VoxreconError

#: Lateral size (pixels) of a preview region at most, so a preview takes seconds.
PREVIEW_MAX = 512
#: Input planes on each side of the current plane that a preview covers.
PREVIEW_PLANES = 1


@dataclass(frozen=True)
class ChunkedReady:
    """First event of a chunked run: the prepared job (its store exists from now on)."""

    job: Any  # engine.dask_runner.ChunkedJob


def preview_region(shape: tuple[int, int, int], z: int, corners: np.ndarray | None, halo: int = 0,
                   margin: int = 0, min_planes: int = 2) -> tuple[slice, slice, slice]:
    """Input region of a preview: the planes around ``z`` (plus the method's ``halo``) and the
    visible lateral box ``corners`` ((2, 2): top-left and bottom-right y, x; None: the centre)
    plus ``margin``, at most ``PREVIEW_MAX`` pixels across (centred on the view)."""
    depth, h, w = shape
    z = int(np.clip(z, 0, depth - 1))
    z0, z1 = max(0, z - PREVIEW_PLANES - halo), min(depth, z + PREVIEW_PLANES + 1 + halo)
    while z1 - z0 < min(min_planes, depth):  # at the stack's ends: widen inwards
        z0, z1 = max(0, z0 - 1), min(depth, z1 + 1)
    if corners is None:
        corners = np.array([[h // 2, w // 2], [h // 2, w // 2]])
    out = []
    for axis, size in ((0, h), (1, w)):
        lo, hi = int(np.floor(corners[0][axis])), int(np.ceil(corners[1][axis]))
        lo, hi = max(0, lo - margin), min(size, max(hi, lo + 1) + margin)
        if hi - lo > PREVIEW_MAX:
            centre = (lo + hi) // 2
            lo = max(0, min(size - PREVIEW_MAX, centre - PREVIEW_MAX // 2))
            hi = lo + PREVIEW_MAX
        out.append(slice(lo, hi))
    return slice(z0, z1), out[0], out[1]


def whole_window(data: Any) -> tuple[float, float, float]:
    """The whole stack's intensity window (lo, hi, minimum), from a sample of ``data``."""
    from ..engine.dask_runner import sample_statistics
    from ..io.lazy import ArrayVolume

    return sample_statistics(ArrayVolume(data))["window"]


def chunked_events(task: str, input_path: str, output_path: str, params: dict[str, Any], method: str,
                   seed: int, device: str, token: CancelToken, overwrite: bool = False) -> Iterator[Any]:
    """Worker body of "Run to zarr": prepare the chunked job, then stream its events."""
    from ..engine.dask_runner import ChunkedJob
    from ..engine.events import Progress

    job = ChunkedJob(task, input_path, output_path, params, method, seed, device)
    token.raise_if_cancelled()
    events = job.run(None, token, overwrite)
    early = []
    for event in events:  # the store exists once the job reports its first progress
        early.append(event)
        if isinstance(event, Progress):
            break
    yield ChunkedReady(job)
    yield from early
    yield from events


def layer_file(layer: Any) -> str:
    """The file a layer was opened from; the chunked run reads it (not the layer's memory)."""
    from ..io.formats import format_of

    path = getattr(getattr(layer, "source", None), "path", None) or layer.metadata.get("source")
    if not path or format_of(path) is None:
        raise VoxreconError(
            f"{layer.name!r} was not opened from a TIFF or zarr file; a run to zarr reads the stack from its file. "
            "Save the layer (File > Save Selected Layers…) and open that file, or use Run for a stack that fits in memory."
        )
    return str(path)
