"""The job engine: one protocol for the napari widget, the CLI and the dask runner."""

from .events import Event, Notice, Preview, Progress, SliceResult
from .cancel import CancelToken
from .registry import Method, Param, Task, get_method, get_task, list_methods, register, TASKS
from .job import Job, run_job

__all__ = [
    "Event", "Notice", "Preview", "Progress", "SliceResult", "CancelToken", "Method", "Param", "Task",
    "get_method", "get_task", "list_methods", "register", "TASKS", "Job", "run_job",
]
