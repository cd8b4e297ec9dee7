"""Reading and writing volumes (TIFF, zarr / OME-Zarr) with their voxel size."""

from .volume import DEFAULT_VOXEL_SIZE, Volume, as_volume_array, check_volume, squeeze_to_3d
from .formats import read_volume, write_volume, output_exists, remove_output, format_of

__all__ = [
    "DEFAULT_VOXEL_SIZE",
    "Volume",
    "as_volume_array",
    "check_volume",
    "squeeze_to_3d",
    "read_volume",
    "write_volume",
    "output_exists",
    "remove_output",
    "format_of",
]
