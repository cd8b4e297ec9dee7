"""Physics of the ``diffraction`` task: optics parameters and multi-slice wave optics (torch,
differentiable, usable without any network)."""

from .optics import Optics
from .wave_optics import forward_images, point_source_field, propagate, pupil, transfer_function

__all__ = ["Optics", "forward_images", "point_source_field", "propagate", "pupil", "transfer_function"]
