"""Where finished slices go: memory, a TIFF written at the end, or a zarr store filled live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VoxreconError


class NumpySink:
    """Collects slices in an array (NaN where nothing has arrived yet)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.array = np.full(shape, np.nan, dtype=np.float32)

    def write(self, z: int, plane: np.ndarray) -> None:
        self.array[z] = plane

    def abort(self) -> None:
        pass

    def close(self) -> np.ndarray:
        return self.array


class TiffSink(NumpySink):
    """Collects slices in memory and writes the TIFF only once all are there (atomic rename)."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], voxel_size: tuple[float, float, float]) -> None:
        super().__init__(shape)
        self.path = Path(path)
        self.voxel_size = voxel_size

    def close(self) -> np.ndarray:
        from ..io.tiff import write_tiff

        write_tiff(self.path, self.array, self.voxel_size)
        return self.array


class ZarrSink:
    """Writes each slice to an OME-Zarr store as it arrives; finished planes are on disk.

    The group attribute ``voxrecon`` lists the finished planes and is marked ``complete`` only
    when the job finishes, so an interrupted store never looks complete and can be resumed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, int, int],
        voxel_size: tuple[float, float, float],
        job_record: dict[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        import zarr

        from ..io.zarr_store import create_zarr

        self.path = Path(path)
        self.backup: Path | None = None  # a replaced store, kept until this one completes
        self.stale: Path | None = None  # one left by a killed replacing run that this one resumes
        self.resumed = resume
        if resume:
            self.group = zarr.open_group(str(self.path), mode="r+")
            self.array = self.group["0"]
            self.done = set(int(z) for z in self.group.attrs["voxrecon"].get("done", []))
        else:
            self.group, self.array = create_zarr(self.path, shape, voxel_size, np.float32, job_record, overwrite=True)
            self.done = set()

    def _save_state(self, complete: bool = False) -> None:
        state = dict(self.group.attrs["voxrecon"])
        state["done"] = sorted(self.done)
        state["complete"] = complete
        self.group.attrs["voxrecon"] = state

    def write(self, z: int, plane: np.ndarray) -> None:
        self.array[z] = np.asarray(plane, dtype=np.float32)
        self.done.add(int(z))
        self._save_state()

    def abort(self) -> None:
        """Failed or cancelled run: finished planes stay (resumable) unless the run was replacing
        an earlier output (--overwrite) or produced nothing; then the earlier state comes back."""
        from ..io.formats import remove_output

        if self.backup is not None:
            restore_backups({"result": self.backup}, {"result": self.path})
            self.backup = None
        elif not self.done and not self.resumed:
            remove_output(self.path)

    def close(self) -> Any:
        if len(self.done) != self.array.shape[0]:
            missing = self.array.shape[0] - len(self.done)
            raise VoxreconError(f"{self.path}: {missing} plane(s) were never produced; the output is incomplete.")
        self._save_state(complete=True)
        for old in (self.backup, self.stale):
            if old is not None:
                drop_backups({"result": old})
        self.backup = self.stale = None
        return self.array


def companion_path(path: str | os.PathLike, output: str) -> Path:
    """Path of a companion output, e.g. ``out.tif`` -> ``out_uncertainty.tif``."""
    path = Path(path)
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + f"_{output}" + name[-len(suffix):])
    return path.with_name(name + f"_{output}")


def check_resumable(path: str | os.PathLike, record: dict[str, Any]) -> dict[str, Any]:
    """The progress record of an existing zarr output that this job (``record``) may resume.

    Refuses a store voxrecon did not write, a complete one, and one of another job (or another
    chunking), each with the way out; nothing is touched.
    """
    from ..io.zarr_store import zarr_progress

    progress = zarr_progress(path)
    if progress is None:
        raise VoxreconError(f"{path} already exists and was not written by voxrecon; pass --overwrite to replace it.")
    if progress.get("complete"):
        raise VoxreconError(f"{path} is already complete; pass --overwrite to compute it again.")
    if progress.get("job") != record:
        raise VoxreconError(
            f"{path} holds an unfinished run of a different job or chunking ({progress.get('job')}); "
            "pass --overwrite to replace it, or use the same command to resume it."
        )
    return progress


def set_aside(paths: dict[str, Path], overwrite: bool, keep: bool = True) -> dict[str, Path]:
    """Check every output path (refused if it exists and not ``overwrite``); with ``keep``, move
    existing outputs to a hidden ``.NAME.replaced`` beside them and return those backups: they
    are deleted when the new run completes (``drop_backups``) and put back if it fails
    (``restore_backups``), so an overwrite that fails loses nothing."""
    from ..io.formats import check_output_path, remove_output

    for p in paths.values():
        check_output_path(p, overwrite)
    backups: dict[str, Path] = {}
    if not keep:
        return backups
    for name, p in paths.items():
        if p.exists():
            backup = backup_path(p)
            if backup.exists():
                remove_output(backup)
            os.replace(p, backup)
            backups[name] = backup
    return backups


def backup_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.replaced")


def leftover_backups(paths: dict[str, Path]) -> dict[str, Path]:
    """Backups an earlier replacing run left when it was killed (it could not restore or drop
    them): a run that resumes its output drops them once that output is complete."""
    return {name: backup_path(p) for name, p in paths.items() if backup_path(p).exists()}


def restore_backups(backups: dict[str, Path], paths: dict[str, Path]) -> None:
    """A replacing run failed: its partial outputs go, the earlier ones come back."""
    from ..io.formats import remove_output

    for name, backup in backups.items():
        remove_output(paths[name])
        os.replace(backup, paths[name])


def drop_backups(backups: dict[str, Path]) -> None:
    from ..io.formats import remove_output

    for backup in backups.values():
        remove_output(backup)


def open_file_sinks(
    path: str | os.PathLike,
    job: Any,
    overwrite: bool = False,
) -> tuple[dict[str, Any], frozenset[int]]:
    """Sinks for every output of ``job`` at ``path`` (companions beside it).

    Returns (sinks, planes already done). A zarr output left incomplete by an interrupted run of
    the same job is resumed; a complete one, or one of another job, is refused unless
    ``overwrite``. Nothing is deleted before the new run has been validated.
    """
    from ..io.formats import format_of
    from ..io.zarr_store import zarr_progress

    fmt = format_of(path)
    if fmt is None:
        raise VoxreconError(f"{path}: unsupported output type; use a .tif, .tiff or .zarr path.")
    paths = {name: (Path(path) if name == "result" else companion_path(path, name)) for name in job.outputs}
    record = job.record()
    resume = False
    if fmt == "zarr" and not overwrite and Path(path).exists():
        check_resumable(path, record)
        resume = all(zarr_progress(p) is not None for p in paths.values())
    backups = {} if resume else set_aside(paths, overwrite, keep=fmt == "zarr")
    sinks: dict[str, Any] = {}
    done: frozenset[int] = frozenset()
    for name, p in paths.items():
        if fmt == "zarr":
            sinks[name] = ZarrSink(p, job.output_shape, job.output_voxel_size, record, resume=resume)
            sinks[name].backup = backups.get(name)
            if resume:
                sinks[name].stale = leftover_backups({name: p}).get(name)
        else:
            sinks[name] = TiffSink(p, job.output_shape, job.output_voxel_size)
    if resume:
        done = frozenset(sinks["result"].done)
        for name, sink in sinks.items():
            if name != "result":
                done = done & frozenset(sink.done)
    return sinks, done


class ChunkedZarrOutput:
    """The zarr stores of a chunked run (``chunks.py``): the result and its companions.

    Workers write the voxels; only this object (in the driving process) writes the progress
    record, the result store's ``voxrecon`` attribute: the job, the chunk plan and the indices
    of finished chunks. A chunk is marked after all its outputs are on disk, so a run killed at
    any moment resumes from the record and at worst recomputes a chunk with the same bytes.
    """

    def __init__(self, path: str | os.PathLike, outputs: tuple[str, ...], record: dict[str, Any],
                 shape: tuple[int, int, int], store_chunks: tuple[int, int, int],
                 voxel_size: tuple[float, float, float], overwrite: bool = False) -> None:
        import zarr

        from ..io.formats import format_of
        from ..io.zarr_store import create_zarr

        if format_of(path) != "zarr":
            raise VoxreconError(f"{path}: a chunked run writes zarr; give an output path ending in .zarr.")
        self.path = Path(path)
        self.paths = {n: (self.path if n == "result" else companion_path(self.path, n)) for n in outputs}
        self.backups: dict[str, Path] = {}
        self.stale: dict[str, Path] = {}  # left by a killed replacing run; dropped when this one completes
        self.done: set[int] = set()
        self.resumed = False
        self._last_save = 0.0
        if self.path.exists() and not overwrite:
            progress = check_resumable(self.path, record)
            missing = [str(p) for p in self.paths.values() if not p.exists()]
            if missing:
                raise VoxreconError(f"{path}: its companion output(s) {', '.join(missing)} are gone; pass --overwrite to start again.")
            self.done = set(int(i) for i in progress.get("chunks_done", []))
            self.resumed = True
            self.stale = leftover_backups(self.paths)
            self.group = zarr.open_group(str(self.path), mode="r+")
            return
        self.backups = set_aside(self.paths, overwrite)
        for name, p in self.paths.items():
            group, _ = create_zarr(p, shape, voxel_size, np.float32, record, overwrite=True, chunks=store_chunks)
            if name == "result":
                self.group = group
        self.save()

    def save(self, complete: bool = False) -> None:
        import time

        state = dict(self.group.attrs["voxrecon"])
        state["chunks_done"] = sorted(self.done)
        state["complete"] = complete
        self.group.attrs["voxrecon"] = state
        self._last_save = time.monotonic()

    def mark(self, index: int, every_s: float = 0.5) -> None:
        """Record a finished chunk (written at most every ``every_s`` seconds: an unrecorded
        chunk is only recomputed on resume, never lost)."""
        import time

        self.done.add(int(index))
        if time.monotonic() - self._last_save >= every_s:
            self.save()

    def finish(self) -> None:
        self.save(complete=True)
        drop_backups(self.backups)
        drop_backups(self.stale)
        self.backups, self.stale = {}, {}

    def abort(self) -> None:
        """Failed or cancelled: finished chunks stay recorded (resumable), unless this run was
        replacing an earlier output (that comes back) or finished nothing new."""
        from ..io.formats import remove_output

        if self.backups:
            restore_backups(self.backups, self.paths)
            self.backups = {}
        elif not self.done and not self.resumed:
            for p in self.paths.values():
                remove_output(p)
        else:
            self.save()
