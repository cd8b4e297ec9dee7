"""napari integration: manifest, sample data, the Reconstruct widget and the Orthogonal views.

Run under a virtual X server: ``xvfb-run -a python -m pytest tests/test_napari_*.py``.
Waiting is done on the widgets' signals, never with sleeps.
"""

import time
import uuid

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_voxrecon.engine import Job, Method, register, run_job
from napari_voxrecon.engine import registry
from napari_voxrecon.engine.events import SliceResult
from napari_voxrecon.methods.sparse_baselines import linear_plane

PLUGIN = "napari-voxrecon"
TIMEOUT_MS = 20_000


def smooth_volume(shape, seed=0):
    """Structured, non-constant test data (values ~100..1100)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    vol = ndimage.gaussian_filter(rng.random(shape), 1.0)
    return ((vol - vol.min()) / (vol.max() - vol.min()) * 1000 + 100).astype(np.float32)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def open_reconstruct(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    return widget


def run_and_wait(qtbot, widget):
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        worker = widget.run()
        assert worker is not None
    return blocker.args[0]


@pytest.fixture
def errors(monkeypatch):
    """Messages passed to napari's show_error by the Reconstruct widget."""
    shown = []
    monkeypatch.setattr("napari_voxrecon.widgets.reconstruct.show_error", shown.append)
    return shown


# ---------------------------------------------------------------- manifest and samples
def test_manifest_is_valid_and_complete():
    import npe2

    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    manifest.validate_imports()  # every python_name resolves
    contrib = manifest.contributions
    assert manifest.display_name == "VoxRecon"
    assert {w.display_name for w in contrib.widgets} == {"Reconstruct", "Orthogonal views"}
    assert {s.key for s in contrib.sample_data} == {
        "cells3d_nuclei", "cells3d_nuclei_sparse4", "cells3d_nuclei_projection4", "cells3d_nuclei_lowres4"}
    reader = contrib.readers[0]
    assert set(reader.filename_patterns) == {"*.tif", "*.tiff", "*.zarr"} and reader.accepts_directories
    assert set(contrib.writers[0].filename_extensions) == {".tif", ".tiff", ".zarr"}


def test_sample_data_open_with_their_voxel_size(viewer):
    from napari_voxrecon._sample_data import load_ground_truth

    gt = load_ground_truth()
    (truth,) = viewer.open_sample(PLUGIN, "cells3d_nuclei")
    (sparse,) = viewer.open_sample(PLUGIN, "cells3d_nuclei_sparse4")
    (proj,) = viewer.open_sample(PLUGIN, "cells3d_nuclei_projection4")
    np.testing.assert_allclose(truth.scale, (0.29, 0.26, 0.26), rtol=1e-4)
    np.testing.assert_allclose(sparse.scale, (0.29 * 4, 0.26, 0.26), rtol=1e-4)
    np.testing.assert_allclose(proj.scale, (0.29 * 4, 0.26, 0.26), rtol=1e-4)
    assert truth.data.shape == (60, 128, 128)
    np.testing.assert_array_equal(sparse.data, gt.data[::4])
    np.testing.assert_allclose(proj.data[1], gt.data[4:8].mean(axis=0), rtol=1e-6)


def test_sample_preselects_task_and_interval(viewer):
    viewer.open_sample(PLUGIN, "cells3d_nuclei_projection4")
    widget = open_reconstruct(viewer)
    assert widget.task_name == "projection"
    assert widget.params()["interval"] == 4
    assert "60 x 128 x 128" in widget.output_label.text()
    (low,) = viewer.open_sample(PLUGIN, "cells3d_nuclei_lowres4")  # the restore sample preselects its task
    widget.set_input(low.name)
    assert widget.task_name == "restore" and widget.params()["axial_factor"] == 4
    assert low.data.shape == (15, 128, 128)
    np.testing.assert_allclose(low.scale, (0.29 * 4, 0.26, 0.26), rtol=1e-4)


# ---------------------------------------------------------------- Reconstruct: form
def test_form_is_generated_from_the_registry(viewer):
    widget = open_reconstruct(viewer)
    for i in range(widget.task_combo.count()):
        widget.task_combo.setCurrentIndex(i)
        task = widget.task_spec()
        names = [widget.method_combo.itemText(j) for j in range(widget.method_combo.count())]
        assert names == [m.name for m in registry.list_methods(task.name)]
        assert widget.method_name == task.default_method
        declared = [p.name for p in (*task.params, *widget.method_spec().params)]
        assert [w.name for w in widget.params_form] == declared
        assert widget.method_combo.toolTip() == widget.method_spec().help


def test_input_list_follows_the_layer_list(viewer):
    widget = open_reconstruct(viewer)
    assert widget.layer_combo.count() == 0
    viewer.add_image(smooth_volume((3, 8, 8)), name="a")
    viewer.add_points(np.zeros((1, 3)), name="points")  # not an image: not offered
    layer_b = viewer.add_image(smooth_volume((3, 8, 8)), name="b")
    items = [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]
    assert items == ["a", "b"]
    widget.set_input("a")
    layer_b.name = "renamed"
    assert widget.layer_combo.itemText(1) == "renamed"
    assert widget.selected_layer().name == "a"
    viewer.layers.remove("a")
    assert [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())] == ["renamed"]


# ---------------------------------------------------------------- Reconstruct: runs
def test_inr_run_fits_then_streams_planes(viewer, qtbot):
    """A method that fits before its first plane: the fit's progress shows on the plane scale."""
    volume = smooth_volume((4, 16, 16), seed=2)
    viewer.add_image(volume, name="sparse")
    widget = open_reconstruct(viewer)
    widget.set_input("sparse")
    widget.task_combo.setCurrentText("sparse")
    widget.method_combo.setCurrentText("inr")
    widget.set_params(interval=3, iterations=40)
    messages = []
    widget.progress.valueChanged.connect(lambda v: messages.append((v, widget.progress.maximum())))
    assert run_and_wait(qtbot, widget) == "done"
    layer = widget.outputs["result"]
    np.testing.assert_array_equal(layer.data[::3], volume)
    assert widget.progress.value() == widget.progress.maximum() == 10
    assert all(maximum == 10 for _, maximum in messages)
    losses = widget.loss_curve.values  # the fit's loss, drawn live under the progress bar
    assert not widget.loss_curve.isHidden() and 0 < len(losses) <= 40 and losses[-1] < losses[0]


def test_diffraction_run_takes_files_streams_the_index_and_draws_the_loss(viewer, qtbot, tmp_path):
    """The diffraction task in the widget: file choosers for the sources and the optics, the
    index volume in its own layer on the RI grid, the loss curve of the fit."""
    from magicgui import widgets as mgw

    from napari_voxrecon.cli import main
    from napari_voxrecon.io import read_volume, write_volume
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    ri = make_ri_phantom((6, 16, 16), "cell", seed=3, voxel_size=(0.4, 0.2, 0.2))
    write_volume(tmp_path / "ri.tif", ri, (0.4, 0.2, 0.2))
    assert main(["simulate", "diffraction", str(tmp_path / "ri.tif"), "-o", str(tmp_path / "img.tif"), "--views", "3",
                 "--sources-out", str(tmp_path / "src.json"), "-q"]) == 0
    viewer.add_image(read_volume(tmp_path / "img.tif").data, name="images")
    widget = open_reconstruct(viewer)
    widget.set_input("images")
    widget.task_combo.setCurrentText("diffraction")
    widget.method_combo.setCurrentText("explicit")
    assert isinstance(widget.params_form["sources"], mgw.FileEdit) and widget.params()["optics"] == ""
    widget.set_params(sources=str(tmp_path / "src.json"), optics=str(tmp_path / "img_optics.json"), iterations=8)
    assert widget.params()["sources"] == str(tmp_path / "src.json")
    assert run_and_wait(qtbot, widget) == "done"
    index = widget.outputs["result"].data
    assert index.shape == ri.shape and 1.25 < index.min() and index.max() < 1.45
    assert len(widget.loss_curve.values) == 8 and not widget.loss_curve.isHidden()
    widget.set_params(optics="")  # emptied: back to "not given", not the working folder
    assert widget.params()["optics"] == ""


def test_a_short_dock_scrolls_instead_of_squeezing_the_parameters(viewer, qtbot):
    """A long message and many fields in a short dock: the parameter fields keep their height
    and the widget scrolls (they used to be squeezed until their labels overlapped)."""
    viewer.add_image(smooth_volume((5, 16, 12), seed=1), name="images")
    widget = open_reconstruct(viewer)
    widget.set_input("images")
    widget.task_combo.setCurrentText("diffraction")
    widget.output_label.setText("a long message " * 60)
    viewer.window._qt_window.show()  # geometry is only laid out on screen (Xvfb)
    viewer.window._qt_window.resize(1000, 500)
    qtbot.wait(200)
    box = widget.params_box
    assert box.height() >= box.minimumSizeHint().height() > 250
    assert widget._scroll.verticalScrollBar().maximum() > 0


def test_linear_run_streams_planes_into_a_layer(viewer, qtbot):
    volume = smooth_volume((5, 16, 12), seed=1)
    viewer.add_image(volume, name="sparse", scale=(2.0, 0.5, 0.5), translate=(1.0, 0.0, 0.0))
    widget = open_reconstruct(viewer)
    widget.set_input("sparse")
    widget.task_combo.setCurrentText("sparse")
    widget.method_combo.setCurrentText("linear")
    widget.set_params(interval=4)

    arrivals = []  # (z, were later planes still empty when z arrived?)

    def record(output, z):
        layer = widget.outputs[output]
        arrivals.append((z, not layer.data[z + 1:].any()))

    widget.slice_written.connect(record)
    assert run_and_wait(qtbot, widget) == "done"

    layer = widget.outputs["result"]
    assert layer.name == "sparse linear"
    expected = run_job(Job("sparse", volume, {"interval": 4}, method="linear"))["result"]
    # Planes arrive one at a time, in order, into a layer that was already on screen.
    assert [z for z, _ in arrivals] == list(range(17))
    assert all(later_empty for _, later_empty in arrivals)
    np.testing.assert_array_equal(layer.data, expected)
    np.testing.assert_array_equal(layer.data[::4], volume)  # acquired planes bit-exact
    np.testing.assert_allclose(layer.scale, (0.5, 0.5, 0.5))
    np.testing.assert_allclose(layer.translate, (1.0, 0.0, 0.0))
    assert layer.metadata["voxrecon"]["complete"] is True
    assert widget.progress.value() == widget.progress.maximum() == 17
    assert widget.status.text().startswith("done: 17 planes")
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    # "follow slices" left napari's z slider on the last plane.
    assert viewer.dims.point[0] == pytest.approx(1.0 + 16 * 0.5)


@pytest.fixture
def rich_method():
    """A sparse-task method with one parameter of every kind and an uncertainty output."""
    from napari_voxrecon.engine import Param

    seen = {}

    def run(ctx):
        seen.update(ctx.params)
        n = ctx.params["interval"]
        for z in range(ctx.output_shape[0]):
            plane = linear_plane(ctx.volume, z, n)
            yield SliceResult(z, plane)
            yield SliceResult(z, np.full_like(plane, z % n), "uncertainty")

    params = (
        Param("strength", float, 0.5, "a float in [0, 1]", min=0.0, max=1.0),
        Param("steps", int, 10, "an int", min=1, max=1000),
        Param("denoise", bool, True, "a switch"),
        Param("mode", str, "fast", "a choice", choices=("fast", "slow")),
        Param("tag", str, "x", "free text"),
    )
    name = f"rich-test-{uuid.uuid4().hex[:8]}"
    register(Method("sparse", name, "every kind of parameter (test only)", run, params=params,
                    outputs=("result", "uncertainty")))
    yield name, seen
    registry._METHODS.pop(("sparse", name), None)


def test_every_registered_default_survives_its_form_field(viewer):
    """Each method's defaults come back unchanged from its widget field: a float spin box with
    Qt's default 2 decimals once turned τ = 0.004 into 0.0 and fitted without the TV prior."""
    from napari_voxrecon.engine.registry import get_task, list_methods
    from napari_voxrecon.widgets.reconstruct import param_widget

    checked = 0
    for method in list_methods():
        for p in (*get_task(method.task).params, *method.params):
            if p.type is float and p.default is not None:
                assert param_widget(p, p.default).value == pytest.approx(p.default, rel=1e-9), (method.name, p.name)
                checked += 1
    assert checked > 5


def test_every_parameter_kind_and_a_companion_output(viewer, qtbot, rich_method):
    from magicgui import widgets as mgw

    name, seen = rich_method
    volume = smooth_volume((3, 8, 8), seed=3)
    viewer.add_image(volume, name="input")
    widget = open_reconstruct(viewer)
    widget.method_combo.setCurrentText(name)
    form = widget.params_form
    kinds = {w.name: type(w) for w in form}
    assert kinds == {"interval": mgw.SpinBox, "strength": mgw.FloatSpinBox, "steps": mgw.SpinBox,
                     "denoise": mgw.CheckBox, "mode": mgw.ComboBox, "tag": mgw.LineEdit}
    assert form["strength"].max == 1.0 and form["steps"].min == 1
    widget.set_params(interval=2, strength=0.25, steps=7, denoise=False, mode="slow", tag="abc")
    # Values survive switching to another method and back (same names are kept).
    widget.method_combo.setCurrentText("linear")
    widget.method_combo.setCurrentText(name)
    assert widget.params_form["steps"].value == 7
    assert run_and_wait(qtbot, widget) == "done"
    assert seen == {"interval": 2, "strength": 0.25, "steps": 7, "denoise": False, "mode": "slow", "tag": "abc"}
    result, uncertainty = widget.outputs["result"], widget.outputs["uncertainty"]
    assert uncertainty.name == f"input {name} uncertainty"
    np.testing.assert_array_equal(uncertainty.data[:, 0, 0], np.arange(5) % 2)
    assert tuple(uncertainty.contrast_limits) == (0.0, 1.0)
    # A colormap of its own (it is a spread, not an intensity), on top of the result.
    assert uncertainty.colormap.name == "magma" and result.colormap.name == "gray"
    assert list(viewer.layers).index(uncertainty) == list(viewer.layers).index(result) + 1
    assert uncertainty.metadata["voxrecon"]["complete"] and result.metadata["voxrecon"]["complete"]


def test_orthoview_shows_a_reconstruction_as_it_streams_in(viewer, qtbot):
    volume = smooth_volume((4, 10, 8), seed=4)
    viewer.add_image(volume, name="sparse", scale=(3.0, 1.0, 1.0))
    _, ortho = viewer.window.add_plugin_dock_widget(PLUGIN, "Orthogonal views")
    widget = open_reconstruct(viewer)
    widget.method_combo.setCurrentText("linear")
    widget.set_params(interval=3)
    assert run_and_wait(qtbot, widget) == "done"
    result = widget.outputs["result"]
    # The new layer was ticked automatically and its column follows the planes written.
    assert [c.sampler.layer.name for c in ortho.columns.values()] == ["sparse", "sparse linear"]
    view = ortho.column(result.name).views["xy"]
    z = int(round(ortho.cursor[0]))  # synced with napari's slider, which followed the planes
    assert z == 9
    qtbot.waitUntil(lambda: np.array_equal(view.image, result.data[z]), timeout=2000)
    ortho.set_cursor(z=4.0, y=5.0, x=2.0)
    np.testing.assert_array_equal(ortho.column(result.name).views["xy"].image, result.data[4])
    np.testing.assert_array_equal(ortho.column(result.name).views["xz"].image, result.data[:, 5, :])


@pytest.fixture
def slow_method():
    """A sparse-task method that takes 50 ms per plane and records what it produced."""
    produced = []

    def run(ctx):
        n = ctx.params["interval"]
        for z in range(ctx.output_shape[0]):
            time.sleep(0.05)
            produced.append(z)
            yield SliceResult(z, linear_plane(ctx.volume, z, n))

    name = f"slow-test-{uuid.uuid4().hex[:8]}"
    register(Method("sparse", name, "linear, slowly (test only)", run))
    yield name, produced
    registry._METHODS.pop(("sparse", name), None)


def test_cancel_stops_within_one_plane_and_keeps_the_partial_layer(viewer, qtbot, slow_method):
    name, produced = slow_method
    volume = smooth_volume((9, 12, 10), seed=2)
    viewer.add_image(volume, name="input")
    widget = open_reconstruct(viewer)
    widget.method_combo.setCurrentText(name)
    widget.set_params(interval=4)
    total = 33

    widget.run()
    qtbot.waitUntil(lambda: len(widget.written.get("result", [])) >= 3, timeout=TIMEOUT_MS)
    produced_at_cancel = len(produced)
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        widget.cancel()
    assert blocker.args == ["cancelled"]

    written = widget.written["result"]
    assert len(produced) <= produced_at_cancel + 1, "the job went on for more than one plane"
    assert written == produced == list(range(len(written)))  # every produced plane is shown
    assert len(written) < total
    layer = widget.outputs["result"]
    for z in range(total):
        if z in written:
            np.testing.assert_array_equal(layer.data[z], linear_plane(volume, z, 4))
        else:
            assert not layer.data[z].any(), f"plane {z} was never computed but is not empty"
    assert layer.metadata["voxrecon"]["complete"] is False
    assert layer.metadata["voxrecon"]["planes_done"] == len(written)
    assert layer.name.endswith("(incomplete)")
    assert widget.status.text() == f"cancelled after {len(written)} planes"
    assert widget.run_button.isEnabled() and not widget.running


@pytest.mark.parametrize(
    "data, expected",
    [
        (np.linspace(0, 1, 16 * 12, dtype=np.float32).reshape(16, 12), "3D stack"),
        (np.full((4, 8, 8), 3.0, np.float32), "same value"),
        (np.where(np.arange(4 * 8 * 8).reshape(4, 8, 8) == 5, np.nan, 1.0).astype(np.float32), "NaN"),
    ],
    ids=["2d", "constant", "nan"],
)
def test_bad_input_shows_an_error_and_the_widget_recovers(viewer, qtbot, errors, data, expected):
    viewer.add_image(data, name="bad")
    widget = open_reconstruct(viewer)
    widget.task_combo.setCurrentText("sparse")
    widget.method_combo.setCurrentText("linear")
    widget.set_params(interval=2)
    assert run_and_wait(qtbot, widget) == "failed"
    assert len(errors) == 1 and expected in errors[0]
    assert [l.name for l in viewer.layers] == ["bad"]  # no output layer was created
    assert not widget.running and widget.status.text().startswith("failed:")
    # a wrong shape is known before the click: Run stays disabled and says why; the rest is found by the job
    shape_problem = data.ndim != 3
    assert widget.run_button.isEnabled() is not shape_problem
    assert ("3D (Z, Y, X) stack" in widget.run_button.toolTip()) is shape_problem


def test_run_is_disabled_while_the_form_shows_a_problem_and_says_why(viewer, qtbot):
    layer = viewer.add_image(smooth_volume((1, 8, 8)), name="v")
    widget = open_reconstruct(viewer)
    buttons = (widget.run_button, widget.preview_button, widget.zarr_button)
    widget.task_combo.setCurrentText("restore")
    widget.params_form["lateral_factor"].value = 1
    widget.set_params(axial_factor=1)
    assert widget.run_button.isEnabled() and widget.output_label.text().startswith("output:")
    widget.set_params(axial_factor=2)  # one plane cannot be upsampled along z
    problem = widget.output_label.text()
    assert "at least 2 planes" in problem
    assert not any(b.isEnabled() for b in buttons)
    assert widget.run_button.toolTip() == f"Cannot run: {problem}"
    widget.set_params(axial_factor=1)
    assert all(b.isEnabled() for b in buttons) and not widget.run_button.toolTip().startswith("Cannot")
    # the input's data replaced: checked again at once
    widget.task_combo.setCurrentText("sparse")
    widget.method_combo.setCurrentText("linear")
    widget.set_params(interval=2)
    assert not widget.run_button.isEnabled()  # sparse needs 2 acquired planes
    layer.data = smooth_volume((4, 8, 8))
    assert widget.run_button.isEnabled()
    layer.data = smooth_volume((4, 8, 8))[0]
    assert not widget.run_button.isEnabled() and "3D (Z, Y, X) stack" in widget.run_button.toolTip()
    layer.data = smooth_volume((4, 8, 8))
    # disabled while a job runs whatever the form says, enabled again afterwards
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        assert widget.run() is not None
        assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    assert blocker.args == ["done"]
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


@pytest.mark.parametrize("planes_before_failure", [0, 2])
def test_a_failing_method_is_reported_and_leaves_only_real_planes(viewer, qtbot, errors, planes_before_failure):
    from napari_voxrecon.errors import VoxreconError

    def run(ctx):
        for z in range(planes_before_failure):
            yield SliceResult(z, linear_plane(ctx.volume, z, ctx.params["interval"]))
        if planes_before_failure == 0:
            raise VoxreconError("weights 'x' not found; pass weights explicitly.")
        raise RuntimeError("boom")

    name = f"failing-test-{uuid.uuid4().hex[:8]}"
    register(Method("sparse", name, "fails (test only)", run))
    try:
        viewer.add_image(smooth_volume((3, 8, 8)), name="input")
        widget = open_reconstruct(viewer)
        widget.method_combo.setCurrentText(name)
        widget.set_params(interval=2)
        assert run_and_wait(qtbot, widget) == "failed"
    finally:
        registry._METHODS.pop(("sparse", name), None)
    assert len(errors) == 1
    if planes_before_failure == 0:
        assert "weights 'x' not found" in errors[0]
        assert [l.name for l in viewer.layers] == ["input"]  # no empty result left behind
    else:
        assert "RuntimeError: boom" in errors[0]
        partial = viewer.layers[-1]
        assert partial.name == f"input {name} (incomplete)"
        assert partial.metadata["voxrecon"]["planes_done"] == 2
    assert widget.run_button.isEnabled()


def test_output_preview_and_missing_input(viewer, errors):
    viewer.add_image(smooth_volume((4, 8, 8)), name="v")
    widget = open_reconstruct(viewer)
    widget.task_combo.setCurrentText("restore")
    widget.set_params(axial_factor=2)
    widget.params_form["lateral_factor"].value = 1
    assert "output: 8 x 8 x 8" in widget.output_label.text()
    viewer.layers.clear()
    assert widget.run() is None
    assert errors and "input image layer" in errors[0]


# ---------------------------------------------------------------- Orthogonal views
@pytest.fixture
def two_layers(viewer):
    """A 'ground truth' (z step 1) and its sparse version (every 4th plane, z step 4)."""
    truth = np.arange(9 * 6 * 5, dtype=np.float32).reshape(9, 6, 5)
    viewer.add_image(truth, name="truth", contrast_limits=(0, 270))
    viewer.add_image(truth[::4].copy(), name="sparse", scale=(4, 1, 1), contrast_limits=(0, 270))
    _, ortho = viewer.window.add_plugin_dock_widget(PLUGIN, "Orthogonal views")
    ortho.set_layers(["truth", "sparse"])
    ortho.set_zoom(10)
    return truth, ortho


def test_orthoviews_sample_each_layer_at_the_world_cursor(viewer, two_layers):
    truth, ortho = two_layers
    assert [c.sampler.layer.name for c in ortho.columns.values()] == ["truth", "sparse"]
    ortho.set_cursor(z=5, y=2, x=3)
    np.testing.assert_array_equal(ortho.cursor, (5, 2, 3))
    t, s = ortho.column("truth").views, ortho.column("sparse").views
    np.testing.assert_array_equal(t["xy"].image, truth[5])
    np.testing.assert_array_equal(t["xz"].image, truth[:, 2, :])
    np.testing.assert_array_equal(t["yz"].image, truth[:, :, 3])
    # The sparse layer on the shared grid: nearest acquired plane (ties to the lower one),
    # i.e. stair-steps of 4 planes in XZ/YZ, aligned with the truth in world coordinates.
    nearest = [0, 0, 0, 1, 1, 1, 1, 2, 2]
    np.testing.assert_array_equal(s["xy"].image, truth[4])
    np.testing.assert_array_equal(s["xz"].image, truth[::4][nearest, 2, :])
    np.testing.assert_array_equal(s["yz"].image, truth[::4][nearest, :, 3])
    value = ortho.column("sparse").value.text()
    assert f"{truth[4, 2, 3]:.5g}" in value and "voxel z 1, y 2, x 3" in value
    # Views keep the physical aspect: XZ is 9 units high like the truth's 9 planes.
    assert s["xz"].height() == t["xz"].height() == 90 and t["xy"].width() == 50


def test_orthoview_columns_follow_the_chosen_order(two_layers):
    truth, ortho = two_layers
    ortho.set_layers(["sparse", "truth"])
    assert [c.sampler.layer.name for c in ortho.columns.values()] == ["sparse", "truth"]
    assert [ortho.layer_list.item(i).text() for i in range(2)] == ["sparse", "truth"]
    ortho.set_layers(["truth"])
    assert [c.sampler.layer.name for c in ortho.columns.values()] == ["truth"]


def test_orthoviews_without_upsampling_show_only_acquired_planes(two_layers):
    truth, ortho = two_layers
    ortho.upsample_check.setChecked(False)
    ortho.set_cursor(z=5, y=2, x=3)
    s = ortho.column("sparse").views
    assert np.isnan(s["xy"].image).all() and "no plane here" in s["xy"].caption
    xz = s["xz"].image
    np.testing.assert_array_equal(xz[[0, 4, 8]], truth[[0, 4, 8], 2, :])
    assert np.isnan(xz[[1, 2, 3, 5, 6, 7]]).all()
    ortho.set_cursor(z=4)
    np.testing.assert_array_equal(s["xy"].image, truth[4])


def test_orthoview_cursor_moves_update_every_view_and_the_viewer(viewer, qtbot, two_layers):
    truth, ortho = two_layers
    ortho.set_cursor(z=1, y=1, x=1)
    moves = []
    ortho.cursor_changed.connect(moves.append)
    # Click in the truth's XY view on pixel (y=4, x=2): y and x move, z stays.
    view = ortho.column("truth").views["xy"]
    x, y = view.pixel_of(np.array([1.0, 4.0, 2.0]))
    qtbot.mouseClick(view, Qt.LeftButton, pos=QPoint(int(x), int(y)))
    np.testing.assert_array_equal(ortho.cursor, (1, 4, 2))
    assert len(moves) == 1
    for col in ortho.columns.values():
        for v in col.views.values():
            np.testing.assert_array_equal(v.cursor, (1, 4, 2))
    np.testing.assert_array_equal(ortho.column("truth").views["xz"].image, truth[:, 4, :])
    np.testing.assert_array_equal(ortho.column("sparse").views["yz"].image[0], truth[0, :, 2])
    # Clicking in XZ moves z, which (synced) moves napari's slider ...
    view = ortho.column("sparse").views["xz"]
    x, y = view.pixel_of(np.array([7.0, 4.0, 2.0]))
    qtbot.mouseClick(view, Qt.LeftButton, pos=QPoint(int(x), int(y)))
    assert ortho.cursor[0] == 7 and viewer.dims.point[0] == pytest.approx(7)
    np.testing.assert_array_equal(ortho.column("truth").views["xy"].image, truth[7])
    # ... and napari's slider moves the cursor.
    viewer.dims.set_point(0, 3)
    assert ortho.cursor[0] == 3
    np.testing.assert_array_equal(ortho.column("truth").views["xy"].image, truth[3])
    np.testing.assert_array_equal(ortho.column("sparse").views["xy"].image, truth[4])
    # Without sync the two are independent.
    ortho.sync_check.setChecked(False)
    viewer.dims.set_point(0, 6)
    assert ortho.cursor[0] == 3


def test_orthoview_follows_contrast_and_new_layers(viewer, qtbot, two_layers):
    truth, ortho = two_layers
    ortho.set_cursor(z=0, y=0, x=0)
    view = ortho.column("truth").views["xy"]
    assert view._rgb[2, 0, 0] == round(10 / 270 * 255)  # truth[0, 2, 0] == 10
    viewer.layers["truth"].contrast_limits = (0, 10)
    qtbot.waitUntil(lambda: view._rgb[2, 0, 0] == 255, timeout=2000)  # redraws are coalesced
    viewer.add_image(truth * 2, name="third")
    assert [c.sampler.layer.name for c in ortho.columns.values()] == ["truth", "sparse", "third"]
    viewer.layers.remove("sparse")
    assert [c.sampler.layer.name for c in ortho.columns.values()] == ["truth", "third"]


def test_inr_fit_is_shown_as_it_goes_and_final_planes_replace_it(viewer, qtbot, monkeypatch):
    """The projection INR streams previews of its fit into the result layer before its planes;
    the finished layer holds exactly the engine's result (no preview left behind)."""
    from napari_voxrecon.engine import Job, run_job
    from napari_voxrecon.methods import inr_methods

    monkeypatch.setattr(inr_methods, "PREVIEW_SECONDS", 0.0)
    proj = smooth_volume((4, 16, 16), seed=3) + 1.0
    viewer.add_image(proj, name="proj")
    widget = open_reconstruct(viewer)
    widget.set_input("proj")
    widget.task_combo.setCurrentText("projection")
    widget.method_combo.setCurrentText("inr")
    widget.set_params(interval=3, iterations=60)
    shown = []
    original = widget._write_preview

    def record(event):
        original(event)
        shown.append((len(widget.written["result"]), float(np.abs(widget.outputs["result"].data).max())))

    widget._write_preview = record
    assert run_and_wait(qtbot, widget) == "done"
    assert shown and all(done == 0 and peak > 0 for done, peak in shown)  # previews came before any final plane
    expected = run_job(Job("projection", proj, {"interval": 3, "iterations": 60}, method="inr", seed=widget.seed_spin.value(), device="cpu"))["result"]
    np.testing.assert_array_equal(widget.outputs["result"].data, expected)


def test_microdiffusion_run_shows_prior_result_and_uncertainty_layers(viewer, qtbot, tmp_path):
    """The projection task's diffusion method: INR fit, then prior, result and uncertainty
    layers filled group by group; the result keeps every projection exactly."""
    from napari_voxrecon.training.train_projection import train_projection

    weights = train_projection("microdiffusion", [], str(tmp_path / "md"), steps=2, batch_size=2, crop=16,
                               channels=(8, 16), intervals=(3,), bank_phantoms=1, bank_iterations=10,
                               phantom_shape=(9, 16, 16), log=lambda m: None, threads=1)
    proj = smooth_volume((4, 16, 16), seed=3) + 1.0
    viewer.add_image(proj, name="proj")
    widget = open_reconstruct(viewer)
    widget.set_input("proj")
    widget.task_combo.setCurrentText("projection")
    widget.method_combo.setCurrentText("microdiffusion")
    widget.set_params(interval=3, iterations=20, steps=2, samples=2, weights=str(weights))
    assert run_and_wait(qtbot, widget) == "done"
    assert set(widget.outputs) == {"result", "prior", "uncertainty"}
    result = widget.outputs["result"].data
    assert result.shape == (12, 16, 16)
    np.testing.assert_allclose(result.reshape(4, 3, 16, 16).astype(np.float64).mean(axis=1), proj, rtol=1e-5, atol=1e-4)
    prior = widget.outputs["prior"]
    assert prior.data.any()
    # the prior is in intensity units: shown like the input (and the result), not re-scaled
    assert tuple(prior.contrast_limits) == tuple(widget.outputs["result"].contrast_limits)
    assert prior.colormap.name == widget.outputs["result"].colormap.name


def test_restore_dit_run_streams_result_and_uncertainty_on_the_output_grid(viewer, qtbot, tmp_path):
    """The restore task's diffusion transformer in the widget: weights from a folder, K samples,
    result and uncertainty layers on the upsampled grid (input voxel size / factors)."""
    from napari_voxrecon.training.train_restore import train_restore

    weights = train_restore("dit", [], str(tmp_path / "dit"), steps=2, batch_size=1, crop=16, depth=6, dim=16, blocks=1,
                            heads=2, phantom_pool=1, phantom_shape=(8, 16, 16), log=lambda m: None, threads=1)
    lq = smooth_volume((4, 16, 16), seed=2)
    viewer.add_image(lq, name="lq", scale=(2.0, 0.5, 0.5))
    widget = open_reconstruct(viewer)
    widget.set_input("lq")
    widget.task_combo.setCurrentText("restore")
    widget.method_combo.setCurrentText("dit")
    widget.set_params(axial_factor=3, samples=2, steps=1, tile=32, weights=str(weights))
    assert run_and_wait(qtbot, widget) == "done"
    assert set(widget.outputs) == {"result", "uncertainty"}
    result = widget.outputs["result"]
    assert result.data.shape == (12, 16, 16) and np.isfinite(result.data).all()
    np.testing.assert_allclose(result.scale[-3:], (2.0 / 3, 0.5, 0.5))
    assert widget.outputs["uncertainty"].data.max() > 0
