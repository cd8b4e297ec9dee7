"""The dask runner: a chunked reconstruction on threads, local processes or any Dask cluster.

``ChunkedJob`` prepares a run without touching its voxels beyond a small sample (shape checks,
chunk plan, whole-volume intensity window, input fingerprint); ``ChunkedJob.run`` is a generator
of the usual events (plus ``ChunkDone``) that maps ``chunks.compute_chunk`` over the chunks on a
``dask.distributed`` client and records progress in the output store. Memory is bounded by a
chunk per worker, not by the volume. Killed and started again with the same command, it skips
the recorded chunks; every chunk is deterministic, so the result is bit-identical.

Schedulers: ``synchronous`` (in this thread), ``threads`` (a pool of worker threads in this
process), ``processes`` (a ``dask.distributed`` LocalCluster of worker processes) or the address
of a running ``dask.distributed`` scheduler (``tcp://host:8786``), e.g. one started by
dask-jobqueue on SLURM. Workers load model weights once (``models.loading`` caches per process),
not per chunk. Only a few chunks per worker are submitted at a time (``_map``), so neither the
driver nor the scheduler holds a task per chunk of a huge volume.

Why ``threads`` is a plain thread pool and not an in-process ``distributed`` cluster: measured
on 400 chunks (docs/benchmarks.md, Scale), the in-process cluster's process grew by about 1 MB
per chunk (native memory, not Python objects; a fixed glibc mmap threshold and ``malloc_trim``
did not stop it), while the thread pool stayed flat.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import InputError, JobCancelled, VoxreconError
from .cancel import CancelToken
from .device import device_for
from .chunks import ChunkedRun, ChunkPlan, compute_chunk, plan_chunks
from .events import ChunkDone, Event, Notice, Progress
from .registry import get_method, get_task

LOCAL_SCHEDULERS = ("synchronous", "threads", "processes")


def sample_statistics(volume: Any, blocks: int = 64, size: int = 256) -> dict[str, Any]:
    """Intensity window, minimum and a content fingerprint from ``blocks`` blocks of one plane x
    ``size``² pixels spread over the volume (about 4 M voxels: what ``percentile_range`` uses).

    Refuses a sample with NaN/Inf or a single value, as the in-memory checks would.
    """
    from ..normalize import percentile_range

    z, h, w = volume.shape
    bh, bw = min(size, h), min(size, w)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(volume.shape), str(volume.dtype))).encode())
    values = []
    for i in range(blocks):
        zi = int(round(i * (z - 1) / max(1, blocks - 1)))
        # a low-discrepancy walk over the plane, so the blocks do not line up in one column
        y0 = int(((i * 0.6180339887) % 1.0) * (h - bh + 1))
        x0 = int(((i * 0.7548776662) % 1.0) * (w - bw + 1))
        block = volume.read(slice(zi, zi + 1), slice(y0, y0 + bh), slice(x0, x0 + bw))
        digest.update(block.tobytes())
        values.append(block.reshape(-1))
    sample = np.concatenate(values)
    if not np.isfinite(sample).all():
        raise InputError(f"{volume.path}: the volume holds NaN or infinite voxels; replace them (e.g. with 0 or the "
                         "background value) before reconstructing.")
    if sample.min() == sample.max():
        raise InputError(f"{volume.path}: every sampled voxel has the same value ({float(sample.min()):g}); there is "
                         "no structure to reconstruct. Check that the right file or channel was loaded.")
    lo, hi = percentile_range(sample.reshape(1, 1, -1))
    return {"window": (lo, hi, float(sample.min())), "fingerprint": digest.hexdigest()}


@contextmanager
def dask_client(scheduler: str = "threads", workers: int = 1) -> Iterator[Any]:
    """What runs the chunks for ``scheduler``, closed afterwards: None for ``synchronous``, a
    ``ThreadPoolExecutor`` for ``threads``, a ``distributed.Client`` otherwise."""
    if scheduler == "synchronous":
        yield None
        return
    if workers < 1:
        raise VoxreconError(f"--workers must be at least 1, got {workers}.")
    if scheduler == "threads":
        with ThreadPoolExecutor(workers, thread_name_prefix="voxrecon-chunk") as pool:
            yield pool
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise VoxreconError("the dask runner needs 'distributed': pip install distributed") from err
    if scheduler == "processes":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = Client(scheduler, timeout=30)
    except Exception as err:
        raise VoxreconError(f"--scheduler {scheduler}: no dask scheduler answered there ({type(err).__name__}: {err}); "
                            f"give one of {', '.join(LOCAL_SCHEDULERS)} or the address of a running dask scheduler "
                            "(e.g. tcp://host:8786).") from err
    try:
        yield client
    finally:
        client.close()


def executor_slots(client: Any) -> int:
    """How many chunks ``client`` computes at once (threads of a pool, or of a cluster's workers)."""
    if isinstance(client, ThreadPoolExecutor):
        return int(client._max_workers)
    info = client.scheduler_info()
    return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))


class ChunkedJob:
    """A validated chunked reconstruction of ``input_path`` into the zarr store ``output_path``."""

    def __init__(self, task: str, input_path: str, output_path: str, params: dict[str, Any] | None = None,
                 method: str | None = None, seed: int = 0, device: str = "auto", planes: int = 32, tile: int = 1024) -> None:
        from ..io.lazy import open_lazy
        from .job import resolve_params

        self.task_spec = get_task(task)
        self.method_spec = get_method(task, method)
        self.task, self.method = task, self.method_spec.name
        self.params = resolve_params(self.task_spec, self.method_spec, dict(params or {}))
        self.input_path, self.output_path = str(input_path), str(output_path)
        self.volume = open_lazy(input_path)
        self.task_spec.validate(self.volume.shape, self.params)
        self.seed, self.device = int(seed), device
        self.plan: ChunkPlan = plan_chunks(self.task_spec, self.method_spec, self.params, self.volume.shape, planes, tile)
        self.stats = sample_statistics(self.volume)
        self.outputs = self.method_spec.outputs_for(self.params)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return self.plan.output_shape

    @property
    def output_voxel_size(self) -> tuple[float, float, float]:
        return self.task_spec.output_voxel_size(self.volume.voxel_size, self.params)

    def record(self) -> dict[str, Any]:
        """What identifies this run's output (a resumed run must match it exactly)."""
        return {
            "task": self.task, "method": self.method, "params": dict(sorted(self.params.items())), "seed": self.seed,
            "input_shape": list(self.volume.shape), "input_fingerprint": self.stats["fingerprint"],
            "voxel_size": list(self.volume.voxel_size), "chunked": self.plan.record(),
        }

    def run(self, client: Any = None, cancel: CancelToken | None = None, overwrite: bool = False) -> Iterator[Event]:
        """Compute every chunk not yet recorded as done; yields Notice, Progress and ChunkDone.

        ``client``: a ``distributed.Client`` (None: in this thread). Raises JobCancelled when
        cancelled (finished chunks stay recorded, so the same command resumes).
        """
        from .sinks import ChunkedZarrOutput

        cancel = cancel or CancelToken()
        device, notice = device_for(self.method_spec, self.device)
        if notice:
            yield Notice(notice, "warning")
        if self.method_spec.uses_weights:  # unknown weights fail before any output is created
            from ..weights import resolve_weights

            resolve_weights(self.method_spec.weights_spec(self.params), self.method_spec.weights_method, progress=False)
        out = ChunkedZarrOutput(self.output_path, self.outputs, self.record(), self.output_shape,
                                self.plan.store_chunks, self.output_voxel_size, overwrite=overwrite)
        stores = {n: str(p) for n, p in out.paths.items()}
        spec = ChunkedRun(self.task, self.method, dict(self.params), self.seed, device, str(Path(self.input_path).resolve()),
                          {n: str(Path(p).resolve()) for n, p in stores.items()}, self.stats["window"],
                          tuple(self.volume.voxel_size))
        total = len(self.plan.chunks)
        todo = [c for c in self.plan.chunks if c.index not in out.done]
        if out.resumed:
            yield Notice(f"resuming {self.output_path}: {total - len(todo)} of {total} chunks already done")
        yield Progress(total - len(todo), total, f"{self.task}/{self.method}: {total} chunks")
        told: set[str] = set()
        try:
            for index, notices in self._map(spec, todo, client, cancel):
                for message in notices:
                    if message not in told:
                        told.add(message)
                        yield Notice(message, "warning")
                out.mark(index)
                yield ChunkDone(self.plan.chunks[index].write)
                yield Progress(len(out.done), total, f"chunk {index + 1}/{total}")
            cancel.raise_if_cancelled()
        except BaseException:
            out.abort()
            raise
        out.finish()

    def _map(self, spec: ChunkedRun, todo: list, client: Any, cancel: CancelToken) -> Iterator[tuple[int, list[str]]]:
        """Compute ``todo``'s chunks on ``client`` (see ``dask_client``), yielding each chunk's
        (index, notices) as it finishes, in any order. At most two chunks per slot are submitted
        at a time: memory and scheduler state stay bounded, and a cancel waits for few chunks."""
        if client is None:
            for chunk in todo:
                cancel.raise_if_cancelled()
                yield compute_chunk(spec, chunk)
            return
        if isinstance(client, ThreadPoolExecutor):
            submit = lambda chunk: client.submit(compute_chunk, spec, chunk)  # noqa: E731
            wait = lambda fs: wait_futures(fs, timeout=0.5, return_when=FIRST_COMPLETED)  # noqa: E731
            cancel_all = lambda fs: [f.cancel() for f in fs]  # noqa: E731
        else:
            from distributed import wait as wait_distributed

            submit = lambda chunk: client.submit(compute_chunk, spec, chunk, pure=False)  # noqa: E731

            def wait(fs: set) -> tuple[set, set]:
                try:
                    return wait_distributed(fs, timeout=0.5, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    return set(), fs

            cancel_all = lambda fs: client.cancel(list(fs))  # noqa: E731
        queue = iter(todo)
        in_flight = 2 * executor_slots(client)
        pending = {submit(chunk) for chunk in _take(queue, in_flight)}
        try:
            while pending:
                if cancel.cancelled:
                    raise JobCancelled("cancelled by the user")
                finished, pending = wait(pending)
                for fut in finished:
                    pending |= {submit(chunk) for chunk in _take(queue, 1)}
                    yield fut.result()  # a worker's exception is raised here, as it was raised there
        finally:
            if pending:
                cancel_all(pending)


def _take(it: Iterator[Any], n: int) -> list[Any]:
    return [x for _, x in zip(range(n), it)]


def run_chunked(task: str, input_path: str, output_path: str, params: dict[str, Any] | None = None,
                method: str | None = None, seed: int = 0, device: str = "auto", overwrite: bool = False,
                scheduler: str = "threads", workers: int = 1, planes: int = 32, tile: int = 1024,
                cancel: CancelToken | None = None, on_event: Any = None) -> dict[str, Any]:
    """Prepare and drive one chunked run to completion (library entry point); returns a report."""
    job = ChunkedJob(task, input_path, output_path, params, method, seed, device, planes, tile)
    start = time.perf_counter()
    with dask_client(scheduler, workers) as client:
        for event in job.run(client, cancel, overwrite):
            if on_event is not None:
                on_event(event)
    from .sinks import companion_path

    return {"task": task, "method": job.method, "seconds": time.perf_counter() - start, "shape": job.output_shape,
            "chunks": len(job.plan.chunks),
            "outputs": {n: str(output_path if n == "result" else companion_path(output_path, n)) for n in job.outputs}}
