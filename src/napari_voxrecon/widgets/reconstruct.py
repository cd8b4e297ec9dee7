"""The "Reconstruct" dock widget: run any registered method on an image layer, plane by plane.

The form is generated from the method registry (``engine.registry``): the task's parameters and
the chosen method's parameters become magicgui fields, so a newly registered task or method
appears here without touching this file. The one field made by hand is ``weights`` of a method
with ``uses_weights``: an editable list of the weights known here (embedded, cached Hub repos,
folders chosen or fine-tuned in this session) with a Browse… button.

Fine-tuning: for Sparse3Diff a "Fine-tune on this stack" button self-aligns the chosen weights on
the input stack (``finetune.py``), saves them as a new weights folder and selects it.

Threading: the job (input conversion, validation and the method's generator) runs in a napari
``thread_worker``; every event it yields crosses to the main thread through the worker's
``yielded`` signal, and only there are layers created and written. Cancel sets the job's
``CancelToken`` (checked by the engine after every plane) and asks the worker to quit, so the
run stops within one plane and the partial layer stays consistent (planes not reached are 0).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from magicgui import widgets as mgw
from magicgui.backends._qtpy.widgets import QBaseValueWidget  # the Qt backend base magicgui's own fields use
from magicgui.widgets.bases import ValueWidget
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..engine.cancel import CancelToken
from ..engine.device import DEVICES
from ..engine.events import ChunkDone, Notice, Preview, Progress, SliceResult
from ..engine.registry import Method, Param, Task, get_method, get_task, list_methods
from ..errors import JobCancelled, VoxreconError
from ._signals import disconnect_all
from .finetune import (
    FINETUNE_METHODS,
    FinetuneDone,
    FinetuneProgress,
    check_finetune_folder,
    default_finetune_folder,
    finetune_events,
)
from .chunked_run import PREVIEW_MAX, ChunkedReady, chunked_events, layer_file, preview_region
from .loss_curve import LossCurve

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
RUN_TIP = "Reconstruct the whole input stack; planes stream into the output layer as they finish."
_INT_LIMIT = 2**31 - 1
_FLOAT_LIMIT = 1e12
#: Name of the parameter that picks a method's weights (methods with ``uses_weights``).
WEIGHTS_PARAM = "weights"
#: Colormaps of companion outputs: a different one from the result's, so they are never
#: mistaken for it (the uncertainty is a standard deviation, not an intensity).
COMPANION_COLORMAPS = {"uncertainty": "magma"}
#: Outputs in the input's intensity units (the result, a method's prior): shown with the input's
#: display settings, so result and prior compare at a glance; the others get their own limits.
INTENSITY_OUTPUTS = frozenset({"result", "prior"})


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
    region: tuple[slice, slice, slice] | None = None,
):
    """Worker body (runs in a thread; never touches napari): build the job, then stream it.

    ``region``: reconstruct only this input block (a preview), scaled with the whole stack's
    intensity window so it looks like that region of a full run.
    """
    from contextlib import nullcontext

    from ..engine.job import Job
    from ..normalize import whole_volume_window
    from .chunked_run import whole_window

    try:
        window = None
        if region is not None:
            window = whole_window(data)
            data = data[region]  # a lazy layer (zarr, dask) reads only this block
        # A copy (and a compute for lazy dask/zarr data): the layer may be edited during the run.
        volume = np.array(data, dtype=np.float32)
        with whole_volume_window(*window) if window else nullcontext():
            job = Job(task, volume, params, method=method, voxel_size=voxel_size, seed=seed, device=device,
                      allow_constant=region is not None)
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


def finetune_job(*args: Any, **kwargs: Any) -> Iterator[Any]:
    """Worker body of a fine-tune: ``finetune.finetune_events`` with RuntimeErrors wrapped
    (torch raises them; see ``job_events`` for why they must not leave the worker as they are)."""
    try:
        yield from finetune_events(*args, **kwargs)
    except RuntimeError as err:
        raise WorkerRuntimeError(err) from err


# ---------------------------------------------------------------------- the weights field
def known_weights() -> list[dict[str, Any]]:
    """Weights found without network: embedded ones and Hub repos in the local cache."""
    from .. import weights

    try:
        return weights.list_weights()
    except Exception:  # an unreadable cache must not break the form; the user can still type
        log.warning("could not list the known weights", exc_info=True)
        return []


def weights_source(spec: str, method: str, entries: Sequence[dict[str, Any]] = ()) -> str:
    """Where weights ``spec`` would come from for ``method`` (a tooltip; no network, no tensors)."""
    from .. import weights

    text = (spec or "").strip()
    mine = [e for e in entries if e.get("method") == method]
    if text.lower() in ("", "default"):
        default = next((e for e in mine if e.get("source") == "embedded" and e.get("default")), None)
        if default is not None:
            return f"default: the weights embedded for {method}, '{default['name']}' ({default['path']})"
        return (f"default: the weights embedded for {method}; none are installed with this package. "
                "Fine-tune or train weights, Browse… to a weights folder, or type a Hub id org/name@revision.")
    for e in entries:
        if e.get("name") != text:
            continue
        made_for = "" if e.get("method") == method else f" (made for {e.get('method')}, not {method})"
        if e.get("source") == "embedded":
            return f"embedded in the package: {e['path']}{made_for}"
        state = "" if e.get("complete", True) else ", incomplete download"
        return (f"Hugging Face Hub {e.get('repo_id', text)}, cached revision {str(e.get('revision', ''))[:12]}"
                f"{state}: {e['path']}{made_for}")
    folder = Path(os.path.expanduser(text))
    if folder.is_dir():
        try:
            config = weights.read_config(folder)
        except VoxreconError as err:
            return f"local folder {folder}: not usable weights ({err})"
        about = f"local folder {folder}"
        aligned = config.get("self_alignment")
        if isinstance(aligned, dict):
            about += (f", self-aligned on '{aligned.get('stack', '?')}' (interval {aligned.get('interval', '?')}) "
                      f"from '{aligned.get('base_weights', '?')}'")
        if config.get("method") != method:
            about += f"; made for {config.get('method')}, not {method}"
        return about
    if weights.parse_hub_spec(text) is not None:
        return (f"Hugging Face Hub repo {text}: not in the local cache; it is downloaded when the run starts "
                "(network needed; offline, `voxrecon weights pull` it on a connected machine first).")
    return f"'{text}' is not an embedded name, an existing folder or a Hub id org/name[@revision]."


def _folder_method(folder: str) -> str | None:
    """The method a weights folder was made for (None if it cannot be read any more)."""
    from ..weights import read_config

    try:
        return read_config(folder)["method"]
    except VoxreconError:
        return None


class WeightsPicker(QWidget):
    """Qt side of the weights field: an editable list of known weights and a Browse… button.

    Editable so a Hub id (``org/name@rev``) or a path can be typed or pasted as it is.
    """

    valueChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.method = ""
        self.entries: list[dict[str, Any]] = []
        #: Local folders chosen or fine-tuned in this session (shared with the dock widget, so
        #: they stay listed when the form is rebuilt for another method and back).
        self.local: list[str] = []
        self._help = ""
        self.combo = QComboBox()
        self.combo.setEditable(True)
        # Typing must not add items: only weights that exist are listed.
        self.combo.setInsertPolicy(QComboBox.NoInsert)
        # Long paths would otherwise widen the whole dock; the tooltip shows them in full.
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(12)
        self.combo.lineEdit().setPlaceholderText("default, a folder or org/name@revision")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setToolTip("Choose a local weights folder (model.safetensors + config.json).")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.browse_button)
        self.combo.currentTextChanged.connect(self._on_text)
        self.browse_button.clicked.connect(self.browse)

    # magicgui's value protocol (getter, setter and change signal named in _WeightsBackend)
    def value(self) -> str:
        return self.combo.currentText().strip()

    def setValue(self, value: Any) -> None:
        text = "" if value is None else str(value)
        i = self.combo.findText(text)
        if i >= 0:
            self.combo.setCurrentIndex(i)
        else:
            self.combo.setEditText(text)
        self._update_tooltip()

    def setToolTip(self, text: str) -> None:  # noqa: N802 (Qt's name) - magicgui sets the help here
        self._help = text
        super().setToolTip(text)
        self._update_tooltip()

    def choices(self) -> list[str]:
        return [self.combo.itemText(i) for i in range(self.combo.count())]

    def set_choices(self, method: str, entries: Sequence[dict[str, Any]], local: list[str]) -> None:
        """List 'default', then the known weights and the session's folders made for ``method``."""
        self.method, self.entries, self.local = method, list(entries), local
        current = self.value()
        names = ["default"] + [e["name"] for e in self.entries if e.get("method") == method]
        names += [folder for folder in local if _folder_method(folder) == method]
        self.combo.blockSignals(True)
        self.combo.clear()
        for name in dict.fromkeys(names):  # no duplicates, order kept
            self._add_item(name)
        self.combo.blockSignals(False)
        self.setValue(current or "default")

    def add_local(self, folder: str) -> None:
        """Remember a weights folder (first in the session's list) and offer it in the combo."""
        if folder in self.local:
            self.local.remove(folder)
        self.local.insert(0, folder)
        if self.combo.findText(folder) < 0:
            self._add_item(folder)

    def _add_item(self, name: str) -> None:
        self.combo.addItem(name)
        self.combo.setItemData(self.combo.count() - 1, weights_source(name, self.method, self.entries), Qt.ToolTipRole)

    def choose_folder(self, folder: str | os.PathLike[str]) -> bool:
        """Select a local weights folder after checking it serves this method (errors are shown)."""
        from ..weights import validate_weights_folder

        path = Path(folder).expanduser().resolve()
        try:
            validate_weights_folder(path, self.method or None)
        except VoxreconError as err:
            show_error(f"Weights: {err}")
            return False
        self.add_local(str(path))
        self.setValue(str(path))
        return True

    def browse(self, *_: Any) -> None:
        current = Path(os.path.expanduser(self.value()))
        start = current if current.is_dir() else Path.home()
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a weights folder (model.safetensors + config.json)", str(start)
        )
        if folder:
            self.choose_folder(folder)

    def _on_text(self, text: str) -> None:
        self._update_tooltip()
        self.valueChanged.emit(text.strip())

    def _update_tooltip(self) -> None:
        source = weights_source(self.value(), self.method, self.entries) if self.method else ""
        self.combo.setToolTip("\n\n".join(t for t in (source, self._help) if t))


class _WeightsBackend(QBaseValueWidget):
    """magicgui backend of ``WeightsField``: the value is the picker's text."""

    _qwidget: WeightsPicker

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(WeightsPicker, "value", "setValue", "valueChanged", **kwargs)


class WeightsField(ValueWidget[str]):
    """The ``weights`` field of a method with ``uses_weights``, a magicgui value widget like the
    generated fields, so the form, ``params()`` and ``set_params`` treat it like any other."""

    def __init__(self, method: str, value: str = "default", entries: Sequence[dict[str, Any]] = (),
                 local: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(widget_type=_WeightsBackend, **kwargs)
        self.method = method
        self.picker.set_choices(method, entries, local if local is not None else [])
        self.value = value

    @property
    def picker(self) -> WeightsPicker:
        return self.native

    @property
    def choices(self) -> list[str]:
        return self.picker.choices()

    def source(self) -> str:
        """Where the current weights come from (the text of the tooltip)."""
        return weights_source(self.value, self.method, self.picker.entries)


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
        start = min(max(float(value) if value is not None else max(lo, 0.0), lo), hi)
        step = _float_step(p, start)
        box = mgw.FloatSpinBox(value=start, min=lo, max=hi, step=step, label=label, **opts)
        # Qt's default 2 decimals would round a small value away (τ = 0.004 became 0.0):
        # show the value's and the step's significant digits, then set the value again.
        box.native.setDecimals(max(2, _decimals(step), _decimals(start) + 2))
        box.value = start
        return box
    if p.file_filter is not None:  # empty means "not given": nullable, so it never becomes the working folder
        return mgw.FileEdit(mode="r", filter=p.file_filter, nullable=True, value=str(value) if value else None,
                            label=label, **opts)
    return mgw.LineEdit(value="" if value is None else str(value), label=label, **opts)


def field_value(w: mgw.bases.ValueWidget) -> Any:
    """A form field's value as the registry takes it (a file field's path as text, "" when empty)."""
    if isinstance(w, mgw.FileEdit):
        return "" if w.value is None else str(w.value)
    return w.value


def _float_step(p: Param, value: float) -> float:
    """A step that moves the value by a sensible fraction of its range or magnitude."""
    if p.min is not None and p.max is not None and p.max > p.min:
        span = p.max - p.min
    else:
        span = abs(value) * 10 or 1.0
    step = float(10 ** np.floor(np.log10(span / 100))) if span > 0 else 0.01
    if value > 0:  # never a step larger than the value's own order of magnitude
        step = min(step, float(10 ** np.floor(np.log10(value))))
    return step


def _decimals(x: float) -> int:
    """Decimals needed to show the leading digit of ``x``."""
    return 0 if x == 0 else max(0, int(-np.floor(np.log10(abs(x)))))


def _key(layer: Image) -> str:
    # Not identity: napari hands plugins a fresh proxy for every access to a layer.
    return str(layer.unique_id)


def layer_volume(layer: Image) -> Any:
    """The full-resolution data of an image layer (level 0 of a multiscale layer)."""
    return layer.data[0] if layer.multiscale else layer.data


class ReconstructWidget(QWidget):
    """Dock widget: input layer, task, method, generated parameters, seed, device, Run/Cancel;
    for Sparse3Diff also "Fine-tune on this stack" (same progress bar and Cancel)."""

    #: (output name, z) after a plane was written into its layer (main thread).
    slice_written = Signal(str, int)
    #: "done", "cancelled" or "failed" when a run has ended and the widget is idle again.
    run_finished = Signal(str)
    #: "done", "cancelled" or "failed" when a fine-tune has ended and the widget is idle again.
    finetune_finished = Signal(str)

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
        self._region: tuple[slice, slice, slice] | None = None  # the input block of a preview
        self._zarr_path: str | None = None
        self._t0 = 0.0
        self._layers: list[Image] = []
        self._param_values: dict[str, Any] = {}
        # Weights are remembered per method: a folder made for one method is refused by another.
        self._weights_by_method: dict[str, str] = {}
        self._local_weights: list[str] = []  # folders browsed or fine-tuned in this session
        self._params_form: mgw.Container | None = None
        self._mode = "run"  # what the running worker does: "run" or "finetune"
        self._finetune_folder: str | None = None
        self._finetune_overwrite = False
        self._finetune_updates = (0, 0)
        # GUI updates during a run are coalesced to one per tick (see _flush_ui).
        self._ui_timer = QTimer(self)
        self._ui_timer.setSingleShot(True)
        self._ui_timer.setInterval(UI_TICK_MS)
        self._ui_timer.timeout.connect(self._flush_ui)
        self._dirty: set[str] = set()
        self._follow_z: float | None = None
        self._pending_progress: tuple[int, int, str] | None = None
        self._pending_losses: list[float] = []
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
        self.finetune_button = QPushButton("Fine-tune on this stack")
        self.finetune_button.setToolTip(
            "Self-align the weights above on the input stack at this interval (no ground truth "
            "needed: the acquired planes are the targets). Saves a new weights folder and selects "
            "it, so Run then uses the fine-tuned model. Uses the steps and tile above, seed and device below."
        )
        self.finetune_button.setVisible(False)
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
        self.run_button.setToolTip(RUN_TIP)
        self._input_problem: str | None = None  # why Run cannot work now (shown under the form)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.preview_button = QPushButton("Preview view")
        self.preview_button.setToolTip(
            "Reconstruct only the planes around the current one, in the region on screen (at most "
            f"{PREVIEW_MAX} px across): a quick look before a full run of a large stack."
        )
        self.zarr_button = QPushButton("Run to zarr…")
        self.zarr_button.setToolTip(
            "Reconstruct the whole stack chunk by chunk from its file into a zarr store, memory bounded "
            "by a chunk; the output layer fills in as chunks finish. Cancelled or interrupted, the same "
            "run resumes where it stopped."
        )
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")  # "%v / %m planes" once a run has started
        self.loss_curve = LossCurve()  # per-stack fits (INR, diffraction) report their loss
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
        large = QHBoxLayout()
        large.addWidget(self.preview_button)
        large.addWidget(self.zarr_button)
        tail = QFormLayout()
        tail.addRow("seed", self.seed_spin)
        tail.addRow("device", self.device_combo)
        tail.addRow(self.follow_check)
        tail.addRow(self.output_label)

        # Everything in a scroll area: a dock shorter than the form (a long message above Run, a
        # small screen) scrolls instead of squeezing the parameter fields until they overlap.
        self._content = QWidget()
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QFrame.NoFrame)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self._scroll.setWidget(self._content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self._scroll)
        layout = QVBoxLayout(self._content)
        layout.addLayout(form)
        layout.addWidget(self.params_box)
        layout.addWidget(self.finetune_button)
        layout.addLayout(tail)
        layout.addLayout(buttons)
        layout.addLayout(large)
        layout.addWidget(self.progress)
        layout.addWidget(self.loss_curve)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.task_combo.currentIndexChanged.connect(self._on_task_changed)
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.preview_button.clicked.connect(lambda *_: self.preview())
        self.zarr_button.clicked.connect(lambda *_: self.run_to_zarr())
        # Not connected directly: `clicked` would pass its `checked` flag as the folder.
        self.finetune_button.clicked.connect(lambda *_: self.finetune())

    def _connect_viewer(self) -> None:
        # napari's emitters outlive this widget: connect through a list that is disconnected
        # when the widget is destroyed, so no event reaches a deleted Qt object.
        self._connections: list[tuple[Any, Any]] = []
        connections = self._connections
        self.destroyed.connect(lambda *_: disconnect_all(connections))
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            self._connect(emitter, self._on_layers_changed)
        for layer in self.viewer.layers:
            self._connect(layer.events.name, self._on_layers_changed)
            self._connect(layer.events.data, self._on_layer_data)

    def _connect(self, emitter: Any, callback: Any) -> None:
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", None) == "inserted":
            self._connect(event.value.events.name, self._on_layers_changed)
            self._connect(event.value.events.data, self._on_layer_data)
        self._refresh_layers()

    def _on_layer_data(self, event: Any = None) -> None:
        """The input's data were replaced (a new array, maybe of another shape): check it again."""
        if getattr(event, "source", None) is self.selected_layer() and not self.running:
            self._update_output_label()

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
        self.finetune_button.setVisible(self.can_finetune)
        self._rebuild_params()

    @property
    def can_finetune(self) -> bool:
        """Whether the chosen method's weights can be fine-tuned on a stack from here."""
        return (self.task_name, self.method_name) in FINETUNE_METHODS

    def _rebuild_params(self) -> None:
        """Generate the parameter fields of the current task and method from the registry."""
        if not self.method_name:
            return
        if self._params_form is not None:
            # _param_values already holds the fields' values (kept in sync by _on_params_changed).
            self.params_layout.removeWidget(self._params_form.native)
            self._params_form.native.setParent(None)
            self._params_form.native.deleteLater()
        method = self.method_spec()
        declared = (*self.task_spec().params, *method.params)
        entries = known_weights() if method.uses_weights else []
        fields: list[mgw.bases.ValueWidget] = []
        for p in declared:
            if p.name == WEIGHTS_PARAM and method.uses_weights:
                value = self._weights_by_method.get(method.weights_method, p.default)
                fields.append(WeightsField(method.weights_method, value, entries, self._local_weights,
                                           name=p.name, label=p.name, tooltip=p.help))
            else:
                fields.append(param_widget(p, self._param_values.get(p.name, p.default)))
        self._params_form = mgw.Container(widgets=fields, labels=True)
        self._params_form.changed.connect(self._on_params_changed)
        self.params_layout.addWidget(self._params_form.native)
        self.params_box.setVisible(bool(fields))
        self.params_box.updateGeometry()  # the enclosing layouts' cached minimum must follow the new fields
        # the scroll area only scrolls vertically: as wide as the fields need, not a scroll area's default
        self._scroll.setMinimumWidth(self._content.sizeHint().width() + self._scroll.verticalScrollBar().sizeHint().width())
        self._update_output_label()

    def _remember_params(self) -> None:
        if self._params_form is not None:
            for w in self._params_form:
                if isinstance(w, WeightsField):
                    self._weights_by_method[w.method] = w.value
                else:
                    self._param_values[w.name] = field_value(w)

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

        given = {w.name: field_value(w) for w in self.params_form}
        return resolve_params(self.task_spec(), self.method_spec(), given)

    def set_params(self, **values: Any) -> None:
        for name, value in values.items():
            field = self.params_form[name]
            field.value = None if isinstance(field, mgw.FileEdit) and value in ("", None) else value

    def _update_output_label(self) -> None:
        """Preview of the output grid, or why the current input/parameters cannot work.

        In the second case the run buttons are disabled, their tooltip naming the problem: the
        reason is on screen before the click instead of in a notification after it.
        """
        text, problem = self._output_preview()
        self.output_label.setText(text)
        self._input_problem = problem
        self._sync_run_buttons(self.running)

    def _output_preview(self) -> tuple[str, str | None]:
        """(the text under the form, the problem that blocks a run or None)."""
        layer = self.selected_layer()
        if layer is None or self._params_form is None or not self.method_name:
            text = "Add or open an image layer to reconstruct."
            return text, text
        shape = tuple(s for s in layer_volume(layer).shape)
        squeezed = tuple(s for s in shape if s != 1) if len(shape) > 3 else shape
        if layer.rgb or len(squeezed) != 3:
            text = f"input: {len(shape)}D layer of shape {shape}; a 3D (Z, Y, X) stack is needed."
            return text, text
        try:
            params = self.params()
            task = self.task_spec()
            task.validate(squeezed, params)
            out = task.output_shape(squeezed, params)
            vs = task.output_voxel_size(tuple(float(s) for s in layer.scale[-3:]), params)
        except VoxreconError as err:
            return str(err), str(err)
        return (f"output: {out[0]} x {out[1]} x {out[2]} (Z, Y, X), voxel {vs[0]:.4g} x {vs[1]:.4g} x {vs[2]:.4g}",
                None)

    def _sync_run_buttons(self, running: bool) -> None:
        ready = not running and self._input_problem is None
        for button in (self.run_button, self.preview_button, self.zarr_button):
            button.setEnabled(ready)
        self.run_button.setToolTip(RUN_TIP if self._input_problem is None else f"Cannot run: {self._input_problem}")

    # ------------------------------------------------------------------ run / cancel
    @property
    def running(self) -> bool:
        return self.worker is not None

    def run(self, *_: Any, region: tuple[slice, slice, slice] | None = None) -> Any:
        """Start the job in a thread worker; returns the worker (None if nothing was started).

        ``region``: only this input block (``preview``); the output layer sits at its place.
        """
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
        if region is None and ndim >= 3 and self._too_big(layer):
            return None
        self._region = region
        self.outputs, self.written = {}, {}
        self._job = None
        self._pending_losses = []
        self.loss_curve.clear()
        what = "a preview of" if region is not None else ""
        return self._start_worker(
            "run", layer, f"{self.task_name}/{self.method_name}: preparing {what} {layer.name!r}...",
            job_events, layer_volume(layer), self.task_name, self.method_name, params, voxel,
            int(self.seed_spin.value()), self.device_combo.currentText(), self._token_for_start(), region,
            # Handling "errored" here also stops napari from re-raising the error in the GUI.
            connect={"yielded": self._on_event, "errored": self._on_errored, "aborted": self._on_aborted,
                     "finished": self._on_finished},
        )

    def _token_for_start(self) -> CancelToken:
        """A fresh cancel token for the worker about to start (``cancel`` and the engine share it)."""
        self._token = CancelToken()
        self._cancel_holder["token"] = self._token
        return self._token

    def _start_worker(self, mode: str, layer: Image, status: str, func: Any, *args: Any,
                      connect: dict[str, Any], **kwargs: Any) -> Any:
        """Start ``func(*args, **kwargs)`` in a napari thread worker for ``layer`` in ``mode``
        ("run", "zarr" or "finetune"): the one place a worker is made, so every mode gets the
        same state reset, cancel token, button states and status line."""
        self.input_layer = layer
        self._mode = mode
        self._error, self._outcome = None, "done"
        self._t0 = time.perf_counter()
        worker = create_worker(func, *args, _start_thread=False, _connect=connect, **kwargs)
        self.worker = worker
        self._set_running(True)
        if mode == "finetune":
            self.progress.setRange(0, 0)  # busy until the first update says how many there are
            self.progress.setFormat("%v / %m updates")
        self.status.setText(status)
        worker.start()
        return worker

    def _too_big(self, layer: Image) -> bool:
        """A stack too large to copy into memory is refused by Run (with what to do instead)."""
        nbytes = int(np.prod(layer_volume(layer).shape)) * 4
        try:
            import psutil

            budget = psutil.virtual_memory().available // 4
        except ImportError:  # pragma: no cover - psutil comes with distributed
            budget = 4 * 2**30
        if nbytes <= budget:
            return False
        show_error(f"Reconstruct: {layer.name!r} is {nbytes / 2**30:.1f} GiB as float32, more than a quarter of the free "
                   "memory. Use 'Preview view' for a look at the region on screen, then 'Run to zarr…'.")
        return True

    def preview(self) -> Any:
        """Reconstruct the planes around the current one in the region on screen (lazy inputs
        read only that block); returns the worker (None if nothing was started)."""
        layer = self.selected_layer()
        if layer is None or self.running:
            return self.run()
        if layer.ndim != 3:
            show_error(f"Reconstruct: {layer.name!r} is not a 3D (Z, Y, X) stack.")
            return None
        task, method = self.task_spec(), self.method_spec()
        if task.chunking is None:
            show_error(f"Reconstruct: the {task.name} task is one fit of all its images; it has no partial preview. Use Run.")
            return None
        z = int(round(layer.world_to_data(self.viewer.dims.point)[-3]))
        corners = np.asarray(layer.corner_pixels, dtype=float)[:, -2:]
        if not (corners[1] > corners[0]).all():
            corners = None  # not drawn yet: the centre of the stack
        region = preview_region(tuple(layer_volume(layer).shape), z, corners, method.z_halo(task),
                                method.lateral_margin(task), min_planes=task.chunking.unit_span + 1)
        return self.run(region=region)

    def run_to_zarr(self, path: str | os.PathLike[str] | None = None, overwrite: bool = False) -> Any:
        """Reconstruct the whole stack from its file into the zarr store ``path`` (asked for when
        None), chunk by chunk; an unfinished store of the same run is resumed."""
        if self.running:
            return None
        layer = self.selected_layer()
        if layer is None:
            show_error("Reconstruct: choose an input image layer first (open a file or a sample).")
            return None
        try:
            source = layer_file(layer)
            params = self.params()
        except VoxreconError as err:
            show_error(str(err))
            return None
        if path is None:
            from ..io.formats import format_of

            start = str(Path(source).with_name(Path(source).name.split(".")[0] + f"_{self.method_name}.zarr"))
            path, _ = QFileDialog.getSaveFileName(self, "Write the reconstruction to a zarr store", start, "zarr (*.zarr)")
            if not path:
                return None
            if format_of(path) != "zarr":
                path += ".zarr"
        self._region = None
        self.outputs, self.written = {}, {}
        self._job = None
        self.loss_curve.clear()
        return self._start_worker(
            "zarr", layer, f"{self.task_name}/{self.method_name}: preparing a chunked run of {layer.name!r} into {path}...",
            chunked_events, self.task_name, source, str(path), params, self.method_name,
            int(self.seed_spin.value()), self.device_combo.currentText(), self._token_for_start(), overwrite,
            connect={"yielded": self._on_event, "errored": self._on_errored, "aborted": self._on_aborted,
                     "finished": self._on_zarr_finished},
        )

    def cancel(self, *_: Any) -> None:
        """Stop the run after the plane being computed (the partial layer stays), or the
        fine-tune after the current update (nothing is saved)."""
        if self._token is not None:
            self._token.cancel()
        if self.worker is None:
            return
        if self._mode == "finetune":
            # No worker.quit(): the fine-tune must see the token and end by itself, so that
            # it is known for sure whether the weights were saved before the cancel.
            self.status.setText("cancelling after the current update...")
        elif self._mode == "zarr":
            # No quit() either: a quit worker never resumes its generator, so the run could not
            # record its last chunks; the token ends it after the current chunk, progress saved.
            self.status.setText("cancelling after the current chunk...")
        else:
            self.worker.quit()
            self.status.setText("cancelling after the current plane...")
        self.cancel_button.setEnabled(False)

    def _set_running(self, running: bool) -> None:
        self._sync_run_buttons(running)
        self.cancel_button.setEnabled(running)
        for w in (self.layer_combo, self.task_combo, self.method_combo, self.params_box, self.seed_spin,
                  self.finetune_button):
            w.setEnabled(not running)
        try:
            uses_torch = self.method_spec().uses_torch
        except VoxreconError:  # the method was unregistered meanwhile
            uses_torch = True
        self.device_combo.setEnabled(not running and uses_torch)
        # the progress bar while running, the outcome after: keep them on screen in a scrolled dock
        self._scroll.ensureWidgetVisible(self.progress if running else self.status)

    # ------------------------------------------------------------------ events (main thread)
    def _on_event(self, event: Any) -> None:
        if isinstance(event, SliceResult):
            self._write_slice(event)
        elif isinstance(event, Preview):
            self._write_preview(event)
        elif isinstance(event, Progress):
            self._pending_progress = (event.done, event.total, event.message)
            if event.loss is not None:
                self._pending_losses.append(event.loss)
            self._schedule_ui()
        elif isinstance(event, Notice):
            (show_warning if event.level == "warning" else show_info)(event.message)
        elif isinstance(event, JobReady):
            self._create_outputs(event.job)
        elif isinstance(event, ChunkedReady):
            self._open_zarr_outputs(event.job)
        elif isinstance(event, ChunkDone):
            self._dirty.update(self.outputs)
            self._schedule_ui()

    def _create_outputs(self, job: "Job") -> None:
        """One zeros layer per output on the job's grid, before the first plane arrives."""
        self._job = job
        src = self.input_layer
        assert src is not None
        translate = tuple(float(t) for t in src.translate[-3:]) if src.ndim >= 3 else (0.0, 0.0, 0.0)
        region = self._region
        if region is not None:  # a preview sits where its block is in the stack
            translate = tuple(t + r.start * s for t, r, s in zip(translate, region, src.scale[-3:]))
        record = {
            "task": job.task,
            "method": job.method,
            "params": dict(job.params),
            "seed": job.seed,
            "input": src.name,
            "complete": False,
            "planes_done": 0,
        }
        if region is not None:
            record["region"] = [[r.start, r.stop] for r in region]
        # The result first: napari stacks new layers on top, so companions (uncertainty) lie
        # above the result and are seen as they stream in; hiding one shows the other.
        for name in sorted(job.outputs, key=lambda n: n != "result"):
            label = f"{src.name} {job.method}" + ("" if name == "result" else f" {name}")
            label += " preview" if region is not None else ""
            kwargs: dict[str, Any] = {}
            if name in INTENSITY_OUTPUTS:
                # Outputs are in the input's intensity units: the input's display settings fit.
                kwargs["colormap"] = src.colormap
                kwargs["contrast_limits"] = tuple(src.contrast_limits)
                kwargs["gamma"] = src.gamma
            else:
                kwargs["colormap"] = COMPANION_COLORMAPS.get(name, "gray")
            layer = self.viewer.add_image(
                np.zeros(job.output_shape, dtype=np.float32),
                name=label,
                scale=job.output_voxel_size,
                translate=translate,
                metadata={RESULT_KEY: {**record, "output": name}},
                **kwargs,
            )
            if name in INTENSITY_OUTPUTS:
                layer.contrast_limits_range = tuple(src.contrast_limits_range)
                layer.contrast_limits = tuple(src.contrast_limits)
            self.outputs[name] = layer
            self.written[name] = []
        self.progress.setRange(0, job.output_shape[0])
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m planes")

    def _open_zarr_outputs(self, job: Any) -> None:
        """Layers over the stores of a chunked run: read from disk (never whole in memory), so
        refreshing one shows the chunks finished so far."""
        import zarr

        src = self.input_layer
        assert src is not None
        translate = tuple(float(t) for t in src.translate[-3:])
        self._zarr_path = job.output_path
        from ..engine.sinks import companion_path

        for name in sorted(job.outputs, key=lambda n: n != "result"):
            store = job.output_path if name == "result" else str(companion_path(job.output_path, name))
            data = zarr.open_group(store, mode="r")["0"]
            kwargs: dict[str, Any] = {}
            if name in INTENSITY_OUTPUTS:
                kwargs.update(colormap=src.colormap, contrast_limits=tuple(src.contrast_limits), gamma=src.gamma)
            else:
                kwargs["colormap"] = COMPANION_COLORMAPS.get(name, "gray")
            label = f"{src.name} {job.method}" + ("" if name == "result" else f" {name}") + " (zarr)"
            meta = {RESULT_KEY: {"task": job.task, "method": job.method, "params": dict(job.params), "seed": job.seed,
                                 "input": src.name, "output": name, "store": store, "complete": False}}
            self.outputs[name] = self.viewer.add_image(data, name=label, scale=job.output_voxel_size,
                                                       translate=translate, metadata=meta, **kwargs)
        self.progress.setFormat("%v / %m chunks")

    def _on_zarr_finished(self) -> None:
        """End of a chunked run: the store is complete, or resumable after a cancel or failure."""
        self._flush_ui()
        seconds = time.perf_counter() - self._t0
        progress = None
        if self._zarr_path is not None:
            from ..io.zarr_store import zarr_progress

            progress = zarr_progress(self._zarr_path)
        complete = bool(progress and progress.get("complete"))
        done = len(progress.get("chunks_done", [])) if progress else 0
        total = (progress or {}).get("job", {}).get("chunked", {}).get("count", 0)
        if complete:
            outcome = "done"
            self.status.setText(f"done: {total} chunks in {seconds:.1f} s, written to {self._zarr_path}")
        elif self._outcome == "failed":
            outcome = "failed"
            self.status.setText(f"failed: {self._error}" + (f" ({done} of {total} chunks kept; run again to resume)" if done else ""))
        else:
            outcome = "cancelled"
            self.status.setText(f"cancelled after {done} of {total} chunks; 'Run to zarr…' on the same store resumes")
        for layer in self.outputs.values():
            layer.metadata[RESULT_KEY]["complete"] = complete
            if not complete:
                layer.name = f"{layer.name} (incomplete)"
            layer.refresh()
        self.worker = None
        self._token = None
        self._cancel_holder["token"] = None
        self._zarr_path = None
        self._set_running(False)
        self.run_finished.emit(outcome)

    def _write_slice(self, event: SliceResult) -> None:
        layer = self.outputs.get(event.output)
        if layer is None:
            return
        layer.data[event.z] = event.data  # the data are in the layer at once ...
        self.written[event.output].append(int(event.z))
        meta = layer.metadata[RESULT_KEY]
        meta["planes_done"] = len(set(self.written[event.output]))
        if event.output not in INTENSITY_OUTPUTS:
            self._widen_contrast(layer, event.data)
        self._dirty.add(event.output)
        if event.output == "result":
            # World z of this plane (napari snaps it to its slider step).
            self._follow_z = float(layer.translate[0] + event.z * layer.scale[0])
        self._schedule_ui()  # ... and on screen within one UI tick
        self.slice_written.emit(event.output, int(event.z))

    def _write_preview(self, event: Preview) -> None:
        """Show a provisional volume (e.g. the INR while it is fitted) in the planes of its
        output that are not final yet; planes already final stay."""
        layer = self.outputs.get(event.output)
        if layer is None or tuple(event.data.shape) != tuple(layer.data.shape):
            return
        final = set(self.written[event.output])
        if final:
            keep = np.array(sorted(final))
            saved = layer.data[keep].copy()
            layer.data[...] = event.data
            layer.data[keep] = saved
        else:
            layer.data[...] = event.data
        if event.output not in INTENSITY_OUTPUTS:
            self._widen_contrast(layer, event.data)
        self._dirty.add(event.output)
        self._schedule_ui()

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
        if self._pending_losses:
            self.loss_curve.extend(self._pending_losses)
            self._pending_losses = []
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

    @staticmethod
    def _fit_contrast(layer: Image, max_samples: int = 2_000_000) -> None:
        """Contrast of a finished companion volume from all of its planes.

        Not napari's ``reset_contrast_limits``: it looks at the plane on screen, after a run the
        last one, an acquired plane whose uncertainty is 0 (the limits became 0..1 and the
        volume showed saturated). The upper limit is the 99.5th percentile, because a spread
        has a long tail that would leave most of the volume dark. Only the lateral axes are
        subsampled (a z stride could land on acquired planes only).
        """
        data = np.asarray(layer.data)
        step = max(1, int(np.ceil(np.sqrt(data.size / max_samples))))
        sample = data[..., ::step, ::step]
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return
        lo, hi = float(sample.min()), float(sample.max())
        top = float(np.percentile(sample, 99.5))
        if top <= lo:
            top = hi
        if top > lo:
            # The range keeps the extremes seen while streaming, so the slider reaches them all.
            range_lo, range_hi = layer.contrast_limits_range
            layer.contrast_limits_range = (min(lo, range_lo), max(hi, range_hi))
            layer.contrast_limits = (lo, top)

    def _on_errored(self, exc: BaseException) -> None:
        self._report_failure(exc, "Reconstruct")

    def _report_failure(self, exc: BaseException, what: str) -> None:
        """Record a worker's failure (or cancel) and tell the user; shared by run and fine-tune."""
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
            log.error("%s failed", what, exc_info=exc)
            self._error = f"{type(exc).__name__}: {exc}"
        show_error(f"{what}: {self._error}")

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
            elif name not in INTENSITY_OUTPUTS:
                self._fit_contrast(layer)
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

    # ------------------------------------------------------------------ fine-tune
    def finetune(self, folder: str | os.PathLike[str] | None = None, overwrite: bool = False) -> Any:
        """Self-align the chosen weights on the input stack in a thread worker, then select them.

        ``folder``: where the fine-tuned weights go; None asks with a dialog (proposing a new
        ``~/voxrecon-weights/<layer>-aligned``). A folder that already holds files is refused
        unless ``overwrite`` (the dialog asks before setting it). Returns the worker, or None
        if nothing was started (the reason is shown as a napari notification).
        """
        if self.running:
            return None
        if not self.can_finetune:
            show_error(f"Fine-tune: method {self.method_name!r} cannot be fine-tuned here; choose sparse3diff.")
            return None
        layer = self.selected_layer()
        if layer is None:
            show_error("Fine-tune: choose the input stack (an image layer) first.")
            return None
        try:
            shape = self._input_shape(layer)
            params = self.params()
            self.task_spec().validate(shape, params)
            if shape[0] < 3:
                raise VoxreconError(
                    f"{layer.name!r} has {shape[0]} planes; self-alignment needs at least 3 (a reference "
                    "plane with an acquired neighbour on each side)."
                )
        except VoxreconError as err:
            show_error(f"Fine-tune: {err}")
            return None
        if folder is None:
            chosen = self._ask_finetune_folder(layer.name)
            if chosen is None:  # the user closed the dialog
                return None
            folder, overwrite = chosen
        try:
            target = check_finetune_folder(folder, overwrite)
        except VoxreconError as err:
            show_error(f"Fine-tune: {err}")
            return None

        self._finetune_folder, self._finetune_overwrite = None, bool(overwrite)
        self._finetune_updates = (0, 0)
        return self._start_worker(
            "finetune", layer, f"fine-tuning on {layer.name!r}: loading the weights and inferring the first planes...",
            finetune_job, layer_volume(layer), int(params["interval"]), str(target),
            str(params.get(WEIGHTS_PARAM) or "default"), self.device_combo.currentText(), self._token_for_start(),
            overwrite=bool(overwrite),
            source_name=layer.name,
            # Not the form's steps: self-alignment infers its pseudo-data with its own, sharper
            # sampler setting (models/self_alignment.py says why).
            tile=int(params.get("tile", 256)),
            seed=int(self.seed_spin.value()),
            connect={"yielded": self._on_finetune_event, "errored": self._on_finetune_errored,
                     "finished": self._on_finetune_finished},
        )

    def _input_shape(self, layer: Image) -> tuple[int, int, int]:
        """The (Z, Y, X) shape of a layer's stack (singleton axes dropped), or a VoxreconError."""
        shape = tuple(int(s) for s in layer_volume(layer).shape)
        squeezed = tuple(s for s in shape if s != 1) if len(shape) > 3 else shape
        if layer.rgb or len(squeezed) != 3:
            raise VoxreconError(
                f"{layer.name!r} is a {len(shape)}D layer of shape {shape}; a 3D (Z, Y, X) stack is needed."
            )
        return squeezed  # type: ignore[return-value]

    def _ask_finetune_folder(self, layer_name: str) -> tuple[str, bool] | None:
        """Ask where to save; (folder, overwrite) or None. Never overwrites without asking."""
        proposal = default_finetune_folder(layer_name)
        # A save dialog, not a folder picker: the proposed folder does not exist yet.
        folder, _ = QFileDialog.getSaveFileName(
            self, "Save the fine-tuned weights as a new folder", str(proposal), "",
            options=QFileDialog.DontConfirmOverwrite,  # asked below, with what would be lost
        )
        if not folder:
            return None
        path = Path(folder)
        if path.is_dir() and any(path.iterdir()):
            answer = QMessageBox.question(
                self, "Replace the folder's contents?",
                f"{path} already holds files.\n\nReplace them with the fine-tuned weights?",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No,
            )
            if answer != QMessageBox.Yes:
                return None
            return folder, True
        return folder, False

    def _on_finetune_event(self, event: Any) -> None:
        if isinstance(event, FinetuneProgress):
            self._finetune_updates = (event.update, event.total)
            self._pending_progress = (
                event.update, event.total,
                f"fine-tuning: update {event.update}/{event.total} (reference plane {event.reference}), "
                f"loss {event.loss:.4g}",
            )
            self._schedule_ui()
        elif isinstance(event, FinetuneDone):
            self._finetune_folder = event.folder
        elif isinstance(event, Notice):
            (show_warning if event.level == "warning" else show_info)(event.message)

    def _on_finetune_errored(self, exc: BaseException) -> None:
        self._report_failure(exc, "Fine-tune")

    def _on_finetune_finished(self) -> None:
        self._flush_ui()
        done, total = self._finetune_updates
        seconds = time.perf_counter() - self._t0
        folder = self._finetune_folder
        if folder is not None:
            # Saved, even if a cancel came during the save: the folder is complete and usable.
            outcome = "done"
            if self._finetune_overwrite:
                # Models are cached by weights spec: the old contents of this folder must not
                # be reused by the next run.
                from ..models.loading import clear_cache

                clear_cache()
            self._select_weights(folder)
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(total)
            self.status.setText(f"fine-tuned: {done} updates in {seconds:.1f} s; weights saved to {folder} "
                                "and selected: press Run to use them")
            show_info(f"Fine-tuned weights saved to {folder} and selected.")
        elif self._outcome == "failed":
            outcome = "failed"
            self.status.setText(f"fine-tune failed: {self._error}")
        else:
            outcome = "cancelled"
            self.status.setText(f"fine-tune cancelled after {done} of {total or '?'} updates; nothing was saved")
        if outcome != "done":
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("")
        self.worker = None
        self._token = None
        self._cancel_holder["token"] = None
        self._mode = "run"
        self._set_running(False)
        self.finetune_finished.emit(outcome)

    def _select_weights(self, folder: str) -> None:
        """Offer ``folder`` in the weights field and select it (the form is Sparse3Diff's: the
        method could not change during the fine-tune)."""
        form = self._params_form if self._params_form is not None else []
        field = next((w for w in form if isinstance(w, WeightsField)), None)
        if field is not None:
            field.picker.add_local(folder)  # also lists it in self._local_weights (shared)
            field.value = folder  # remembered per method through the form's `changed`
        else:
            if folder in self._local_weights:
                self._local_weights.remove(folder)
            self._local_weights.insert(0, folder)
            self._weights_by_method[self.method_name] = folder
