"""The "Orthogonal views" dock widget: XY, XZ and YZ views of several layers at one 3D cursor.

napari has no built-in orthogonal views (napari issue 662). This widget paints numpy slices
with QPainter: no extra OpenGL canvases, fast to update and easy to test.

Everything happens in world coordinates (micrometres), so layers on different grids line up —
e.g. a sparse input with 4x coarser z and its reconstruction. The chosen layers define one
shared grid: the union of their extents sampled at the finest voxel size along each axis. Every
view samples its layer on that grid by nearest neighbour, so a coarse input shows its real
stair-steps in XZ/YZ next to the smooth reconstruction. With "upsample to the finest grid" off,
a coarse layer shows only the grid cells that hold one of its own voxel centres: the acquired
planes appear as thin lines with gaps between them, which is what was actually measured.
All views share one zoom in screen pixels per micrometre, so aspect ratios are physical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from qtpy.QtCore import QPointF, QRectF, QSize, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPen
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ._signals import disconnect_all

if TYPE_CHECKING:
    import napari

AXES = "zyx"
#: view name -> (row axis, column axis, axis through the view) with 0 = z, 1 = y, 2 = x.
VIEWS: dict[str, tuple[int, int, int]] = {"xy": (1, 2, 0), "xz": (0, 2, 1), "yz": (0, 1, 2)}
MAX_AUTO_CHECKED = 4
_BACKGROUND = (28, 32, 48)  # "no data here": distinct from black (intensity at the lower limit)
_CROSSHAIR = QColor(255, 200, 0, 190)


@dataclass
class Grid:
    """The shared world grid: point i of axis a lies at ``lo[a] + i * step[a]`` (µm)."""

    lo: np.ndarray
    step: np.ndarray
    n: np.ndarray

    @classmethod
    def covering(cls, layers: list[Image]) -> "Grid":
        scales = np.array([_spatial(l.scale) for l in layers], dtype=np.float64)
        starts = np.array([_spatial(l.translate) for l in layers], dtype=np.float64)
        shapes = np.array([_spatial(_volume(l).shape) for l in layers], dtype=np.float64)
        step = scales.min(axis=0)
        lo = starts.min(axis=0)
        hi = (starts + (shapes - 1) * scales).max(axis=0)
        n = np.rint((hi - lo) / step).astype(int) + 1
        return cls(lo, step, n)

    def coords(self, axis: int) -> np.ndarray:
        return self.lo[axis] + np.arange(self.n[axis]) * self.step[axis]

    def extent(self, axis: int) -> float:
        """World length covered by the grid's pixels (half a pixel beyond each end point)."""
        return float(self.n[axis] * self.step[axis])

    def snap(self, point: np.ndarray) -> np.ndarray:
        """Nearest grid point (so crosshairs run through pixel centres)."""
        i = np.clip(np.rint((np.asarray(point, float) - self.lo) / self.step), 0, self.n - 1)
        return self.lo + i * self.step


def _spatial(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in tuple(values)[-3:])


def _volume(layer: Image) -> Any:
    return layer.data[0] if layer.multiscale else layer.data


def layer_key(layer: Any) -> str:
    """A stable identity for a layer. Not ``id()``: napari hands plugins a fresh proxy object
    for every access to a layer, while events carry the layer itself."""
    return str(layer.unique_id)


def is_volume_layer(layer: Any) -> bool:
    """3D single-channel image layers are the ones that have orthogonal views."""
    return isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb


class LayerSampler:
    """Samples one layer on the shared grid by nearest neighbour, in world coordinates."""

    def __init__(self, layer: Image) -> None:
        self.layer = layer
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    @property
    def scale(self) -> np.ndarray:
        return np.array(_spatial(self.layer.scale))

    @property
    def translate(self) -> np.ndarray:
        return np.array(_spatial(self.layer.translate))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in _volume(self.layer).shape)  # type: ignore[return-value]

    def invalidate(self) -> None:
        self._cache.clear()

    def indices(self, axis: int, world: np.ndarray, grid: Grid, upsample: bool) -> tuple[np.ndarray, np.ndarray]:
        """Voxel indices nearest to ``world`` along ``axis`` and where they are valid."""
        s, t = self.scale[axis], self.translate[axis]
        # Nearest voxel, ties to the lower one (as the sparse "nearest" method does), so the
        # stair-steps of a coarse layer are symmetric and do not depend on banker's rounding.
        idx = np.ceil((np.asarray(world, float) - t) / s - 0.5 - 1e-6).astype(int)
        valid = (idx >= 0) & (idx < self.shape[axis])
        if not upsample:
            # Only grid cells that contain one of this layer's voxel centres: a coarse layer
            # shows its real planes instead of stretching them over the gaps.
            centre = t + idx * s
            valid &= np.abs(np.asarray(world, float) - centre) <= grid.step[axis] / 2 * (1 + 1e-6)
        return np.clip(idx, 0, self.shape[axis] - 1), valid

    def sample_view(self, view: str, cursor: np.ndarray, grid: Grid, upsample: bool) -> np.ndarray:
        """The view's image on the grid: float32, NaN where the layer has no data."""
        r, c, normal = VIEWS[view]
        i_n, ok_n = self.indices(normal, np.array([cursor[normal]]), grid, upsample)
        ir, okr = self.indices(r, grid.coords(r), grid, upsample)
        ic, okc = self.indices(c, grid.coords(c), grid, upsample)
        out = np.full((grid.n[r], grid.n[c]), np.nan, dtype=np.float32)
        if not ok_n[0]:
            return out
        slab = self._slab_cached(view, int(i_n[0]))
        # The slab's axes are (r, c) in the layer's order since r < c for every view.
        img = slab[np.ix_(ir, ic)].astype(np.float32, copy=False)
        mask = np.outer(okr, okc)
        out[mask] = img[mask]
        return out

    def _slab_cached(self, view: str, index: int) -> np.ndarray:
        """The layer's own 2D slice through ``index`` along the view's normal.

        numpy data are sliced afresh every time (a view: cheap, and planes a running
        reconstruction writes in place show up at once). Lazy data (dask/zarr) are read once
        per (view, index): an XZ slice of a zarr store touches every plane's chunk.
        """
        data = _volume(self.layer)
        sl: list[Any] = [slice(None)] * 3
        sl[VIEWS[view][2]] = index
        if isinstance(data, np.ndarray):
            return data[tuple(sl)]
        # One cached slab per view: moving the cursor in XY must not evict the XZ slab.
        key = (view, index)
        hit = self._cache.get(key)
        if hit is None:
            for k in [k for k in self._cache if k[0] == view]:
                del self._cache[k]
            hit = self._cache[key] = np.asarray(data[tuple(sl)])
        return hit

    def value_at(self, cursor: np.ndarray, grid: Grid, upsample: bool) -> tuple[tuple[int, int, int], float] | None:
        """The voxel shown at the cursor and its value, or None outside the layer."""
        idx = []
        for a in range(3):
            i, ok = self.indices(a, np.array([cursor[a]]), grid, upsample)
            if not ok[0]:
                return None
            idx.append(int(i[0]))
        value = float(np.asarray(_volume(self.layer)[tuple(idx)]))
        return (idx[0], idx[1], idx[2]), value


def to_rgb(image: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """Grey levels through the contrast limits; NaN (no data) in the background colour."""
    lo, hi = float(limits[0]), float(limits[1])
    span = hi - lo if hi > lo else 1.0
    nan = np.isnan(image)
    grey = np.clip((np.nan_to_num(image, nan=lo) - lo) / span, 0.0, 1.0)
    grey = (grey * 255.0 + 0.5).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[nan] = _BACKGROUND
    return np.ascontiguousarray(rgb)


class SliceView(QWidget):
    """One view (XY, XZ or YZ) of one layer: image, crosshair, click/drag to move the cursor."""

    #: (row axis, row world coordinate, column axis, column world coordinate)
    picked = Signal(int, float, int, float)
    #: (normal axis, +1/-1): the wheel steps the cursor through the view
    stepped = Signal(int, int)
    #: +1 / -1: Ctrl+wheel zooms
    zoomed = Signal(int)

    def __init__(self, view: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = view
        self.row_axis, self.col_axis, self.normal_axis = VIEWS[view]
        self.image: np.ndarray | None = None  # the sampled float image (tests read it)
        self._qimage: QImage | None = None
        self._rgb: np.ndarray | None = None
        self.grid: Grid | None = None
        self.cursor = np.zeros(3)
        self.zoom = 1.0
        self.caption = ""
        self.setMouseTracking(False)
        self.setCursor(Qt.CrossCursor)
        self.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Fixed)

    def set_geometry(self, grid: Grid, zoom: float) -> None:
        self.grid, self.zoom = grid, zoom
        self.setFixedSize(self.sizeHint())

    def sizeHint(self) -> QSize:
        if self.grid is None:
            return QSize(64, 64)
        w = self.grid.extent(self.col_axis) * self.zoom
        h = self.grid.extent(self.row_axis) * self.zoom
        return QSize(max(8, int(round(w))), max(8, int(round(h))))

    def set_image(self, image: np.ndarray, limits: tuple[float, float], cursor: np.ndarray, caption: str) -> None:
        self.image = image
        self._rgb = to_rgb(image, limits)
        h, w = self._rgb.shape[:2]
        self._qimage = QImage(self._rgb.data, w, h, 3 * w, QImage.Format_RGB888)  # shares self._rgb
        self.cursor = np.asarray(cursor, float).copy()
        self.caption = caption
        self.update()

    # world <-> widget pixels -------------------------------------------------
    def _to_px(self, axis: int, world: float) -> float:
        assert self.grid is not None
        return (world - (self.grid.lo[axis] - self.grid.step[axis] / 2)) * self.zoom

    def _to_world(self, axis: int, px: float) -> float:
        assert self.grid is not None
        return px / self.zoom + self.grid.lo[axis] - self.grid.step[axis] / 2

    def pixel_of(self, point: np.ndarray) -> tuple[float, float]:
        """Widget (x, y) of a world point (its in-plane coordinates)."""
        return self._to_px(self.col_axis, point[self.col_axis]), self._to_px(self.row_axis, point[self.row_axis])

    # Qt events ---------------------------------------------------------------
    def paintEvent(self, event: Any) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(*_BACKGROUND))
        if self._qimage is not None:
            # No smoothing: each grid pixel is a crisp block, so stair-steps stay visible.
            p.setRenderHint(QPainter.SmoothPixmapTransform, False)
            p.drawImage(QRectF(0, 0, self.width(), self.height()), self._qimage)
        if self.grid is not None:
            x, y = self.pixel_of(self.cursor)
            pen = QPen(_CROSSHAIR)
            pen.setWidthF(1.0)
            p.setPen(pen)
            p.drawLine(QPointF(x, 0), QPointF(x, self.height()))
            p.drawLine(QPointF(0, y), QPointF(self.width(), y))
        if self.caption:
            font = QFont(p.font())
            font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
            p.setFont(font)
            p.setPen(QColor(0, 0, 0, 160))
            p.drawText(QPointF(5, 13), self.caption)
            p.setPen(QColor(235, 235, 235))
            p.drawText(QPointF(4, 12), self.caption)
        p.end()

    def _pick(self, pos: Any) -> None:
        if self.grid is None:
            return
        col = self._to_world(self.col_axis, float(pos.x()))
        row = self._to_world(self.row_axis, float(pos.y()))
        self.picked.emit(self.row_axis, row, self.col_axis, col)

    def mousePressEvent(self, event: Any) -> None:
        if event.button() == Qt.LeftButton:
            self._pick(event.pos())

    def mouseMoveEvent(self, event: Any) -> None:
        if event.buttons() & Qt.LeftButton:
            self._pick(event.pos())

    def wheelEvent(self, event: Any) -> None:
        delta = event.angleDelta().y()
        if delta == 0:
            return event.ignore()
        direction = 1 if delta > 0 else -1
        if event.modifiers() & Qt.ControlModifier:
            self.zoomed.emit(direction)
        else:
            self.stepped.emit(self.normal_axis, -direction)
        event.accept()


@dataclass
class Column:
    """The three views of one layer with its title and value read-out."""

    sampler: LayerSampler
    title: QLabel
    views: dict[str, SliceView]
    value: QLabel
    widgets: list[QWidget] = field(default_factory=list)


class OrthoViewWidget(QWidget):
    """Dock widget: choose layers; each gets a column of XY, XZ and YZ views at one cursor."""

    #: the world cursor (z, y, x) after every move
    cursor_changed = Signal(object)

    def __init__(self, napari_viewer: "napari.viewer.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.columns: dict[str, Column] = {}  # layer_key(layer) -> column, in the list's order
        self.grid: Grid | None = None
        self.cursor = np.zeros(3)
        self.zoom = 1.0
        self._auto_fit = True
        self._pushing_to_viewer = False
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(30)
        self._redraw_timer.timeout.connect(self._redraw)
        self._build_ui()
        self._connect_viewer()
        self._refresh_list(initial=True)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.layer_list = QListWidget()
        self.layer_list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.layer_list.setDragDropMode(QAbstractItemView.InternalMove)  # drag to reorder columns
        self._updating_list = False
        self.layer_list.setToolTip(
            "Tick two or more 3D image layers to compare them at one 3D cursor; drag to reorder the columns."
        )
        self.layer_list.setMaximumHeight(96)
        self.sync_check = QCheckBox("sync with viewer")
        self.sync_check.setToolTip("Follow napari's z slider, and move it when the cursor moves.")
        self.sync_check.setChecked(True)
        self.upsample_check = QCheckBox("upsample to finest grid")
        self.upsample_check.setToolTip(
            "On: coarse layers (e.g. a sparse input) are shown on the finest layer's grid by nearest "
            "neighbour, so their stair-steps are visible. Off: only their own planes are drawn."
        )
        self.upsample_check.setChecked(True)
        self.zoom_out = QPushButton("-")
        self.zoom_in = QPushButton("+")
        self.fit_button = QPushButton("Fit")
        for b in (self.zoom_out, self.zoom_in):
            b.setFixedWidth(28)
        self.fit_button.setToolTip("Fit all views into the panel (keeps the physical aspect ratio).")
        self.cursor_label = QLabel()
        self.cursor_label.setTextInteractionFlags(Qt.TextSelectableByMouse)

        controls = QHBoxLayout()
        controls.addWidget(self.sync_check)
        controls.addWidget(self.upsample_check)
        controls.addStretch(1)
        controls.addWidget(self.zoom_out)
        controls.addWidget(self.zoom_in)
        controls.addWidget(self.fit_button)

        self.canvas = QWidget()
        self.canvas_layout = QGridLayout(self.canvas)
        self.canvas_layout.setContentsMargins(2, 2, 2, 2)
        self.canvas_layout.setHorizontalSpacing(8)
        self.canvas_layout.setVerticalSpacing(4)
        self.canvas_layout.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.canvas)
        self.scroll.setWidgetResizable(True)
        self.scroll.setMinimumSize(200, 200)
        self.placeholder = QLabel("Tick two or more 3D image layers above.")
        self.placeholder.setStyleSheet("color: gray;")

        layout = QVBoxLayout(self)
        layout.addWidget(self.layer_list)
        layout.addLayout(controls)
        layout.addWidget(self.cursor_label)
        layout.addWidget(self.scroll, 1)

        self.layer_list.itemChanged.connect(self._on_list_reordered)
        self.layer_list.model().rowsMoved.connect(self._on_list_reordered)
        self.sync_check.toggled.connect(self._on_sync_toggled)
        self.upsample_check.toggled.connect(lambda *_: self._redraw())
        self.zoom_in.clicked.connect(lambda: self.zoom_by(1.25))
        self.zoom_out.clicked.connect(lambda: self.zoom_by(0.8))
        self.fit_button.clicked.connect(self.fit)

    def _connect_viewer(self) -> None:
        # napari's emitters outlive this widget: connect through a list that is disconnected
        # when the widget is destroyed, so no event reaches a deleted Qt object.
        self._connections: list[tuple[Any, Any]] = []
        connections = self._connections
        self.destroyed.connect(lambda *_: disconnect_all(connections))
        events = self.viewer.layers.events
        self._connect(events.inserted, self._on_inserted)
        self._connect(events.removed, self._on_removed)
        self._connect(events.moved, self._on_removed)
        self._connect(self.viewer.dims.events.point, self._on_dims_point)
        for layer in self.viewer.layers:
            self._watch(layer)

    def _connect(self, emitter: Any, callback: Any) -> None:
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def _watch(self, layer: Any) -> None:
        if not isinstance(layer, Image):
            return
        self._connect(layer.events.name, self._on_layer_renamed)
        self._connect(layer.events.contrast_limits, self._on_layer_display)
        # set_data: napari re-sliced or refreshed the layer (also after in-place writes);
        # data: the layer got a new array.
        self._connect(layer.events.set_data, self._on_layer_display)
        self._connect(layer.events.data, self._on_layer_data)
        self._connect(layer.events.scale, self._on_layer_geometry)
        self._connect(layer.events.translate, self._on_layer_geometry)

    def _on_removed(self, event: Any = None) -> None:
        self._refresh_list()

    def _on_layer_geometry(self, event: Any) -> None:
        if layer_key(event.source) in self.columns:
            self._rebuild()

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)
        self._refresh_list(new_layer=event.value)

    # ------------------------------------------------------------------ layer list
    def candidate_layers(self) -> list[Image]:
        return [l for l in self.viewer.layers if is_volume_layer(l)]

    def chosen_layers(self) -> list[Image]:
        chosen = []
        by_id = {layer_key(l): l for l in self.candidate_layers()}
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            layer = by_id.get(item.data(Qt.UserRole))
            if layer is not None and item.checkState() == Qt.Checked:
                chosen.append(layer)
        return chosen

    def set_layers(self, layers: list[Image | str]) -> None:
        """Show these layers (objects or names), as columns in the given order."""
        wanted = [layer_key(self.viewer.layers[l]) if isinstance(l, str) else layer_key(l) for l in layers]
        self._fill_list(set(wanted), order=wanted)

    def _list_keys(self) -> list[str]:
        return [self.layer_list.item(i).data(Qt.UserRole) for i in range(self.layer_list.count())]

    def _refresh_list(self, initial: bool = False, new_layer: Any = None) -> None:
        checked = {layer_key(l) for l in self.chosen_layers()}
        if initial:
            candidates = self.candidate_layers()
            selected = [l for l in self.viewer.layers.selection if is_volume_layer(l)]
            pool = selected if len(selected) >= 2 else candidates
            checked = {layer_key(l) for l in pool[:MAX_AUTO_CHECKED]}
        elif new_layer is not None and is_volume_layer(new_layer) and len(checked) < MAX_AUTO_CHECKED:
            checked.add(layer_key(new_layer))  # e.g. a reconstruction that just started streaming in
        self._fill_list(checked, order=self._list_keys())

    def _fill_list(self, checked: set[str], order: list[str]) -> None:
        """Rebuild the list: layers in ``order`` first, then the others in napari's order
        (bottom to top, i.e. an input before its reconstructions); columns follow the list."""
        candidates = {layer_key(l): l for l in self.candidate_layers()}
        keys = [k for k in order if k in candidates]
        keys += [k for k in candidates if k not in keys]
        self._updating_list = True
        self.layer_list.blockSignals(True)
        try:
            self.layer_list.clear()
            for key in keys:
                item = QListWidgetItem(candidates[key].name)
                item.setData(Qt.UserRole, key)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable | Qt.ItemIsDragEnabled)
                item.setCheckState(Qt.Checked if key in checked else Qt.Unchecked)
                self.layer_list.addItem(item)
        finally:
            self.layer_list.blockSignals(False)
            self._updating_list = False
        self._rebuild()

    def _on_list_reordered(self, *_: Any) -> None:
        if not self._updating_list:
            self._rebuild()

    def _on_layer_renamed(self, event: Any) -> None:
        layer = event.source
        for i in range(self.layer_list.count()):
            item = self.layer_list.item(i)
            if item.data(Qt.UserRole) == layer_key(layer):
                self.layer_list.blockSignals(True)
                item.setText(layer.name)
                self.layer_list.blockSignals(False)
        col = self.columns.get(layer_key(layer))
        if col is not None:
            self._set_title(col)

    def _on_layer_display(self, event: Any) -> None:
        if layer_key(event.source) in self.columns:
            self._redraw_timer.start()  # coalesced: a running reconstruction refreshes often

    def _on_layer_data(self, event: Any) -> None:
        col = self.columns.get(layer_key(event.source))
        if col is not None:
            col.sampler.invalidate()
            self._rebuild()  # the shape may have changed too

    # ------------------------------------------------------------------ columns
    def _rebuild(self) -> None:
        """Recreate the columns for the chosen layers and the shared grid."""
        layers = self.chosen_layers()
        for col in self.columns.values():
            for w in col.widgets:
                self.canvas_layout.removeWidget(w)
                w.setParent(None)
                w.deleteLater()
        self.columns = {}
        self.placeholder.setParent(None)
        if not layers:
            self.grid = None
            self.canvas_layout.addWidget(self.placeholder, 0, 0)
            self._update_cursor_label()
            return
        old_grid = self.grid
        self.grid = Grid.covering(layers)
        if old_grid is None:
            self.cursor = self.grid.snap(self.grid.lo + (self.grid.n - 1) * self.grid.step / 2)
            if self.sync_check.isChecked():
                self._pull_z_from_viewer(redraw=False)
        self.cursor = self.grid.snap(self.cursor)
        for j, layer in enumerate(layers):
            title = QLabel()
            title.setAlignment(Qt.AlignCenter)
            value = QLabel()
            value.setAlignment(Qt.AlignCenter)
            value.setStyleSheet("color: gray;")
            views = {}
            self.canvas_layout.addWidget(title, 0, j)
            for i, name in enumerate(VIEWS):
                view = SliceView(name)
                view.picked.connect(self._on_picked)
                view.stepped.connect(self.step_cursor)
                view.zoomed.connect(lambda d: self.zoom_by(1.25 if d > 0 else 0.8))
                self.canvas_layout.addWidget(view, 1 + i, j, Qt.AlignLeft | Qt.AlignTop)
                views[name] = view
            self.canvas_layout.addWidget(value, 4, j)
            col = Column(LayerSampler(layer), title, views, value, [title, *views.values(), value])
            self.columns[layer_key(layer)] = col
            self._set_title(col)
        if self._auto_fit:
            self.fit(keep_auto=True)
        else:
            self._apply_zoom()
        self._redraw()

    def _set_title(self, col: Column) -> None:
        layer = col.sampler.layer
        vs = " x ".join(f"{v:.3g}" for v in _spatial(layer.scale))
        col.title.setText(f"<b>{layer.name}</b><br><span style='color:gray'>voxel {vs}</span>")
        col.title.setToolTip(layer.name)

    def column(self, layer: Image | str) -> Column:
        """The column of a layer (object or name)."""
        target = self.viewer.layers[layer] if isinstance(layer, str) else layer
        return self.columns[layer_key(target)]

    # ------------------------------------------------------------------ zoom
    def _apply_zoom(self) -> None:
        if self.grid is None:
            return
        for col in self.columns.values():
            width = 0
            for view in col.views.values():
                view.set_geometry(self.grid, self.zoom)
                width = max(width, view.width())
            col.title.setMaximumWidth(max(width, 80))
            col.value.setMaximumWidth(max(width, 80))
        self.canvas.adjustSize()

    def zoom_by(self, factor: float) -> None:
        self.set_zoom(self.zoom * factor)

    def set_zoom(self, pixels_per_unit: float) -> None:
        """Screen pixels per world unit (µm) for every view; stops fitting to the panel."""
        self._auto_fit = False
        self.zoom = float(np.clip(pixels_per_unit, 1e-3, 1e4))
        self._apply_zoom()

    def fit(self, *_: Any, keep_auto: bool = False) -> None:
        """Zoom so every column fits the panel; re-enables fitting when the panel is resized."""
        self._auto_fit = True
        if self.grid is None or not self.columns:
            return
        g = self.grid
        ncol = len(self.columns)
        col_w = max(g.extent(2), g.extent(1))  # XY and XZ are X wide, YZ is Y wide
        col_h = g.extent(1) + 2 * g.extent(0)
        viewport = self.scroll.viewport().size()
        avail_w = viewport.width() - 8 * (ncol - 1) - 8
        avail_h = viewport.height() - 3 * 4 - 2 * 36  # title and value rows
        zoom = min(avail_w / (ncol * col_w), avail_h / col_h)
        self.zoom = float(np.clip(zoom, 1e-3, 1e4)) if zoom > 0 else self.zoom
        self._apply_zoom()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        if self._auto_fit:
            self.fit()

    # ------------------------------------------------------------------ cursor
    def set_cursor(self, z: float | None = None, y: float | None = None, x: float | None = None, push: bool = True) -> None:
        """Move the shared cursor (world µm; None keeps a coordinate), snapped to the grid."""
        new = self.cursor.copy()
        for a, v in enumerate((z, y, x)):
            if v is not None:
                new[a] = float(v)
        if self.grid is not None:
            new = self.grid.snap(new)
        z_changed = new[0] != self.cursor[0]
        self.cursor = new
        if push and z_changed and self.sync_check.isChecked():
            self._push_z_to_viewer()
        self._redraw()
        self.cursor_changed.emit(self.cursor.copy())

    def step_cursor(self, axis: int, steps: int) -> None:
        if self.grid is None:
            return
        coords = [None, None, None]
        coords[axis] = self.cursor[axis] + steps * self.grid.step[axis]
        self.set_cursor(*coords)

    def _on_picked(self, row_axis: int, row: float, col_axis: int, col: float) -> None:
        coords: list[float | None] = [None, None, None]
        coords[row_axis], coords[col_axis] = row, col
        self.set_cursor(*coords)

    def _z_axis(self) -> int | None:
        nd = self.viewer.dims.ndim
        return nd - 3 if nd >= 3 else None

    def _push_z_to_viewer(self) -> None:
        axis = self._z_axis()
        if axis is None:
            return
        self._pushing_to_viewer = True
        try:
            self.viewer.dims.set_point(axis, float(self.cursor[0]))
        finally:
            self._pushing_to_viewer = False

    def _pull_z_from_viewer(self, redraw: bool = True) -> None:
        axis = self._z_axis()
        if axis is None or self.grid is None:
            return
        z = float(self.viewer.dims.point[axis])
        if redraw:
            self.set_cursor(z=z, push=False)
        else:
            self.cursor = self.grid.snap(np.array([z, self.cursor[1], self.cursor[2]]))

    def _on_dims_point(self, *_: Any) -> None:
        if self._pushing_to_viewer or not self.sync_check.isChecked():
            return
        self._pull_z_from_viewer()

    def _on_sync_toggled(self, on: bool) -> None:
        if on:
            self._pull_z_from_viewer()

    # ------------------------------------------------------------------ drawing
    def _redraw(self) -> None:
        self._update_cursor_label()
        if self.grid is None:
            return
        upsample = self.upsample_check.isChecked()
        for col in self.columns.values():
            layer = col.sampler.layer
            limits = tuple(layer.contrast_limits)
            for name, view in col.views.items():
                image = col.sampler.sample_view(name, self.cursor, self.grid, upsample)
                normal = VIEWS[name][2]
                caption = f"{name.upper()}  {AXES[normal]} = {self.cursor[normal]:.3g}"
                if np.isnan(image).all():
                    caption += "  (no plane here)"
                view.set_image(image, limits, self.cursor, caption)
            hit = col.sampler.value_at(self.cursor, self.grid, upsample)
            if hit is None:
                col.value.setText("outside this layer")
            else:
                (k, i, j), v = hit
                col.value.setText(f"<b>{v:.5g}</b><br>voxel z {k}, y {i}, x {j}")

    def _update_cursor_label(self) -> None:
        if self.grid is None:
            self.cursor_label.setText("cursor: -")
            return
        z, y, x = self.cursor
        self.cursor_label.setText(f"cursor (z, y, x) = ({z:.4g}, {y:.4g}, {x:.4g}) in world units (µm)")
