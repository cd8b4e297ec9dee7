"""Screenshots of the napari plugin for the user guide.

Run under a virtual X server (the canvas needs OpenGL):

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/screenshots.py

Writes ``docs/images/reconstruct.png`` (the Reconstruct widget after a cubic run on the sparse
sample), ``docs/images/orthoviews.png`` (the Orthogonal views comparing the sparse input, the
linear and cubic reconstructions and the ground truth at one 3D cursor) and
``docs/images/sparse3diff_widget.png`` (the widget with Sparse3Diff chosen: weights field,
sampling parameters, the fine-tune button, after a run with 2 samples that made an uncertainty
layer). Each image is kept under ~300 KB (downscaled if needed) so the guide stays light.

The Sparse3Diff picture needs weights: ``--weights SPEC`` (a folder, Hub id or embedded name);
without it the embedded default is used, and if the package ships none a tiny model is trained
for a few steps first (the picture shows the interface, not the quality of a trained model).
Pass ``--only sparse3diff`` to make just that picture. ``--only microdiffusion`` makes
``docs/images/microdiffusion_views.png`` (the projection sample reconstructed by MicroDiffusion
with the given or embedded weights; Orthogonal views of projections, INR prior, result, truth).
``--only restore`` makes ``docs/images/restore_views.png`` (the x4 low-resolution sample
restored by ``care`` and ``dit`` with the embedded weights; Orthogonal views of the input,
care, dit and truth). ``--only diffraction`` makes ``docs/images/diffraction_widget.png`` (a
simulated cell phantom's diffraction images fitted by ``nvp`` in the Reconstruct widget, with
its loss curve) and ``docs/images/diffraction_views.png`` (the Orthogonal views of the true
and the recovered refractive index). ``--only large`` makes ``docs/images/large_volume.png``: a
zarr stack opened lazily, a preview of the region in view and a run to zarr stopped half-way
(the output layer shows the chunks finished so far).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

PLUGIN = "napari-voxrecon"
MAX_BYTES = 300_000
WINDOW = (1700, 1000)


def process_events(seconds: float = 0.3) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def run_to_end(widget, method: str, timeout: float = 120.0) -> None:
    """Run the Reconstruct widget with ``method`` and wait for the run to finish."""
    from qtpy.QtWidgets import QApplication

    widget.method_combo.setCurrentText(method)
    if widget.run() is None:
        raise RuntimeError(f"the {method} run did not start: {widget.status.text()}")
    end = time.perf_counter() + timeout
    while widget.running:
        if time.perf_counter() > end:
            raise TimeoutError(f"the {method} run did not finish in {timeout:.0f} s")
        QApplication.processEvents()
        time.sleep(0.01)
    if not widget.status.text().startswith("done"):
        raise RuntimeError(f"the {method} run ended with: {widget.status.text()}")


def save(viewer, path: Path) -> None:
    """Screenshot the whole window; downscale until the PNG is under MAX_BYTES."""
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    image = PILImage.open(path).convert("RGB")
    # A 256-colour palette is invisible on a dark UI with grey images and shrinks noisy
    # microscopy crops a lot more than downscaling would; downscale only if still too big.
    scale = 1.0
    while True:
        size = (int(image.width * scale), int(image.height * scale))
        shown = image if scale == 1.0 else image.resize(size, PILImage.LANCZOS)
        shown.quantize(colors=256, method=PILImage.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES or scale < 0.5:
            break
        scale *= 0.9
    print(f"{path}: {PILImage.open(path).size}, {path.stat().st_size / 1000:.0f} KB")


def interesting_cursor(truth: np.ndarray, voxel: tuple[float, float, float]) -> tuple[float, float, float]:
    """A point inside a bright nucleus, on a plane between two acquired planes (z = 4k + 2)."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(truth.astype(np.float32), 3)
    margin = truth.shape[1] // 5  # away from the border, so every crosshair has room
    inner = smooth[:, margin:-margin, margin:-margin]
    z, y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    y, x = y + margin, x + margin
    z = int(np.clip(4 * (z // 4) + 2, 2, truth.shape[0] - 3))
    return z * voxel[0], y * voxel[1], x * voxel[2]


def orthoviews(viewer, layers: list, shown, truth, path: Path) -> None:
    """Dock the Orthogonal views on ``layers`` (only ``shown`` visible in the canvas), put the
    cursor in a bright nucleus of ``truth`` and save the window to ``path``."""
    for layer in viewer.layers:
        layer.visible = layer.name == shown.name
    _, ortho = viewer.window.add_plugin_dock_widget(PLUGIN, "Orthogonal views")
    ortho.set_layers([layer.name for layer in layers])
    viewer.window._qt_window.resizeDocks([ortho.parent()], [int(WINDOW[0] * 0.6)], 1)  # Qt.Horizontal
    process_events(0.5)
    ortho.fit()
    viewer.reset_view()
    ortho.set_cursor(*interesting_cursor(np.asarray(truth.data), tuple(truth.scale)))
    process_events(1.0)
    save(viewer, path)


def tiny_weights(folder: Path) -> str:
    """Train Sparse3Diff for a few steps on the ground-truth sample (seconds on a CPU)."""
    from napari_voxrecon._sample_data import load_ground_truth
    from napari_voxrecon.cli import main as cli
    from napari_voxrecon.io import write_volume

    gt = load_ground_truth()
    write_volume(folder / "gt.tif", gt.data, gt.voxel_size)
    out = folder / "sparse3diff-tiny"
    rc = cli(["train", "sparse3diff", "--data", str(folder / "gt.tif"), "-o", str(out), "--steps", "5",
              "--batch-size", "2", "--crop", "32", "--channels", "8", "16", "--phantom-fraction", "0",
              "--holdout", "0", "--threads", "1"])
    if rc != 0:
        raise RuntimeError("training the tiny Sparse3Diff model failed")
    return str(out)


def sparse3diff_weights(spec: str | None, workdir: Path) -> str:
    """``spec`` if given, else the embedded default if there is one, else a tiny trained model."""
    from napari_voxrecon.errors import VoxreconError
    from napari_voxrecon.weights import default_weights

    if spec:
        return spec
    try:
        default_weights("sparse3diff")
        return "default"
    except VoxreconError:
        return tiny_weights(workdir)


def sparse3diff_widget(viewer, out_dir: Path, weights: str) -> None:
    """The Reconstruct widget set to Sparse3Diff after a 2-sample run on the sparse sample."""
    (truth,) = viewer.open_sample(PLUGIN, "cells3d_nuclei")
    (sparse,) = viewer.open_sample(PLUGIN, "cells3d_nuclei_sparse4")
    truth.visible = False
    viewer.dims.axis_labels = ("z", "y", "x")
    _, recon = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    recon.set_input(sparse.name)
    recon.task_combo.setCurrentText("sparse")
    recon.method_combo.setCurrentText("sparse3diff")
    recon.device_combo.setCurrentText("auto")
    recon.set_params(weights=weights, steps=2, samples=2, tile=128)  # the defaults
    run_to_end(recon, "sparse3diff", timeout=600.0)
    result, uncertainty = recon.outputs["result"], recon.outputs["uncertainty"]
    # Result and uncertainty side by side: hidden layers take no place in napari's grid, so the
    # inputs stay in the layer list (and the widget keeps the sparse stack as its input).
    sparse.visible = False
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 2)
    viewer.dims.set_point(0, 26 * truth.scale[0])  # between the acquired planes 24 and 28
    viewer.layers.selection.active = uncertainty
    viewer.reset_view()
    process_events(1.0)
    save(viewer, out_dir / "sparse3diff_widget.png")


def sample_in_reconstruct(viewer, sample: str, task: str) -> tuple:
    """Open the ground-truth sample and ``sample``, dock the Reconstruct widget on the latter with
    ``task`` chosen; returns (truth layer, input layer, dock, widget)."""
    (truth,) = viewer.open_sample(PLUGIN, "cells3d_nuclei")
    (layer,) = viewer.open_sample(PLUGIN, sample)
    viewer.dims.axis_labels = ("z", "y", "x")
    dock, recon = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    recon.set_input(layer.name)
    recon.task_combo.setCurrentText(task)
    return truth, layer, dock, recon


def microdiffusion_views(viewer, out_dir: Path, weights: str) -> None:
    """The projection task: MicroDiffusion on the projection sample, then the Orthogonal views
    comparing the projections (upsampled), the INR prior, the result and the ground truth."""
    truth, proj, recon_dock, recon = sample_in_reconstruct(viewer, "cells3d_nuclei_projection4", "projection")
    recon.method_combo.setCurrentText("microdiffusion")
    recon.set_params(weights=weights, tile=128)
    run_to_end(recon, "microdiffusion", timeout=900.0)
    result, prior = recon.outputs["result"], recon.outputs["prior"]
    viewer.window.remove_dock_widget(recon_dock)
    orthoviews(viewer, [proj, prior, result, truth], result, truth, out_dir / "microdiffusion_views.png")


def restore_views(viewer, out_dir: Path) -> None:
    """The restore task: care and dit (embedded weights) on the x4 low-resolution sample, then
    the Orthogonal views comparing the input, both results and the ground truth."""
    truth, low, recon_dock, recon = sample_in_reconstruct(viewer, "cells3d_nuclei_lowres4", "restore")
    results = {}
    for method in ("care", "dit"):
        recon.method_combo.setCurrentText(method)
        run_to_end(recon, method, timeout=900.0)
        results[method] = recon.outputs["result"]
    viewer.window.remove_dock_widget(recon_dock)
    orthoviews(viewer, [low, results["care"], results["dit"], truth], results["dit"], truth, out_dir / "restore_views.png")


def diffraction_views(viewer, out_dir: Path, workdir: Path) -> None:
    """The diffraction task: 6 simulated images of a cell phantom fitted by nvp, with the loss
    curve in the Reconstruct dock and the true and recovered index in the Orthogonal views."""
    from napari_voxrecon.cli import main as cli
    from napari_voxrecon.io import read_volume, write_volume
    from napari_voxrecon.simulate.ri_phantoms import make_ri_phantom

    voxel = (0.4, 0.2, 0.2)
    ri = make_ri_phantom((24, 48, 48), "cell", seed=7, voxel_size=voxel)
    write_volume(workdir / "ri.tif", ri, voxel)
    if cli(["simulate", "diffraction", str(workdir / "ri.tif"), "-o", str(workdir / "images.tif"), "--views", "6",
            "--sources-out", str(workdir / "sources.json"), "--noise-level", "0.01", "-q"]) != 0:
        raise RuntimeError("simulating the diffraction images failed")
    truth = viewer.add_image(ri, name="index (truth)", scale=voxel, colormap="magma", visible=False)
    images = viewer.add_image(read_volume(workdir / "images.tif").data, name="diffraction images")
    viewer.dims.axis_labels = ("z", "y", "x")
    recon_dock, recon = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    recon.set_input(images.name)
    recon.task_combo.setCurrentText("diffraction")
    recon.method_combo.setCurrentText("nvp")
    recon.set_params(sources=str(workdir / "sources.json"), optics=str(workdir / "images_optics.json"), iterations=200)
    run_to_end(recon, "nvp", timeout=600.0)
    result = recon.outputs["result"]
    result.colormap = "magma"
    result.contrast_limits = truth.contrast_limits = (float(ri.min()), float(ri.max()))
    images.visible = False
    images.scale = (1.0, *voxel[1:])  # display only: the canvas then frames the index volumes
    viewer.dims.set_point(0, ri.shape[0] // 2 * voxel[0])
    viewer.reset_view()
    process_events(1.0)
    save(viewer, out_dir / "diffraction_widget.png")
    viewer.window.remove_dock_widget(recon_dock)
    orthoviews(viewer, [truth, result], result, truth, out_dir / "diffraction_views.png")


def large_volume(viewer, out_dir: Path, workdir: Path) -> None:
    """A larger stack from a zarr store: preview of the region in view, then a run to zarr
    cancelled half-way, so the output layer shows the chunks written so far."""
    from qtpy.QtWidgets import QApplication

    from napari_voxrecon.engine import dask_runner
    from napari_voxrecon.engine.events import ChunkDone
    from napari_voxrecon._sample_data import load_ground_truth
    from napari_voxrecon.io.zarr_store import write_zarr

    crop = load_ground_truth()
    big = np.tile(crop.data[::4], (1, 3, 3))  # every 4th plane, a 3 x 3 mosaic: a wider field
    write_zarr(workdir / "mosaic.zarr", big, (crop.voxel_size[0] * 4, *crop.voxel_size[1:]))
    (layer,) = viewer.open(str(workdir / "mosaic.zarr"), plugin=PLUGIN)
    viewer.dims.axis_labels = ("z", "y", "x")
    recon_dock, recon = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    recon.set_input(layer.name)
    recon.task_combo.setCurrentText("sparse")
    recon.method_combo.setCurrentText("unet")
    recon.set_params(interval=4)
    viewer.dims.set_point(0, 7 * layer.scale[0])
    viewer.camera.center = (0, big.shape[1] * layer.scale[1] * 0.3, big.shape[2] * layer.scale[2] * 0.3)
    viewer.camera.zoom = viewer.camera.zoom * 3
    process_events(0.5)
    recon.preview()
    while recon.running:
        QApplication.processEvents()
        time.sleep(0.01)
    preview = recon.outputs["result"]
    original = dask_runner.ChunkedJob.__init__
    dask_runner.ChunkedJob.__init__ = lambda self, *a, **k: original(self, *a, **{**k, "planes": 8, "tile": 192})
    try:
        worker = recon.run_to_zarr(str(workdir / "mosaic_unet.zarr"))
        chunks = []

        def stop_half_way(event) -> None:
            if isinstance(event, ChunkDone):
                chunks.append(event)
                if len(chunks) == 14:
                    recon.cancel()

        worker.yielded.connect(stop_half_way)
        while recon.running:
            QApplication.processEvents()
            time.sleep(0.01)
    finally:
        dask_runner.ChunkedJob.__init__ = original
    viewer.layers.move(viewer.layers.index(preview), len(viewer.layers))  # the preview on top
    lo, hi = (float(v) for v in np.percentile(big, [1, 99.8]))
    for shown in (preview, recon.outputs["result"]):
        shown.contrast_limits = (lo, hi)
    preview.colormap, preview.blending = "green", "additive"  # the previewed block stands out
    layer.visible = False
    viewer.reset_view()
    viewer.dims.set_point(0, 28 * recon.outputs["result"].scale[0])
    process_events(1.0)
    save(viewer, out_dir / "large_volume.png")


def main(out_dir: Path, only: str | None = None, weights: str | None = None) -> None:
    import tempfile
    import warnings

    import napari

    # Keep napari's own deprecation notices (PyQt5 backend, ...) out of the pictures.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*PyQt5.*")
    warnings.filterwarnings("ignore", message=".*theme.*")
    try:  # the PyQt5 deprecation toast is shown by the window itself, not through warnings
        import napari._qt.qt_main_window as qt_main_window

        qt_main_window.SHOW_QT_WARNING = False
    except (ImportError, AttributeError):
        pass

    def fresh_viewer() -> "napari.Viewer":
        viewer = napari.Viewer(show=True, title="napari-voxrecon")
        viewer.window.resize(*WINDOW)
        return viewer

    # One picture per scene; each gets its own window and temporary folder.
    scenes = {
        "sparse3diff": lambda v, tmp: sparse3diff_widget(v, out_dir, sparse3diff_weights(weights, tmp)),
        "microdiffusion": lambda v, tmp: microdiffusion_views(v, out_dir, weights or "default"),
        "restore": lambda v, tmp: restore_views(v, out_dir),
        "diffraction": lambda v, tmp: diffraction_views(v, out_dir, tmp),
        "large": lambda v, tmp: large_volume(v, out_dir, tmp),
    }
    for name, scene in scenes.items():
        if only == name or (only is None and name == "sparse3diff"):
            with tempfile.TemporaryDirectory(prefix="voxrecon-shots-") as tmp:
                viewer = fresh_viewer()
                scene(viewer, Path(tmp))
                viewer.close()
    if only not in (None, "overview"):
        return

    viewer = fresh_viewer()
    (truth,) = viewer.open_sample(PLUGIN, "cells3d_nuclei")
    (sparse,) = viewer.open_sample(PLUGIN, "cells3d_nuclei_sparse4")
    truth.visible = False
    viewer.dims.axis_labels = ("z", "y", "x")
    recon_dock, recon = viewer.window.add_plugin_dock_widget(PLUGIN, "Reconstruct")
    recon.set_input(sparse.name)
    recon.task_combo.setCurrentText("sparse")
    run_to_end(recon, "cubic")
    cubic = recon.outputs["result"]
    sparse.visible = False
    # Output plane 26 lies half-way between the acquired planes 24 and 28.
    viewer.dims.set_point(0, 26 * truth.scale[0])
    viewer.layers.selection.active = cubic
    viewer.reset_view()
    process_events(1.0)
    save(viewer, out_dir / "reconstruct.png")

    run_to_end(recon, "linear")
    linear = recon.outputs["result"]
    viewer.window.remove_dock_widget(recon_dock)
    orthoviews(viewer, [sparse, linear, cubic, truth], cubic, truth, out_dir / "orthoviews.png")
    viewer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    parser.add_argument("--only", choices=("overview", "sparse3diff", "microdiffusion", "restore", "diffraction", "large"),
                        help="make only the overview pictures (reconstruct, orthoviews) or only the Sparse3Diff one")
    parser.add_argument("--weights", help="Sparse3Diff weights for its picture (default: embedded, else a tiny model)")
    args = parser.parse_args()
    main(args.out, args.only, args.weights)
