"""The Reconstruct widget with learned weights: the weights field, Sparse3Diff runs with an
uncertainty layer, and fine-tuning (self-alignment) from the widget, with cancel.

A tiny Sparse3Diff model is trained once for this module through the CLI (a few seconds), so no
weights need to ship. Run under a virtual X server:
``xvfb-run -a python -m pytest tests/test_napari_finetune.py``. Waiting is done on the widget's
signals, never with sleeps.
"""

import json
import threading

import numpy as np
import pytest
from qtpy.QtCore import Qt

PLUGIN = "napari-voxrecon"
TIMEOUT_MS = 60_000
INTERVAL = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(weights folder, sparse stack): Sparse3Diff trained for 3 steps on a small phantom."""
    from napari_voxrecon.cli import main
    from napari_voxrecon.io import write_volume
    from napari_voxrecon.simulate.phantoms import make_phantom

    d = tmp_path_factory.mktemp("napari_finetune")
    gt = make_phantom((17, 48, 48), kind="nuclei", seed=3, voxel_size=(0.5, 0.25, 0.25)) * 1000 + 50
    gt = gt.astype(np.float32)
    write_volume(d / "gt.tif", gt, (0.5, 0.25, 0.25))
    folder = d / "w_sparse3diff"
    rc = main(["train", "sparse3diff", "--data", str(d / "gt.tif"), "-o", str(folder), "--steps", "3",
               "--batch-size", "2", "--crop", "32", "--channels", "8", "16", "--phantom-fraction", "0",
               "--holdout", "0", "--threads", "1"])
    assert rc == 0
    return folder, np.ascontiguousarray(gt[::INTERVAL])


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def errors(monkeypatch):
    """Messages passed to napari's show_error by the Reconstruct widget."""
    shown = []
    monkeypatch.setattr("napari_voxrecon.widgets.reconstruct.show_error", shown.append)
    return shown


def sparse3diff_widget(viewer, stack, weights, **params):
    viewer.add_image(stack, name="sparse", scale=(0.5 * INTERVAL, 0.25, 0.25))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    widget.set_input("sparse")
    widget.task_combo.setCurrentText("sparse")
    widget.method_combo.setCurrentText("sparse3diff")
    widget.device_combo.setCurrentText("cpu")
    widget.set_params(interval=INTERVAL, weights=str(weights), steps=2, tile=64, **params)
    return widget


def run_and_wait(qtbot, widget):
    with qtbot.waitSignal(widget.run_finished, timeout=TIMEOUT_MS) as blocker:
        assert widget.run() is not None
    return blocker.args[0]


# ---------------------------------------------------------------- the form
def test_sparse3diff_form_fields(viewer):
    from magicgui import widgets as mgw

    from napari_voxrecon.widgets.reconstruct import WeightsField

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    widget.task_combo.setCurrentText("sparse")
    widget.method_combo.setCurrentText("sparse3diff")
    form = widget.params_form
    assert [w.name for w in form] == ["interval", "weights", "steps", "sampler", "guidance", "samples", "tile", "precision"]
    assert isinstance(form["weights"], WeightsField) and form["weights"].picker.combo.isEditable()
    assert isinstance(form["steps"], mgw.SpinBox) and (form["steps"].min, form["steps"].max) == (1, 1000)
    assert isinstance(form["samples"], mgw.SpinBox) and (form["samples"].min, form["samples"].max) == (1, 64)
    assert isinstance(form["sampler"], mgw.ComboBox) and form["sampler"].choices == ("dpmpp_2m", "ddim", "ddpm")
    guidance = form["guidance"]
    assert isinstance(guidance, mgw.FloatSpinBox)
    assert (guidance.min, guidance.max, guidance.step) == (0.0, 10.0, 0.1)


def test_weights_field_lists_known_weights_and_accepts_folders_and_hub_ids(viewer, tiny, errors, monkeypatch, tmp_path):
    folder, _ = tiny
    cached = [  # what list_weights() reports for Hub repos in the local cache
        {"name": "org/s3d@v1", "source": "hub-cache", "method": "sparse3diff", "task": "sparse", "default": False,
         "path": "/cache/s3d", "repo_id": "org/s3d", "revision": "0123456789abcdef", "complete": True},
        {"name": "org/unet", "source": "hub-cache", "method": "unet", "task": "sparse", "default": False,
         "path": "/cache/unet", "repo_id": "org/unet", "revision": "fedcba9876543210", "complete": True},
    ]
    monkeypatch.setattr("napari_voxrecon.weights.list_weights", lambda: cached)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    widget.task_combo.setCurrentText("sparse")
    widget.method_combo.setCurrentText("sparse3diff")
    field = widget.params_form["weights"]
    # 'default' first, then the weights made for this method only.
    assert field.choices == ["default", "org/s3d@v1"]
    assert field.value == "default" and widget.params()["weights"] == "default"
    assert "Hugging Face Hub org/s3d" in field.picker.combo.itemData(1, Qt.ToolTipRole)

    # A local folder chosen with Browse… is checked, listed, selected and described.
    monkeypatch.setattr("napari_voxrecon.widgets.reconstruct.QFileDialog.getExistingDirectory",
                        lambda *a, **k: str(folder))
    field.picker.browse_button.click()
    assert field.value == str(folder.resolve()) == widget.params()["weights"]
    assert field.choices[-1] == str(folder.resolve())
    assert "local folder" in field.picker.combo.toolTip()
    # A folder that holds no weights is refused with the reason; the choice stays.
    assert not field.picker.choose_folder(tmp_path)
    assert errors and "model.safetensors" in errors[-1]
    assert field.value == str(folder.resolve())

    # Free text: a Hub id that is not cached is accepted as typed.
    field.picker.combo.setEditText("org/other@rev2")
    assert widget.params()["weights"] == "org/other@rev2"
    assert "not in the local cache" in field.picker.combo.toolTip()

    # Weights are remembered per method (a sparse3diff folder would be refused by unet).
    widget.method_combo.setCurrentText("unet")
    assert widget.params_form["weights"].value == "default"
    assert widget.params_form["weights"].choices == ["default", "org/unet"]  # not the sparse3diff folder
    widget.method_combo.setCurrentText("sparse3diff")
    assert widget.params()["weights"] == "org/other@rev2"
    assert str(folder.resolve()) in widget.params_form["weights"].choices  # the session's folders stay


# ---------------------------------------------------------------- runs
def test_sparse3diff_run_streams_a_result_and_an_uncertainty_layer(viewer, qtbot, tiny):
    folder, stack = tiny
    widget = sparse3diff_widget(viewer, stack, folder, samples=2)
    written = []
    widget.slice_written.connect(lambda output, z: written.append((output, z)))
    assert run_and_wait(qtbot, widget) == "done"

    result, uncertainty = widget.outputs["result"], widget.outputs["uncertainty"]
    total = (stack.shape[0] - 1) * INTERVAL + 1
    assert sorted(z for o, z in written if o == "result") == list(range(total))
    assert sorted(z for o, z in written if o == "uncertainty") == list(range(total))
    assert uncertainty.name == "sparse sparse3diff uncertainty"
    assert uncertainty.colormap.name == "magma" and result.colormap.name != "magma"
    names = [layer.name for layer in viewer.layers]
    assert names.index(uncertainty.name) == names.index(result.name) + 1  # just above the result
    np.testing.assert_array_equal(result.data[::INTERVAL], stack)  # acquired planes bit-exact
    assert (uncertainty.data[::INTERVAL] == 0).all() and (uncertainty.data[1::INTERVAL] > 0).all()
    # Contrast from the whole volume, not from the plane on screen (the last, acquired one: 0).
    lo, hi = uncertainty.contrast_limits
    assert lo == 0 and hi == pytest.approx(np.percentile(uncertainty.data, 99.5), rel=1e-4)
    assert uncertainty.contrast_limits_range[1] == pytest.approx(uncertainty.data.max(), rel=1e-4)
    assert result.metadata["voxrecon"]["params"]["samples"] == 2
    assert result.metadata["voxrecon"]["complete"] and uncertainty.metadata["voxrecon"]["complete"]


# ---------------------------------------------------------------- fine-tune
def test_finetune_saves_new_weights_selects_them_and_run_uses_them(viewer, qtbot, tiny, errors, tmp_path):
    folder, stack = tiny
    widget = sparse3diff_widget(viewer, stack, folder)
    assert widget.finetune_button.isVisibleTo(widget)
    target = tmp_path / "aligned"
    updates = (stack.shape[0] - 2) * (INTERVAL - 1)  # references with two neighbours x (n-1)
    with qtbot.waitSignal(widget.finetune_finished, timeout=TIMEOUT_MS) as blocker:
        assert widget.finetune(target) is not None
        assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    assert blocker.args == ["done"], widget.status.text()
    assert not errors

    assert (target / "model.safetensors").is_file()
    config = json.loads((target / "config.json").read_text())
    assert config["method"] == "sparse3diff"
    aligned = config["self_alignment"]
    assert aligned["stack"] == "sparse" and aligned["interval"] == INTERVAL and aligned["updates"] == updates
    assert aligned["base_weights"] == str(folder)
    field = widget.params_form["weights"]
    assert field.value == str(target) == widget.params()["weights"] and str(target) in field.choices
    assert "self-aligned on 'sparse'" in field.source()
    assert widget.progress.value() == widget.progress.maximum() == updates
    assert str(target) in widget.status.text() and widget.run_button.isEnabled()

    # Run now uses the fine-tuned weights.
    assert run_and_wait(qtbot, widget) == "done"
    assert widget.outputs["result"].metadata["voxrecon"]["params"]["weights"] == str(target)

    # A folder that already holds weights is never overwritten silently.
    before = (target / "model.safetensors").stat().st_mtime_ns
    assert widget.finetune(target) is None
    assert "already holds files" in errors[-1]
    assert (target / "model.safetensors").stat().st_mtime_ns == before


def test_cancel_during_finetune_stops_it_and_saves_nothing(viewer, qtbot, tiny, monkeypatch, tmp_path):
    import napari_voxrecon.models.self_alignment as sa

    folder, stack = tiny
    real_self_align = sa.self_align
    gate = threading.Event()
    produced = []

    def gated(*args, **kwargs):
        # Holds the fine-tune after its first update until Cancel was pressed, so the cancel
        # surely lands mid-run however fast the machine is.
        for rec in real_self_align(*args, **kwargs):
            produced.append(rec["update"])
            yield rec
            gate.wait(TIMEOUT_MS / 1000)

    monkeypatch.setattr(sa, "self_align", gated)
    widget = sparse3diff_widget(viewer, stack, folder)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    widget.finetune(out_dir / "aligned")
    qtbot.waitUntil(lambda: widget._finetune_updates[0] >= 1, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(widget.finetune_finished, timeout=TIMEOUT_MS) as blocker:
        qtbot.mouseClick(widget.cancel_button, Qt.LeftButton)
        gate.set()
    assert blocker.args == ["cancelled"]
    total = (stack.shape[0] - 2) * (INTERVAL - 1)
    assert len(produced) <= 2 < total  # stopped within one update of the cancel
    assert list(out_dir.iterdir()) == []  # no weights, no temporary folder
    assert widget.params()["weights"] == str(folder)  # the choice is unchanged
    assert "nothing was saved" in widget.status.text()
    assert widget.run_button.isEnabled() and widget.finetune_button.isEnabled() and not widget.running


def test_failed_finetune_is_reported_with_the_device_notice(viewer, qtbot, tiny, errors, monkeypatch, tmp_path):
    folder, stack = tiny
    warnings = []
    monkeypatch.setattr("napari_voxrecon.widgets.reconstruct.show_warning", warnings.append)
    monkeypatch.setattr("napari_voxrecon.engine.device.resolve_device",
                        lambda request="auto": ("cpu", "CUDA was requested but no CUDA GPU is available."))
    widget = sparse3diff_widget(viewer, stack, "no-such-weights")
    widget.device_combo.setCurrentText("cuda")
    with qtbot.waitSignal(widget.finetune_finished, timeout=TIMEOUT_MS) as blocker:
        widget.finetune(tmp_path / "aligned")
    assert blocker.args == ["failed"]
    assert warnings == ["CUDA was requested but no CUDA GPU is available."]
    assert len(errors) == 1 and "no-such-weights" in errors[0]
    assert not (tmp_path / "aligned").exists()
    assert widget.status.text().startswith("fine-tune failed:") and widget.run_button.isEnabled()


def test_finetune_button_is_shown_only_for_sparse3diff(viewer, errors):
    viewer.add_image(np.random.default_rng(0).random((5, 16, 16)).astype(np.float32), name="v")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    seen = set()
    for i in range(widget.task_combo.count()):
        widget.task_combo.setCurrentIndex(i)
        for j in range(widget.method_combo.count()):
            widget.method_combo.setCurrentIndex(j)
            shown = widget.finetune_button.isVisibleTo(widget)
            assert shown == ((widget.task_name, widget.method_name) == ("sparse", "sparse3diff"))
            seen.add(shown)
    assert seen == {True, False}
    widget.task_combo.setCurrentText("sparse")
    widget.method_combo.setCurrentText("linear")
    assert widget.finetune("/nonexistent") is None and "choose sparse3diff" in errors[-1]


def test_save_folder_proposal_and_confirmation(viewer, monkeypatch, tmp_path):
    from napari_voxrecon.widgets.finetune import default_finetune_folder
    from napari_voxrecon.widgets.reconstruct import QFileDialog, QMessageBox

    home = tmp_path / "home"
    assert default_finetune_folder("cells [sparse 4]", home) == home / "voxrecon-weights" / "cells-sparse-4-aligned"
    (home / "voxrecon-weights" / "cells-sparse-4-aligned").mkdir(parents=True)
    assert default_finetune_folder("cells [sparse 4]", home).name == "cells-sparse-4-aligned-2"

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("keep me")
    proposals = []

    def save_dialog(parent, caption, proposal, *a, **k):
        proposals.append(proposal)
        return str(full), ""

    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_dialog)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.No)
    assert widget._ask_finetune_folder("stack") is None  # declined: nothing to do
    assert proposals == [str(home / "voxrecon-weights" / "stack-aligned")]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    assert widget._ask_finetune_folder("stack") == (str(full), True)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "new"), ""))
    assert widget._ask_finetune_folder("stack") == (str(tmp_path / "new"), False)
