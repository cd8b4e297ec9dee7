"""napari-voxrecon: reconstruct full 3D microscopy volumes from fast, sparse acquisitions.

The package root stays light (no torch, no Qt) so that napari's reader discovery and
``import napari_voxrecon`` are fast; heavy modules are imported where they are used.
"""

__version__ = "0.1.0"

from .errors import VoxreconError  # noqa: E402

__all__ = ["VoxreconError", "__version__"]
