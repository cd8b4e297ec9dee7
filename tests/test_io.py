import numpy as np
import pytest
import tifffile

from napari_voxrecon.errors import InputError, VoxreconError
from napari_voxrecon.io import read_volume, write_volume


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_round_trip_keeps_data_and_voxel_size(tmp_path, small_volume, dtype, suffix):
    data = small_volume.astype(dtype)
    path = tmp_path / f"vol{suffix}"
    write_volume(path, data, (0.7, 0.26, 0.13))
    vol = read_volume(path)
    assert vol.shape == data.shape
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.voxel_size, (0.7, 0.26, 0.13), rtol=1e-5)
    assert not list(tmp_path.glob(".*partial*")), "temporary file left behind"


def test_write_refuses_existing_output(tmp_path, small_volume):
    path = tmp_path / "v.tif"
    write_volume(path, small_volume, (1, 1, 1))
    before = path.read_bytes()
    with pytest.raises(VoxreconError, match="already exists"):
        write_volume(path, small_volume * 2, (1, 1, 1))
    assert path.read_bytes() == before
    write_volume(path, small_volume * 2, (1, 1, 1), overwrite=True)
    np.testing.assert_allclose(read_volume(path).data, small_volume * 2)


def test_ome_tiff_voxel_size_in_nanometres(tmp_path, small_volume):
    path = tmp_path / "v.ome.tif"
    tifffile.imwrite(path, small_volume, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeZ": 500, "PhysicalSizeZUnit": "nm",
        "PhysicalSizeY": 0.2, "PhysicalSizeX": 0.2})
    vol = read_volume(path)
    np.testing.assert_allclose(vol.voxel_size, (0.5, 0.2, 0.2))


def test_imagej_hyperstack_singleton_axes_squeezed(tmp_path, small_volume):
    path = tmp_path / "tzcyx.tif"
    data = small_volume[None, :, None]  # T=1, Z, C=1, Y, X
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX", "spacing": 2.0, "unit": "um"}, resolution=(5, 5))
    vol = read_volume(path)
    assert vol.shape == small_volume.shape
    assert vol.metadata["axes"] == "ZYX"
    np.testing.assert_allclose(vol.voxel_size, (2.0, 0.2, 0.2))


def test_multichannel_refused_with_clear_message(tmp_path, small_volume):
    path = tmp_path / "zcyx.tif"
    tifffile.imwrite(path, np.stack([small_volume, small_volume], 1), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(InputError, match=r"4D array.*3D stack \(Z, Y, X\) is expected"):
        read_volume(path)


def test_2d_image_refused(tmp_path):
    path = tmp_path / "plane.tif"
    tifffile.imwrite(path, np.ones((32, 32), np.uint16))
    with pytest.raises(InputError, match=r"2D.*whole z-stack \(for `diffraction`, the stack of K images"):
        read_volume(path)


def test_plain_3d_tiff_without_metadata_reads_as_zyx(tmp_path, small_volume):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, small_volume)
    vol = read_volume(path)
    assert vol.voxel_size == (1.0, 1.0, 1.0)
    assert vol.shape == small_volume.shape


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"not a tiff at all" * 10, "not a readable TIFF")])
def test_corrupt_and_empty_files(tmp_path, content, match):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        read_volume(path)


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "nope.tif")
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="unsupported"):
        read_volume(tmp_path / "x.png")
    with pytest.raises(VoxreconError, match="unsupported output"):
        write_volume(tmp_path / "out.png", np.zeros((2, 2, 2)))


def test_ome_zarr_04_and_plain_array(tmp_path, small_volume):
    import zarr

    g = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w", zarr_format=2)
    g.create_array("s0", data=small_volume[None])  # C=1, Z, Y, X
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "c", "type": "channel"}, {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1.5, 0.3, 0.3]}]}]}]
    vol = read_volume(tmp_path / "v04.zarr")
    np.testing.assert_array_equal(vol.data, small_volume)
    np.testing.assert_allclose(vol.voxel_size, (1.5, 0.3, 0.3))

    a = zarr.create_array(str(tmp_path / "plain.zarr"), data=small_volume)
    a.attrs["voxel_size"] = [2.0, 0.5, 0.5]
    vol = read_volume(tmp_path / "plain.zarr")
    np.testing.assert_allclose(vol.voxel_size, (2.0, 0.5, 0.5))


def test_zarr_folder_that_is_not_zarr(tmp_path):
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(InputError, match="zarr"):
        read_volume(tmp_path / "junk.zarr")


@pytest.mark.parametrize("dtype", [np.float64, np.int32, bool])
def test_types_imagej_cannot_hold_are_converted(tmp_path, small_volume, dtype):
    data = (small_volume > 500) if dtype is bool else small_volume.astype(dtype)
    write_volume(tmp_path / "v.tif", data, (1, 1, 1))
    np.testing.assert_allclose(read_volume(tmp_path / "v.tif").data, np.asarray(data, np.float64))


def test_zarr_overwrite_keeps_old_store_if_write_fails(tmp_path, small_volume, monkeypatch):
    from napari_voxrecon.io import formats

    path = tmp_path / "v.zarr"
    write_volume(path, small_volume, (1, 1, 1))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(formats, "write_zarr", boom)
    with pytest.raises(OSError):
        write_volume(path, small_volume * 2, (1, 1, 1), overwrite=True)
    np.testing.assert_array_equal(read_volume(path).data, small_volume)


def test_rgb_tiff_refused(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.random.randint(0, 255, (32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="RGB"):
        read_volume(path)
