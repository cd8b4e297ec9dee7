"""napari reader and writer: None (never an exception) for what they cannot read, voxel size kept."""

import numpy as np
import pytest
import tifffile

from napari_voxrecon._reader import get_reader, layer_name
from napari_voxrecon._writer import write_image
from napari_voxrecon.io import read_volume, write_volume

VOXEL = (0.7, 0.26, 0.13)


@pytest.fixture
def volume():
    rng = np.random.default_rng(7)
    return (rng.random((6, 12, 10)) * 1000).astype(np.float32)


def read(path):
    reader = get_reader(str(path))
    assert callable(reader), f"no reader for {path}"
    layers = reader(str(path))
    assert len(layers) == 1
    data, kwargs, kind = layers[0]
    assert kind == "image"
    return data, kwargs


# ---------------------------------------------------------------- reader: what it refuses
def test_reader_refuses_other_suffixes(tmp_path):
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert get_reader(str(png)) is None


def test_reader_refuses_missing_files(tmp_path):
    assert get_reader(str(tmp_path / "missing.tif")) is None
    assert get_reader(str(tmp_path / "missing.zarr")) is None


@pytest.mark.parametrize("content", [b"", b"this is not a TIFF file at all", b"II*\x00\xff\xff\xff\x7f"])
def test_reader_refuses_empty_or_corrupt_tiff(tmp_path, content):
    path = tmp_path / "broken.tif"
    path.write_bytes(content)
    assert get_reader(str(path)) is None


def test_reader_refuses_folders_that_are_not_zarr(tmp_path):
    folder = tmp_path / "plain.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a zarr store")
    assert get_reader(str(folder)) is None
    assert get_reader(str(tmp_path)) is None  # no .zarr suffix


def test_reader_refuses_a_list_with_one_unreadable_path(tmp_path, volume):
    good = tmp_path / "good.tif"
    write_volume(good, volume, VOXEL)
    assert get_reader([str(good), str(tmp_path / "other.png")]) is None
    assert get_reader([]) is None


def test_reader_never_raises_on_odd_input():
    assert get_reader(None) is None  # type: ignore[arg-type]
    assert get_reader(12) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- reader: what it opens
def test_reader_tiff_gives_data_and_scale(tmp_path, volume):
    path = tmp_path / "stack.ome.tif"
    write_volume(path, volume, VOXEL)
    data, kwargs = read(path)
    np.testing.assert_array_equal(np.asarray(data), volume)
    np.testing.assert_allclose(kwargs["scale"], VOXEL, rtol=1e-5)
    assert kwargs["name"] == "stack"
    assert kwargs["metadata"]["source"] == str(path)


def test_reader_zarr_is_lazy_and_gives_scale(tmp_path, volume):
    path = tmp_path / "stack.zarr"
    write_volume(path, volume, VOXEL)
    data, kwargs = read(path)
    assert not isinstance(data, np.ndarray), "zarr stores should open lazily"
    assert data.shape == volume.shape
    np.testing.assert_array_equal(np.asarray(data), volume)
    np.testing.assert_allclose(kwargs["scale"], VOXEL)
    assert kwargs["metadata"]["voxrecon"]["complete"] is True


def test_reader_marks_an_unfinished_zarr_output(tmp_path, volume):
    from napari_voxrecon.io.zarr_store import create_zarr

    path = tmp_path / "partial.zarr"
    _, arr = create_zarr(path, volume.shape, VOXEL)
    arr[0] = volume[0]
    _, kwargs = read(path)
    assert kwargs["name"] == "partial (incomplete)"
    assert kwargs["metadata"]["voxrecon"]["complete"] is False


def test_reader_squeezes_singleton_axes_and_shows_2d_as_is(tmp_path, volume):
    path = tmp_path / "czyx.tif"
    tifffile.imwrite(path, volume[:, None], imagej=True, metadata={"axes": "ZCYX"})
    data, kwargs = read(path)
    assert np.asarray(data).shape == volume.shape
    flat = tmp_path / "plane.tif"
    tifffile.imwrite(flat, volume[0])
    data, kwargs = read(flat)
    assert np.asarray(data).shape == volume.shape[1:]
    assert "note" in kwargs["metadata"]


def test_reader_accepts_a_list_of_paths(tmp_path, volume):
    a, b = tmp_path / "a.tif", tmp_path / "b.zarr"
    write_volume(a, volume, VOXEL)
    write_volume(b, volume * 2, VOXEL)
    layers = get_reader([str(a), str(b)])([str(a), str(b)])
    assert [kw["name"] for _, kw, _ in layers] == ["a", "b"]


def test_layer_names_drop_ome_suffixes():
    assert layer_name("/x/cells.ome.tif") == "cells"
    assert layer_name("/x/cells.ome.zarr/") == "cells"
    assert layer_name("/x/cells.TIFF") == "cells"


# ---------------------------------------------------------------- writer
@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".zarr"])
def test_writer_round_trip_keeps_scale(tmp_path, volume, suffix):
    path = tmp_path / f"out{suffix}"
    written = write_image(str(path), volume, {"scale": (2.0, *VOXEL), "name": "x"})  # 4 entries: last 3 count
    assert written == [str(path)]
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, volume)
    np.testing.assert_allclose(vol.voxel_size, VOXEL, rtol=1e-5)
    data, kwargs = read(path)
    np.testing.assert_allclose(kwargs["scale"], VOXEL, rtol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_writer_replaces_only_after_success(tmp_path, volume, suffix, monkeypatch):
    path = tmp_path / f"out{suffix}"
    write_image(str(path), volume, {"scale": VOXEL})
    # napari's save dialog confirmed the overwrite: the new content replaces the old one ...
    write_image(str(path), volume + 1, {"scale": VOXEL})
    np.testing.assert_array_equal(read_volume(path).data, volume + 1)

    # ... but a failing write leaves the previous file untouched.
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("napari_voxrecon.io.formats.write_tiff", broken)
    monkeypatch.setattr("napari_voxrecon.io.formats.write_zarr", broken)
    with pytest.raises(OSError):
        write_image(str(path), volume + 2, {"scale": VOXEL})
    np.testing.assert_array_equal(read_volume(path).data, volume + 1)


def test_writer_converts_dtypes_imagej_cannot_hold(tmp_path, volume):
    path = tmp_path / "f64.tif"
    write_image(str(path), volume.astype(np.float64), {"scale": VOXEL})
    vol = read_volume(path)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, volume)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_writer_and_reader_through_napari(make_napari_viewer, tmp_path, volume, suffix):
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="vol", scale=VOXEL)
    path = tmp_path / f"saved{suffix}"
    viewer.layers.save(str(path), selected=False, plugin="napari-voxrecon")
    layers = viewer.open(str(path), plugin="napari-voxrecon")
    assert layers[0].name == "saved"
    np.testing.assert_allclose(layers[0].scale, VOXEL, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(layers[0].data), volume)
