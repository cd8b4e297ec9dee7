"""Screenshots of the napari plugin for the user guide.

Run under a virtual X server (the canvas needs OpenGL):

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/screenshots.py

Writes ``docs/images/reconstruct.png`` (the Reconstruct widget after a cubic run on the sparse
sample) and ``docs/images/orthoviews.png`` (the Orthogonal views comparing the sparse input, the
linear and cubic reconstructions and the ground truth at one 3D cursor). Each image is kept
under ~300 KB (downscaled if needed) so the guide stays light.
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


def main(out_dir: Path) -> None:
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

    viewer = napari.Viewer(show=True, title="napari-voxrecon")
    viewer.window.resize(*WINDOW)
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
    for layer in viewer.layers:
        layer.visible = layer.name == cubic.name
    _, ortho = viewer.window.add_plugin_dock_widget(PLUGIN, "Orthogonal views")
    ortho.set_layers([sparse.name, linear.name, cubic.name, truth.name])
    dock = ortho.parent()
    viewer.window._qt_window.resizeDocks([dock], [int(WINDOW[0] * 0.6)], 1)  # Qt.Horizontal
    process_events(0.5)
    ortho.fit()
    viewer.reset_view()
    ortho.set_cursor(*interesting_cursor(np.asarray(truth.data), tuple(truth.scale)))
    process_events(1.0)
    save(viewer, out_dir / "orthoviews.png")
    viewer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    main(parser.parse_args().out)
