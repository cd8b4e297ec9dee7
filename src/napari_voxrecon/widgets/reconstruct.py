"""The "Reconstruct" dock widget: run any registered method on an image layer, plane by plane.

The form is generated from the method registry (``engine.registry``): the task's parameters and
the chosen method's parameters become magicgui fields, so a newly registered task or method
appears here without touching this file.

Threading: the job (input conversion, validation and the method's generator) runs in a napari
``thread_worker``; every event it yields crosses to the main thread through the worker's
``yielded`` signal, and only there are layers created and written. Cancel sets the job's
``CancelToken`` (checked by the engine after every plane) and asks the worker to quit, so the
run stops within one plane and the partial layer stays consistent (planes not reached are 0).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui import widgets as mgw
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..engine.cancel import CancelToken
from ..engine.device import DEVICES
from ..engine.events import Notice, Progress, SliceResult
from ..engine.registry import Method, Param, Task, get_method, get_task, list_methods
from ..errors import JobCancelled, VoxreconError

if TYPE_CHECKING:
    import napari

    from ..engine.job import Job

log = logging.getLogger(__name__)

#: Key of the layer metadata a sample or simulated layer uses to say how it was acquired.
ACQUISITION_KEY = "voxrecon_acquisition"
#: Key of the metadata the output layers carry (task, method, parameters, completeness).
RESULT_KEY = "voxrecon"

#: Milliseconds between GUI updates while planes stream in.
UI_TICK_MS = 50
_INT_LIMIT = 2**31 - 1
_FLOAT_LIMIT = 1e12


@dataclass(frozen=True)
class JobReady:
    """First event of a run: the validated job, so the main thread can create the layers."""

    job: "Job"


def job_events(
    data: Any,
    task: str,
    method: str,
    params: dict[str, Any],
    voxel_size: tuple[float, float, float],
    seed: int,
    device: str,
    token: CancelToken,
):
    """Worker body (runs in a thread; never touches napari): build the job, then stream it."""
    from ..engine.job import Job

    try:
        # A copy (and a compute for lazy dask/zarr data): the layer may be edited during the run.
        volume = np.array(data, dtype=np.float32)
        job = Job(task, volume, params, method=method, voxel_size=voxel_size, seed=seed, device=device)
        token.raise_if_cancelled()
        yield JobReady(job)
        yield from job.run(token)
    except RuntimeError as err:
        # superqt's worker takes a RuntimeError for "the worker was deleted": it emits neither
        # `errored` nor `finished`, and the widget would wait forever. torch raises
        # RuntimeError for most failures, so pass it on in a wrapper.
        raise WorkerRuntimeError(err) from err


class WorkerRuntimeError(Exception):
    """Carries a RuntimeError out of the worker thread (see ``job_events``)."""

    def __init__(self, original: RuntimeError) -> None:
        super().__init__(str(original))
        self.original = original


def param_widget(p: Param, value: Any) -> mgw.ValueWidget:
    """A magicgui field for a registry parameter (choices, bool, int, float or text)."""
    label = p.name.replace("_", " ")
    opts: dict[str, Any] = {"name": p.name, "tooltip": p.help}
    if p.choices is not None:
        choices = list(p.choices)
        return mgw.ComboBox(value=value if value in choices else choices[0], choices=choices, label=label, **opts)
    if p.type is bool:
        return mgw.CheckBox(value=bool(value), text=label, **opts)
    if p.type is int:
        lo = int(p.min) if p.min is not None else -_INT_LIMIT
        hi = int(p.max) if p.max is not None else _INT_LIMIT
        # A required parameter (default None) starts at its minimum; the user sets it.
        start = int(value) if value is not None else max(lo, 0)
        return mgw.SpinBox(value=min(max(start, lo), hi), min=lo, max=hi, label=label, **opts)
    if p.type is float:
        lo = float(p.min) if p.min is not None else -_FLOAT_LIMIT
        hi = float(p.max) if p.max is not None else _FLOAT_LIMIT
        start = float(value) if value is not None else max(lo, 0.0)
        return mgw.FloatSpinBox(value=min(max(start, lo), hi), min=lo, max=hi, step=_float_step(p, start), label=label, **opts)
    return mgw.LineEdit(value="" if value is None else str(value), label=label, **opts)


def _float_step(p: Param, value: float) -> float:
    """A step that moves the value by a sensible fraction of its range or magnitude."""
    if p.min is not None and p.max is not None and p.max > p.min:
        span = p.max - p.min
    else:
        span = abs(value) * 10 or 1.0
    return float(10 ** np.floor(np.log10(span / 100))) if span > 0 else 0.01


def _disconnect_all(connections: list[tuple[Any, Any]]) -> None:
    for emitter, callback in connections:
        try:
            emitter.disconnect(callback)
        except Exception:  # already gone with its layer
            pass
    connections.clear()


def _key(layer: Image) -> str:
    # Not identity: napari hands plugins a fresh proxy for every access to a layer.
    return str(layer.unique_id)


def layer_volume(layer: Image) -> Any:
    """The full-resolution data of an image layer (level 0 of a multiscale layer)."""
    return layer.data[0] if layer.multiscale else layer.data


class ReconstructWidget(QWidget):
    """Dock widget: input layer, task, method, generated parameters, seed, device, Run/Cancel."""

    #: (output name, z) after a plane was written into its layer (main thread).
    slice_written = Signal(str, int)
    #: "done", "cancelled" or "failed" when a run has ended and the widget is idle again.
    run_finished = Signal(str)

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.outputs: dict[str, Image] = {}
        self.written: dict[str, list[int]] = {}
        self.input_layer: Image | None = None
        self._token: CancelToken | None = None
        self._outcome = "done"
        self._error: str | None = None
        self._job: Job | None = None
        self._t0 = 0.0
        self._layers: list[Image] = []
        self._param_values: dict[str, Any] = {}
        self._params_form: mgw.Container | None = None
        # GUI updates during a run are coalesced to one per tick (see _flush_ui).
        self._ui_timer = QTimer(self)
        self._ui_timer.setSingleShot(True)
        self._ui_timer.setInterval(UI_TICK_MS)
        self._ui_timer.timeout.connect(self._flush_ui)
        self._dirty: set[str] = set()
        self._follow_z: float | None = None
        self._pending_progress: tuple[int, int, str] | None = None
        self._hinted_key: str | None = None
        self._build_ui()
        self._fill_tasks()
        self._connect_viewer()
        self._refresh_layers()
        # If the widget (or napari) closes mid-run, stop the job instead of leaving it running.
        holder = self._cancel_holder = {"token": None}
        self.destroyed.connect(lambda *_: holder["token"] and holder["token"].cancel())

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layer to reconstruct (a 3D Z, Y, X stack).")
        self.task_combo = QComboBox()
        self.method_combo = QComboBox()
        self.method_help = QLabel()
        self.method_help.setWordWrap(True)
        self.method_help.setStyleSheet("color: gray;")
        self.params_box = QGroupBox("Parameters")
        self.params_layout = QVBoxLayout(self.params_box)
        self.params_layout.setContentsMargins(4, 4, 4, 4)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, _INT_LIMIT)
        self.seed_spin.setToolTip("Random seed: same input, method, weights and seed give the same output.")
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.setToolTip(
            "Where neural methods run; 'auto' picks CUDA, then Apple MPS, then the CPU. "
            "A device that is not available falls back to the CPU with a notice."
        )
        self.follow_check = QCheckBox("follow slices")
        self.follow_check.setToolTip("Move napari's z slider to each plane as it is reconstructed.")
        self.follow_check.setChecked(True)
        self.output_label = QLabel()
        self.output_label.setWordWrap(True)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")  # "%v / %m planes" once a run has started
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        form = QFormLayout()
        form.addRow("input", self.layer_combo)
        form.addRow("task", self.task_combo)
        form.addRow("method", self.method_combo)
        form.addRow(self.method_help)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        tail = QFormLayout()
        tail.addRow("seed", self.seed_spin)
        tail.addRow("device", self.device_combo)
        tail.addRow(self.follow_check)
        tail.addRow(self.output_label)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.params_box)
        layout.addLayout(tail)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.task_combo.currentIndexChanged.connect(self._on_task_changed)
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    def _connect_viewer(self) -> None:
        # napari's emitters outlive this widget: connect through a list that is disconnected
        # when the widget is destroyed, so no event reaches a deleted Qt object.
        self._connections: list[tuple[Any, Any]] = []
        connections = self._connections
        self.destroyed.connect(lambda *_: _disconnect_all(connections))
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            self._connect(emitter, self._on_layers_changed)
        for layer in self.viewer.layers:
            self._connect(layer.events.name, self._on_layers_changed)

    def _connect(self, emitter: Any, callback: Any) -> None:
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", None) == "inserted":
            self._connect(event.value.events.name, self._on_layers_changed)
        self._refresh_layers()

    def _refresh_layers(self) -> None:
        """Rebuild the input list, keeping the chosen layer (by identity, names can change)."""
        current = self.selected_layer()
        if current is None:
            active = self.viewer.layers.selection.active
            current = active if isinstance(active, Image) else None
        self._layers = [l for l in self.viewer.layers if isinstance(l, Image)]
        keys = [_key(l) for l in self._layers]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for layer in self._layers:
            self.layer_combo.addItem(layer.name)
        if current is not None and _key(current) in keys:
            self.layer_combo.setCurrentIndex(keys.index(_key(current)))
        elif self._layers:
            self.layer_combo.setCurrentIndex(0)
        self.layer_combo.blockSignals(False)
        self._on_layer_changed()

    def selected_layer(self) -> Image | None:
        i = self.layer_combo.currentIndex() if hasattr(self, "layer_combo") else -1
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_input(self, layer: Image | str) -> None:
        """Choose the input layer (object or name)."""
        target = self.viewer.layers[layer] if isinstance(layer, str) else layer
        self.layer_combo.setCurrentIndex([_key(l) for l in self._layers].index(_key(target)))

    def _on_layer_changed(self, *_: Any) -> None:
        layer = self.selected_layer()
        key = _key(layer) if layer is not None else None
        is_new = key != self._hinted_key
        self._hinted_key = key
        hint = layer.metadata.get(ACQUISITION_KEY) if layer is not None and is_new and not self.running else None
        # A sample or simulated layer says how it was acquired: preselect task and interval
        # (once, when it becomes the input, so the user's later changes are kept).
        if isinstance(hint, dict) and hint.get("task") in self._task_names():
            self._param_values.update(hint.get("params") or {})
            if hint["task"] != self.task_name:
                self.task_combo.setCurrentText(hint["task"])  # rebuilds the form
            else:
                self._rebuild_params()
        self._update_output_label()

    # ------------------------------------------------------------------ task / method / params
    def _task_names(self) -> list[str]:
        from ..engine.registry import TASKS

        list_methods()  # imports the built-in methods, which registers the tasks
        return [name for name in TASKS if list_methods(name)]

    def _fill_tasks(self) -> None:
        from ..engine.registry import TASKS

        self.task_combo.blockSignals(True)
        self.task_combo.clear()
        for i, name in enumerate(self._task_names()):
            self.task_combo.addItem(name)
            self.task_combo.setItemData(i, TASKS[name].help, Qt.ToolTipRole)
        self.task_combo.blockSignals(False)
        self._on_task_changed()

    @property
    def task_name(self) -> str:
        return self.task_combo.currentText()

    @property
    def method_name(self) -> str:
        return self.method_combo.currentText()

    def task_spec(self) -> Task:
        return get_task(self.task_name)

    def method_spec(self) -> Method:
        return get_method(self.task_name, self.method_name)

    def _on_task_changed(self, *_: Any) -> None:
        task = self.task_spec()
        self.task_combo.setToolTip(task.help)
        methods = list_methods(task.name)
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        for i, m in enumerate(methods):
            self.method_combo.addItem(m.name)
            self.method_combo.setItemData(i, m.help, Qt.ToolTipRole)
        names = [m.name for m in methods]
        if task.default_method in names:
            self.method_combo.setCurrentIndex(names.index(task.default_method))
        self.method_combo.blockSignals(False)
        self._on_method_changed()

    def _on_method_changed(self, *_: Any) -> None:
        if not self.method_name:
            return
        m = self.method_spec()
        self.method_combo.setToolTip(m.help)
        extra = " (neural network; uses the device below)" if m.uses_torch else ""
        self.method_help.setText(m.help + extra)
        self.device_combo.setEnabled(m.uses_torch)
        self._rebuild_params()

    def _rebuild_params(self) -> None:
        """Generate the parameter fields of the current task and method from the registry."""
        if not self.method_name:
            return
        if self._params_form is not None:
            # _param_values already holds the fields' values (kept in sync by _on_params_changed).
            self.params_layout.removeWidget(self._params_form.native)
            self._params_form.native.setParent(None)
            self._params_form.native.deleteLater()
        declared = (*self.task_spec().params, *self.method_spec().params)
        fields = [param_widget(p, self._param_values.get(p.name, p.default)) for p in declared]
        self._params_form = mgw.Container(widgets=fields, labels=True)
        self._params_form.changed.connect(self._on_params_changed)
        self.params_layout.addWidget(self._params_form.native)
        self.params_box.setVisible(bool(fields))
        self._update_output_label()

    def _remember_params(self) -> None:
        if self._params_form is not None:
            for w in self._params_form:
                self._param_values[w.name] = w.value

    def _on_params_changed(self, *_: Any) -> None:
        self._remember_params()
        self._update_output_label()

    @property
    def params_form(self) -> mgw.Container:
        """The generated magicgui form (tests and scripts set values through it)."""
        assert self._params_form is not None
        return self._params_form

    def params(self) -> dict[str, Any]:
        """Current parameter values of the task and the method, checked by the registry."""
        from ..engine.job import resolve_params

        given = {w.name: w.value for w in self.params_form}
        return resolve_params(self.task_spec(), self.method_spec(), given)

    def set_params(self, **values: Any) -> None:
        for name, value in values.items():
            self.params_form[name].value = value

    def _update_output_label(self) -> None:
        """Preview of the output grid, or why the current input/parameters cannot work."""
        layer = self.selected_layer()
        if layer is None or self._params_form is None or not self.method_name:
            self.output_label.setText("Add or open an image layer to reconstruct.")
            return
        shape = tuple(s for s in layer_volume(layer).shape)
        squeezed = tuple(s for s in shape if s != 1) if len(shape) > 3 else shape
        if layer.rgb or len(squeezed) != 3:
            self.output_label.setText(f"input: {len(shape)}D layer of shape {shape}; a 3D (Z, Y, X) stack is needed.")
            return
        try:
            params = self.params()
            task = self.task_spec()
            task.validate(squeezed, params)
            out = task.output_shape(squeezed, params)
            vs = task.output_voxel_size(tuple(float(s) for s in layer.scale[-3:]), params)
        except VoxreconError as err:
            self.output_label.setText(str(err))
            return
        self.output_label.setText(
            f"output: {out[0]} x {out[1]} x {out[2]} (Z, Y, X), voxel {vs[0]:.4g} x {vs[1]:.4g} x {vs[2]:.4g}"
        )

    # ------------------------------------------------------------------ run / cancel
    @property
    def running(self) -> bool:
        return self.worker is not None

    def run(self, *_: Any) -> Any:
        """Start the job in a thread worker; returns the worker (None if nothing was started)."""
        if self.running:
            return None
        layer = self.selected_layer()
        if layer is None:
            show_error("Reconstruct: choose an input image layer first (open a file or a sample).")
            return None
        if layer.rgb:
            show_error(f"Reconstruct: {layer.name!r} is an RGB image; a single-channel 3D stack is needed.")
            return None
        try:
            params = self.params()
        except VoxreconError as err:
            show_error(str(err))
            return None
        ndim = layer.ndim
        voxel = tuple(float(s) for s in layer.scale[-3:]) if ndim >= 3 else (1.0, 1.0, 1.0)
        self.input_layer = layer
        self.outputs, self.written = {}, {}
        self._job, self._error, self._outcome = None, None, "done"
        self._token = CancelToken()
        self._cancel_holder["token"] = self._token
        self._t0 = time.perf_counter()
        worker = create_worker(
            job_events,
            layer_volume(layer),
            self.task_name,
            self.method_name,
            params,
            voxel,
            int(self.seed_spin.value()),
            self.device_combo.currentText(),
            self._token,
            _start_thread=False,
            # Handling "errored" here also stops napari from re-raising the error in the GUI.
            _connect={
                "yielded": self._on_event,
                "errored": self._on_errored,
                "aborted": self._on_aborted,
                "finished": self._on_finished,
            },
        )
        self.worker = worker
        self._set_running(True)
        self.status.setText(f"{self.task_name}/{self.method_name}: preparing {layer.name!r}...")
        worker.start()
        return worker

    def cancel(self, *_: Any) -> None:
        """Stop the run after the plane being computed; the partial layer stays."""
        if self._token is not None:
            self._token.cancel()
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelling after the current plane...")
            self.cancel_button.setEnabled(False)

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for w in (self.layer_combo, self.task_combo, self.method_combo, self.params_box, self.seed_spin):
            w.setEnabled(not running)
        try:
            uses_torch = self.method_spec().uses_torch
        except VoxreconError:  # the method was unregistered meanwhile
            uses_torch = True
        self.device_combo.setEnabled(not running and uses_torch)

    # ------------------------------------------------------------------ events (main thread)
    def _on_event(self, event: Any) -> None:
        if isinstance(event, SliceResult):
            self._write_slice(event)
        elif isinstance(event, Progress):
            self._pending_progress = (event.done, event.total, event.message)
            self._schedule_ui()
        elif isinstance(event, Notice):
            (show_warning if event.level == "warning" else show_info)(event.message)
        elif isinstance(event, JobReady):
            self._create_outputs(event.job)

    def _create_outputs(self, job: "Job") -> None:
        """One zeros layer per output on the job's grid, before the first plane arrives."""
        self._job = job
        src = self.input_layer
        assert src is not None
        translate = tuple(float(t) for t in src.translate[-3:]) if src.ndim >= 3 else (0.0, 0.0, 0.0)
        record = {
            "task": job.task,
            "method": job.method,
            "params": dict(job.params),
            "seed": job.seed,
            "input": src.name,
            "complete": False,
            "planes_done": 0,
        }
        for name in job.outputs:
            label = f"{src.name} {job.method}" + ("" if name == "result" else f" {name}")
            kwargs: dict[str, Any] = {}
            if name == "result":
                # Outputs are in the input's intensity units: the input's display settings fit.
                kwargs["colormap"] = src.colormap
                kwargs["contrast_limits"] = tuple(src.contrast_limits)
                kwargs["gamma"] = src.gamma
            layer = self.viewer.add_image(
                np.zeros(job.output_shape, dtype=np.float32),
                name=label,
                scale=job.output_voxel_size,
                translate=translate,
                metadata={RESULT_KEY: {**record, "output": name}},
                **kwargs,
            )
            if name == "result":
                layer.contrast_limits_range = tuple(src.contrast_limits_range)
                layer.contrast_limits = tuple(src.contrast_limits)
            self.outputs[name] = layer
            self.written[name] = []
        self.progress.setRange(0, job.output_shape[0])
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m planes")

    def _write_slice(self, event: SliceResult) -> None:
        layer = self.outputs.get(event.output)
        if layer is None:
            return
        layer.data[event.z] = event.data  # the data are in the layer at once ...
        self.written[event.output].append(int(event.z))
        meta = layer.metadata[RESULT_KEY]
        meta["planes_done"] = len(set(self.written[event.output]))
        if event.output != "result":
            self._widen_contrast(layer, event.data)
        self._dirty.add(event.output)
        if event.output == "result":
            # World z of this plane (napari snaps it to its slider step).
            self._follow_z = float(layer.translate[0] + event.z * layer.scale[0])
        self._schedule_ui()  # ... and on screen within one UI tick
        self.slice_written.emit(event.output, int(event.z))

    def _schedule_ui(self) -> None:
        if not self._ui_timer.isActive():
            self._ui_timer.start()

    def _flush_ui(self) -> None:
        """Show the planes and progress that arrived since the last tick.

        Repainting per plane would make a fast method (hundreds of planes a second) wait for
        the GUI: each refresh re-uploads the texture and QProgressBar.setValue repaints
        synchronously. Updates are coalesced to at most one per tick instead; a slow method
        (one plane per tick or slower) still shows every plane as it arrives.
        """
        self._ui_timer.stop()
        if self._pending_progress is not None:
            done, total, message = self._pending_progress
            self._pending_progress = None
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(done)
            if message and self.running:
                self.status.setText(message)
        if self._follow_z is not None and self.follow_check.isChecked() and self.viewer.dims.ndim >= 3:
            self.viewer.dims.set_point(self.viewer.dims.ndim - 3, self._follow_z)
        self._follow_z = None
        for name in sorted(self._dirty):
            layer = self.outputs.get(name)
            if layer is not None:
                layer.refresh()
        self._dirty.clear()

    @staticmethod
    def _widen_contrast(layer: Image, plane: np.ndarray) -> None:
        """Companion volumes (uncertainty) have their own units: widen limits as planes come."""
        finite = plane[np.isfinite(plane)]
        if finite.size == 0:
            return
        lo, hi = layer.contrast_limits
        done = layer.metadata[RESULT_KEY]["planes_done"]
        new_lo = float(finite.min()) if done <= 1 else min(lo, float(finite.min()))
        new_hi = float(finite.max()) if done <= 1 else max(hi, float(finite.max()))
        if new_hi > new_lo:
            layer.contrast_limits_range = (new_lo, new_hi)
            layer.contrast_limits = (new_lo, new_hi)

    def _on_errored(self, exc: BaseException) -> None:
        if isinstance(exc, WorkerRuntimeError):
            exc = exc.original
        if isinstance(exc, JobCancelled):
            self._outcome = "cancelled"
            return
        self._outcome = "failed"
        if isinstance(exc, VoxreconError):
            self._error = str(exc)
        else:
            # An unexpected failure: the message for the user, the traceback for the log.
            log.error("reconstruction failed", exc_info=exc)
            self._error = f"{type(exc).__name__}: {exc}"
        show_error(f"Reconstruct: {self._error}")

    def _on_aborted(self) -> None:
        self._outcome = "cancelled"

    def _on_finished(self) -> None:
        """Runs after every queued plane was written (signals arrive in order)."""
        self._flush_ui()
        n = len(set(self.written.get("result", [])))
        total = self._job.output_shape[0] if self._job is not None else None
        # "done" only when every plane arrived: a cancel that came after the last plane
        # still leaves a complete volume, and a worker that quit early does not.
        if self._outcome == "failed":
            outcome = "failed"
        elif n == total:
            outcome = "done"
        elif self._outcome == "cancelled" or (self._token is not None and self._token.cancelled):
            outcome = "cancelled"
        else:  # the method's generator ended early: a bug in the method, not in the input
            outcome = "failed"
            self._error = f"the method stopped after {n} of {total} planes without an error."
            show_error(f"Reconstruct: {self._error}")
        complete = outcome == "done"
        if n == 0 and not complete:
            # Nothing was computed (e.g. weights could not be loaded): an all-zero layer would
            # only look like a result, so it goes.
            for layer in self.outputs.values():
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
            self.outputs = {}
        for name, layer in self.outputs.items():
            layer.metadata[RESULT_KEY]["complete"] = complete
            if not complete:
                layer.name = f"{layer.name} (incomplete)"
            elif name != "result":
                layer.reset_contrast_limits()
        seconds = time.perf_counter() - self._t0
        if outcome == "done":
            self.status.setText(f"done: {n} planes in {seconds:.1f} s")
        elif outcome == "cancelled":
            self.status.setText(f"cancelled after {n} planes")
        else:
            self.status.setText(f"failed: {self._error}")
        self.worker = None
        self._token = None
        self._cancel_holder["token"] = None
        self._set_running(False)
        self.run_finished.emit(outcome)
