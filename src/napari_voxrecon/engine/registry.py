"""The method registry: ``(task, name) -> Method`` with parameters declared once.

The CLI flags (``cli.py``) and the napari widget fields (``widgets/``) are both generated from
these declarations, so a new method appears in both front ends by registering it here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import VoxreconError


@dataclass(frozen=True)
class Param:
    """One user-facing parameter: becomes ``--name-with-dashes`` and a widget field."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    file_filter: str | None = None  # a path to an existing file: the widget offers a file chooser (e.g. "*.json")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def coerce(self, value: Any) -> Any:
        """Convert and check a value given by a user (string from the CLI or widget value)."""
        if value is None:
            return None
        try:
            if self.type is bool and isinstance(value, str):
                v: Any = _parse_bool(value)
            else:
                v = self.type(value)
        except (TypeError, ValueError):
            expected = "true or false (or yes/no, on/off, 1/0)" if self.type is bool else f"a {self.type.__name__}"
            raise VoxreconError(f"{self.flag}: expected {expected}, got {value!r}.") from None
        if self.choices is not None and v not in self.choices:
            raise VoxreconError(f"{self.flag}: {v!r} is not one of {', '.join(map(str, self.choices))}.")
        if self.min is not None and v < self.min:
            raise VoxreconError(f"{self.flag}: {v} is below the minimum {self.min:g}.")
        if self.max is not None and v > self.max:
            raise VoxreconError(f"{self.flag}: {v} is above the maximum {self.max:g}.")
        return v


_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")


def _parse_bool(text: str) -> bool:
    """A yes/no word; anything else is refused (a typo must not silently turn an option off)."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(text)


def _one(params: dict[str, Any]) -> int:
    return 1


@dataclass(frozen=True)
class Chunking:
    """How a task's volume splits into independent pieces for the chunked runner (``chunks.py``).

    Along z the work falls into *units*: unit u reads input planes [u, u + unit_span) and owns
    output planes [u * f, (u + 1) * f) with f = ``z_factor(params)`` (the last unit also owns any
    trailing output plane, e.g. the sparse task's final acquired plane). Laterally an input pixel
    becomes ``lateral_factor(params)`` output pixels. ``z_halo`` input planes of context are read
    on each side of a chunk and ``lateral_margin`` pixels around each tile, unless a method states
    its own (``Method.extra["z_halo"]``, ``["lateral_margin"]``).
    """

    z_factor: Callable[[dict[str, Any]], int]
    unit_span: int = 1
    lateral_factor: Callable[[dict[str, Any]], int] = _one
    z_halo: int = 1
    lateral_margin: int = 32


@dataclass(frozen=True)
class Task:
    """A reconstruction task: its geometry parameters and how the output grid follows from them.

    ``output_shape(input_shape, params)`` and ``output_voxel_size(voxel_size, params)`` define the
    output grid; ``validate(input_shape, params)`` raises InputError for impossible requests.
    """

    name: str
    help: str
    params: tuple[Param, ...]
    output_shape: Callable[[tuple[int, int, int], dict[str, Any]], tuple[int, int, int]]
    output_voxel_size: Callable[[tuple[float, float, float], dict[str, Any]], tuple[float, float, float]]
    validate: Callable[[tuple[int, int, int], dict[str, Any]], None]
    default_method: str = "linear"
    #: None: the task is one inseparable fit of the whole volume (it runs as a single chunk).
    chunking: Chunking | None = None


@dataclass(frozen=True)
class Method:
    """A reconstruction method of a task.

    ``run(ctx)`` is a generator of events (see ``events.py``); ``ctx`` is a ``JobContext``.
    ``outputs`` lists the volumes it yields slices for ("result" first).
    """

    task: str
    name: str
    help: str
    run: Callable[[Any], Iterator[Any]]
    params: tuple[Param, ...] = ()
    outputs: tuple[str, ...] | Callable[[dict[str, Any]], tuple[str, ...]] = ("result",)
    uses_weights: bool = False
    uses_torch: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: The ``method`` field its weights carry, when it differs from ``name`` (two tasks may
    #: each have a method called ``unet``; their weights must not be mistaken for each other).
    weights_name: str = ""

    @property
    def weights_method(self) -> str:
        return self.weights_name or self.name

    def weights_spec(self, params: dict[str, Any]) -> str | None:
        """The weights a job of this method loads: ``params["weights"]``, where 'default' means
        the method's job-dependent default (``extra["default_weights"](params)``) if it has one."""
        spec = params.get("weights")
        pick = self.extra.get("default_weights")
        if spec in (None, "", "default") and pick is not None:
            return str(pick(params))
        return spec

    def z_halo(self, task: Task) -> int:
        """Input planes of context a chunk needs on each side for this method."""
        return int(self.extra.get("z_halo", task.chunking.z_halo if task.chunking else 0))

    def lateral_margin(self, task: Task) -> int:
        """Input pixels of context a lateral tile needs on each side for this method."""
        return int(self.extra.get("lateral_margin", task.chunking.lateral_margin if task.chunking else 0))

    def outputs_for(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The output volumes this method yields with these parameters ("result" first)."""
        return self.outputs(params) if callable(self.outputs) else self.outputs


TASKS: dict[str, Task] = {}
_METHODS: dict[tuple[str, str], Method] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def register(method: Method) -> Method:
    """Add a method (built-in or from a plugin/test); its task must exist."""
    if method.task not in TASKS:
        _ensure_loaded()
    if method.task not in TASKS:
        raise ValueError(f"unknown task {method.task!r} for method {method.name!r}")
    key = (method.task, method.name)
    if key in _METHODS:
        raise ValueError(f"method {method.name!r} of task {method.task!r} is registered twice")
    _METHODS[key] = method
    return method


def unregister(task: str, name: str) -> None:
    """Remove a method registered at run time (tests, plugins being reloaded)."""
    _METHODS.pop((task, name), None)


def _ensure_loaded() -> None:
    from .. import methods  # noqa: F401  (importing registers the built-in tasks and methods)


def get_task(name: str) -> Task:
    _ensure_loaded()
    if name not in TASKS:
        raise VoxreconError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}.")
    return TASKS[name]


def list_methods(task: str | None = None) -> list[Method]:
    _ensure_loaded()
    return [m for (t, _), m in _METHODS.items() if task is None or t == task]


def get_method(task: str, name: str | None = None) -> Method:
    t = get_task(task)
    name = name or t.default_method
    key = (task, name)
    if key not in _METHODS:
        names = ", ".join(m.name for m in list_methods(task))
        raise VoxreconError(f"unknown method {name!r} for task {task!r}; available: {names}.")
    return _METHODS[key]
