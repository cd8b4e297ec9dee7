"""Chunked reconstruction: a volume cut into independent blocks that fit in memory.

A chunk is a run of the task's z units (``registry.Chunking``: a gap between two acquired
planes, a projection group, an input plane of ``restore``) times one lateral tile. It reads its
block plus context (``z_halo`` planes, ``lateral_margin`` pixels: the method's reach), runs the
ordinary ``Job`` on that block, and writes only the output region it owns. Regions tile the
output exactly and line up with the zarr chunks, so workers never write the same zarr chunk and
a chunk written twice (after a resume) is written with the same bytes.

Every chunk is scaled with the whole volume's intensity window (``normalize.whole_volume_window``,
estimated once from a sample), so learned methods see the same units in every tile. Methods that
only look at a gap's own planes and at each pixel alone (linear, nearest) give exactly the
in-memory result; methods with a wider reach agree up to what lies beyond their context.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .registry import Method, Task

Range = tuple[int, int]


@dataclass(frozen=True)
class Chunk:
    """One independent piece of work: input block to read, output region to write."""

    index: int
    read: tuple[Range, Range, Range]  # input (z, y, x) ranges, context included
    write: tuple[Range, Range, Range]  # output (z, y, x) ranges this chunk owns
    crop: tuple[Range, Range, Range]  # where ``write`` lies in the block's own output

    @property
    def output_slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in self.write)  # type: ignore[return-value]


@dataclass(frozen=True)
class ChunkPlan:
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    chunks: tuple[Chunk, ...]
    store_chunks: tuple[int, int, int]  # zarr chunk shape of the outputs (one write region each)
    z_halo: int
    lateral_margin: int
    planes: int  # output planes per chunk asked for
    tile: int  # lateral tile (input pixels) asked for

    def record(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one (stored with the output)."""
        return {"planes": self.planes, "tile": self.tile, "z_halo": self.z_halo,
                "lateral_margin": self.lateral_margin, "count": len(self.chunks),
                "store_chunks": list(self.store_chunks)}


def _tiles(size: int, tile: int, margin: int, factor: int) -> list[tuple[Range, Range, Range]]:
    """(read, write, crop) ranges along one lateral axis, tiles of ``tile`` input pixels."""
    out = []
    for a in range(0, size, tile):
        b = min(size, a + tile)
        ra, rb = max(0, a - margin), min(size, b + margin)
        out.append(((ra, rb), (a * factor, b * factor), ((a - ra) * factor, (b - ra) * factor)))
    return out


def plan_chunks(task: Task, method: Method, params: dict[str, Any], input_shape: tuple[int, int, int],
                planes: int = 32, tile: int = 1024) -> ChunkPlan:
    """Cut the task's output into chunks of about ``planes`` output planes x ``tile``² input pixels."""
    if planes < 1 or tile < 1:
        raise InputError(f"chunk size: planes ({planes}) and tile ({tile}) must be at least 1.")
    zin, h, w = (int(s) for s in input_shape)
    out_shape = tuple(int(s) for s in task.output_shape(input_shape, params))
    c = task.chunking
    if c is None:  # one inseparable fit: a single chunk of everything
        whole = ((0, zin), (0, h), (0, w))
        out = tuple((0, s) for s in out_shape)
        only = Chunk(0, whole, out, out)  # type: ignore[arg-type]
        store = (min(out_shape[0], 32), out_shape[1], out_shape[2])
        return ChunkPlan(tuple(input_shape), out_shape, (only,), store, 0, 0, planes, tile)  # type: ignore[arg-type]
    f, lat = int(c.z_factor(params)), int(c.lateral_factor(params))
    halo, margin = method.z_halo(task), method.lateral_margin(task)
    units = zin - c.unit_span + 1
    per = max(1, math.ceil(planes / f))  # units per chunk
    zs = []
    for u0 in range(0, units, per):
        u1 = min(units, u0 + per)
        s, e = max(0, u0 - halo), min(zin, u1 - 1 + c.unit_span + halo)
        end = u1 * f if u1 < units else out_shape[0]  # the last chunk owns any trailing plane
        zs.append(((s, e), (u0 * f, end), (u0 * f - s * f, end - s * f)))
    ys, xs = _tiles(h, tile, margin, lat), _tiles(w, tile, margin, lat)
    chunks = []
    for zr in zs:
        for yr in ys:
            for xr in xs:
                chunks.append(Chunk(len(chunks), (zr[0], yr[0], xr[0]), (zr[1], yr[1], xr[1]), (zr[2], yr[2], xr[2])))
    store = (min(out_shape[0], per * f), min(out_shape[1], tile * lat), min(out_shape[2], tile * lat))
    return ChunkPlan(tuple(input_shape), out_shape, tuple(chunks), store, halo, margin, planes, tile)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ChunkedRun:
    """Everything a worker needs to compute any chunk (small and picklable: paths, not arrays)."""

    task: str
    method: str
    params: dict[str, Any]
    seed: int
    device: str
    input_path: str
    outputs: dict[str, str]  # output name -> zarr store path
    window: tuple[float, float, float]  # whole-volume (lo, hi, minimum)
    voxel_size: tuple[float, float, float]


_OPEN: dict[tuple[str, int, int], Any] = {}
_OPEN_LOCK = threading.Lock()


def _input(path: str) -> Any:
    """The input, opened once per worker thread (file handles are not shared between threads)."""
    from ..io.lazy import open_lazy

    key = (path, Path(path).stat().st_mtime_ns, threading.get_ident())
    with _OPEN_LOCK:
        if key not in _OPEN:
            alive = {t.ident for t in threading.enumerate()}
            for old in [k for k in _OPEN if k[2] not in alive]:  # threads that ended (e.g. napari workers)
                _OPEN.pop(old).close()
            _OPEN[key] = open_lazy(path)
        return _OPEN[key]


def chunk_seed(seed: int, chunk: Chunk) -> int:
    """A chunk's seed follows from the job seed and where the chunk is, not from run order."""
    z, y, x = (r[0] for r in chunk.write)
    return int(np.random.SeedSequence([int(seed), z, y, x]).generate_state(1)[0] % (2**31))


def compute_chunk(run: ChunkedRun, chunk: Chunk) -> tuple[int, list[str]]:
    """Reconstruct one chunk and write its region into every output store.

    Returns (chunk index, notices to show the user). The same chunk always writes the same bytes.
    """
    import zarr

    from ..normalize import whole_volume_window
    from .events import Notice
    from .job import Job, run_job

    (z0, z1), (y0, y1), (x0, x1) = chunk.read
    block = _input(run.input_path).read(slice(z0, z1), slice(y0, y1), slice(x0, x1))
    where = f"input block z {z0}:{z1}, y {y0}:{y1}, x {x0}:{x1}"
    notices: list[str] = []
    try:
        with whole_volume_window(*run.window):
            job = Job(run.task, block, dict(run.params), method=run.method, voxel_size=run.voxel_size,
                      seed=chunk_seed(run.seed, chunk), device=run.device, allow_constant=True)
            results = run_job(job, on_event=lambda e: notices.append(e.message) if isinstance(e, Notice) else None)
    except InputError as err:
        raise InputError(f"{where}: {err}") from err
    crop = tuple(slice(a, b) for a, b in chunk.crop)
    # Companions first, the result last: a chunk counts as done only once it is all on disk.
    for name in sorted(run.outputs, key=lambda n: n == "result"):
        array = zarr.open_array(str(Path(run.outputs[name]) / "0"), mode="r+")
        array[chunk.output_slices] = np.asarray(results[name][crop], dtype=np.float32)
    return chunk.index, notices
