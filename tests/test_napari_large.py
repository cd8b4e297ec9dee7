"""napari with large stacks: lazy zarr input, preview of the region in view, run to zarr.

Run under a virtual X server (see tests/test_napari_widgets.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_voxrecon.engine import Job, run_job
from napari_voxrecon.io import read_volume
from napari_voxrecon.io.zarr_store import write_zarr, zarr_progress

PLUGIN = "napari-voxrecon"
TIMEOUT_MS = 60_000


@pytest.fixture
def stack():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    vol = ndimage.gaussian_filter(rng.random((9, 96, 80)), 1.5)
    return ((vol - vol.min()) / (vol.max() - vol.min()) * 900 + 100).astype(np.float32)


@pytest.fixture
def opened(make_napari_viewer, tmp_path, stack):
    """A viewer with the stack opened from a zarr store through the plugin's reader."""
    path = tmp_path / "big.zarr"
    write_zarr(path, stack, (2.0, 0.5, 0.5))
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    widget.set_input(layers[0])
    widget.task_combo.setCurrentText("sparse")
    widget.set_params(interval=3)
    return viewer, widget, layers[0], path


def test_zarr_layer_is_lazy(opened):
    _, _, layer, _ = opened
    assert not isinstance(layer.data, np.ndarray)  # a dask array over the store


def test_preview_reconstructs_only_the_region_in_view(opened, qtbot, stack):
    viewer, widget, layer, _ = opened
    viewer.dims.set_point(0, 4 * 2.0)  # input plane 4 (world z = 8 µm)
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        assert widget.preview() is not None
    assert blocker.args[0] == "done"
    out = widget.outputs["result"]
    assert out.name.endswith("preview")
    region = out.metadata["voxrecon"]["region"]
    (z0, z1), (y0, y1), (x0, x1) = region
    assert z0 <= 4 < z1 and z1 - z0 < stack.shape[0]
    # It is the in-memory result of that block, placed where the block lies in the stack.
    ref = run_job(Job("sparse", stack[z0:z1, y0:y1, x0:x1], {"interval": 3}))["result"]
    assert np.array_equal(np.asarray(out.data), ref)
    assert np.allclose(out.translate, (z0 * 2.0, y0 * 0.5, x0 * 0.5))


def test_run_to_zarr_fills_a_lazy_layer_and_resumes(opened, qtbot, tmp_path, stack):
    viewer, widget, layer, _ = opened
    out_path = tmp_path / "recon.zarr"
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        assert widget.run_to_zarr(str(out_path)) is not None
    assert blocker.args[0] == "done", widget.status.text()
    out = widget.outputs["result"]
    assert not isinstance(out.data, np.ndarray)  # the layer reads the store, not a copy in memory
    assert "done" in widget.status.text() and zarr_progress(out_path)["complete"] is True
    ref = run_job(Job("sparse", stack, {"interval": 3}))["result"]
    assert np.array_equal(np.asarray(out.data[...]), ref)
    assert np.array_equal(read_volume(out_path).data, ref)
    # A finished store is not silently recomputed: the user is told to choose --overwrite.
    shown = []
    import napari_voxrecon.widgets.reconstruct as rw

    orig = rw.show_error
    rw.show_error = shown.append
    try:
        with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
            assert widget.run_to_zarr(str(out_path)) is not None
    finally:
        rw.show_error = orig
    assert blocker.args[0] == "failed" and any("already complete" in s for s in shown)


def test_run_to_zarr_needs_a_file_behind_the_layer(make_napari_viewer, stack, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="in memory")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    shown = []
    monkeypatch.setattr("napari_voxrecon.widgets.reconstruct.show_error", shown.append)
    assert widget.run_to_zarr("/tmp/never.zarr") is None
    assert shown and "not opened from a TIFF or zarr file" in shown[0]


def test_cancelled_run_to_zarr_is_resumable(opened, qtbot, tmp_path, stack, monkeypatch):
    """Cancel after the first chunk: the layer says incomplete, the same run resumes to the end."""
    viewer, widget, layer, _ = opened
    out_path = tmp_path / "recon.zarr"
    from napari_voxrecon.engine import dask_runner

    original = dask_runner.ChunkedJob.__init__

    def small_chunks(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "planes": 3, "tile": 40})

    monkeypatch.setattr(dask_runner.ChunkedJob, "__init__", small_chunks)

    def cancel_on_first_chunk(event):
        from napari_voxrecon.engine.events import ChunkDone

        if isinstance(event, ChunkDone):
            widget.cancel()

    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        worker = widget.run_to_zarr(str(out_path))
        worker.yielded.connect(cancel_on_first_chunk)
    assert blocker.args[0] == "cancelled", widget.status.text()
    assert widget.outputs["result"].name.endswith("(incomplete)")
    progress = zarr_progress(out_path)
    assert progress["complete"] is False and 1 <= len(progress["chunks_done"]) < progress["job"]["chunked"]["count"]
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        assert widget.run_to_zarr(str(out_path)) is not None
    assert blocker.args[0] == "done", widget.status.text()
    assert np.array_equal(read_volume(out_path).data, run_job(Job("sparse", stack, {"interval": 3}))["result"])
