"""napari dock widgets (Qt). Imported only when napari opens a widget, never by the core."""

from .orthoview import OrthoViewWidget
from .reconstruct import ReconstructWidget

__all__ = ["ReconstructWidget", "OrthoViewWidget"]
