"""A job: one method applied to one volume, run as a generator of events.

Every front end drives ``Job.run``: the CLI with a progress bar and a sink, the napari widget in
a ``thread_worker`` that forwards slices to a layer, the dask runner per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import InputError, JobCancelled, VoxreconError
from ..io.volume import check_volume
from .cancel import CancelToken
from .device import device_for
from .events import Event, Notice, Progress, SliceResult
from .registry import Method, Task, get_method, get_task


@dataclass
class JobContext:
    """What a method's generator receives."""

    volume: np.ndarray
    voxel_size: tuple[float, float, float]
    params: dict[str, Any]
    task: Task
    method: Method
    output_shape: tuple[int, int, int]
    seed: int
    device: str
    cancel: CancelToken
    skip: frozenset[int] = frozenset()

    def rng(self, offset: int = 0) -> np.random.Generator:
        """A numpy generator derived from the job seed (``offset`` separates streams)."""
        return np.random.default_rng([self.seed, offset])

    def check_cancel(self) -> None:
        self.cancel.raise_if_cancelled()


@dataclass
class Job:
    """A validated request: task, method, input volume, parameters, seed and device."""

    task: str
    volume: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    device: str = "auto"
    #: A chunk of a bigger volume (``chunks.py``) may be all background; a whole stack may not.
    allow_constant: bool = False

    def __post_init__(self) -> None:
        self.task_spec = get_task(self.task)
        self.method_spec = get_method(self.task, self.method)
        self.method = self.method_spec.name
        self.params = resolve_params(self.task_spec, self.method_spec, self.params)
        data = np.asarray(self.volume)
        if data.ndim != 3:
            from ..io.volume import squeeze_to_3d

            data, _ = squeeze_to_3d(data, None, "input")
        check_volume(data, "input", allow_constant=self.allow_constant)
        # A private copy: the caller (or a napari layer) may change its array while the job runs.
        self.volume = np.array(data, dtype=np.float32, order="C", copy=True)
        self.task_spec.validate(tuple(self.volume.shape), self.params)
        self.voxel_size = tuple(float(v) for v in self.voxel_size)  # type: ignore[assignment]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return self.task_spec.output_shape(tuple(self.volume.shape), self.params)

    @property
    def output_voxel_size(self) -> tuple[float, float, float]:
        return self.task_spec.output_voxel_size(self.voxel_size, self.params)

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.method_spec.outputs_for(self.params)

    def record(self) -> dict[str, Any]:
        """What identifies this job's output (stored with zarr outputs for resuming)."""
        import hashlib

        return {
            "task": self.task,
            "method": self.method,
            "params": {k: v for k, v in sorted(self.params.items())},
            "seed": self.seed,
            "input_shape": list(self.volume.shape),
            # Resuming must never mix two inputs of the same shape: the content decides.
            "input_blake2b": hashlib.blake2b(self.volume.tobytes(), digest_size=16).hexdigest(),
            "voxel_size": list(self.voxel_size),
        }

    def run(self, cancel: CancelToken | None = None, skip: frozenset[int] | set[int] = frozenset()) -> Iterator[Event]:
        """Yield events; raises JobCancelled (after the last finished slice) when cancelled."""
        cancel = cancel or CancelToken()
        device, notice = device_for(self.method_spec, self.device)
        if notice:
            yield Notice(notice, "warning")
        ctx = JobContext(
            volume=self.volume,
            voxel_size=self.voxel_size,
            params=dict(self.params),
            task=self.task_spec,
            method=self.method_spec,
            output_shape=self.output_shape,
            seed=int(self.seed),
            device=device,
            cancel=cancel,
            skip=frozenset(skip),
        )
        total = self.output_shape[0]
        done = len(ctx.skip)
        cancel.raise_if_cancelled()
        yield Progress(done, total, f"{self.task}/{self.method}: starting")
        # A method that fits one whole volume (``extra["finish_on_cancel"]``) answers a cancel by
        # stopping its fit and yielding the estimate reached so far; the job then still ends as
        # cancelled, so viewers keep those planes and file sinks do not mark them complete.
        finish = bool(self.method_spec.extra.get("finish_on_cancel"))
        for event in self.method_spec.run(ctx):
            yield event
            if isinstance(event, SliceResult) and event.output == "result":
                done += 1
                yield Progress(done, total, f"plane {event.z + 1}/{total}")
            if not finish:
                cancel.raise_if_cancelled()
        cancel.raise_if_cancelled()


def resolve_params(task: Task, method: Method, given: dict[str, Any]) -> dict[str, Any]:
    """Merge defaults and given values of the task's and the method's parameters, checked."""
    declared = {p.name: p for p in (*task.params, *method.params)}
    unknown = [k for k, v in given.items() if k not in declared and v is not None]
    if unknown:
        allowed = ", ".join(p.flag for p in declared.values()) or "none"
        raise VoxreconError(
            f"method {method.name!r} of task {task.name!r} has no parameter(s) "
            f"{', '.join('--' + k.replace('_', '-') for k in unknown)}; its parameters: {allowed}."
        )
    out: dict[str, Any] = {}
    for name, p in declared.items():
        value = given.get(name)
        out[name] = p.coerce(value) if value is not None else p.default
        if out[name] is None:
            raise VoxreconError(f"{p.flag} is required for task {task.name!r}.")
    return out


def run_job(
    job: Job,
    sinks: dict[str, Any] | None = None,
    cancel: CancelToken | None = None,
    on_event: Callable[[Event], None] | None = None,
    skip: frozenset[int] | set[int] = frozenset(),
) -> dict[str, Any]:
    """Drive a job to completion, writing slices into ``sinks`` (one per output name).

    Without sinks, in-memory numpy sinks are used. Returns the sinks' results (the finished
    arrays for numpy sinks). On cancel or error, sinks are closed unfinished (see sinks.py).
    """
    from .sinks import NumpySink

    if sinks is None:
        sinks = {name: NumpySink(job.output_shape) for name in job.outputs}
    try:
        for event in job.run(cancel, skip):
            if isinstance(event, SliceResult):
                sink = sinks.get(event.output)
                if sink is not None:
                    sink.write(event.z, event.data)
            if on_event is not None:
                on_event(event)
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    return {name: sink.close() for name, sink in sinks.items()}


__all__ = ["Job", "JobContext", "run_job", "resolve_params", "InputError", "JobCancelled"]
