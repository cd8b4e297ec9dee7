"""Chunked, resumable, distributed reconstruction (engine/chunks.py, engine/dask_runner.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_voxrecon.cli import main
from napari_voxrecon.engine import CancelToken, Job, get_method, get_task, run_job
from napari_voxrecon.engine.chunks import plan_chunks
from napari_voxrecon.engine.dask_runner import ChunkedJob, dask_client, run_chunked
from napari_voxrecon.engine.events import ChunkDone, Progress
from napari_voxrecon.errors import InputError, JobCancelled, VoxreconError
from napari_voxrecon.io import read_volume
from napari_voxrecon.io.lazy import open_lazy
from napari_voxrecon.io.tiff import write_tiff
from napari_voxrecon.io.zarr_store import zarr_progress


@pytest.fixture
def stack(rng) -> np.ndarray:
    base = rng.random((11, 45, 58)).astype(np.float32)
    return (base * 200 + 20).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


CASES = [
    ("sparse", {"interval": 3}, "linear"),
    ("sparse", {"interval": 2}, "nearest"),
    ("projection", {"interval": 4}, "linear"),
    ("restore", {"axial_factor": 2, "lateral_factor": 2}, "trilinear"),
]


@pytest.mark.parametrize("task,params,method", CASES + [("sparse", {"interval": 4}, "cubic"), ("restore", {"axial_factor": 3}, "care")])
def test_plan_tiles_the_output_once_and_chunks_own_their_store_chunks(task, params, method):
    t, m = get_task(task), get_method(task, method)
    p = {**{q.name: q.default for q in (*t.params, *m.params)}, **params}
    shape = (11, 45, 58)
    plan = plan_chunks(t, m, p, shape, planes=5, tile=16)
    count = np.zeros(plan.output_shape, np.int32)
    owners: dict[tuple[int, int, int], int] = {}
    cz, cy, cx = plan.store_chunks
    for c in plan.chunks:
        count[c.output_slices] += 1
        (z0, z1), (y0, y1), (x0, x1) = c.write
        for iz in range(z0 // cz, (z1 - 1) // cz + 1):
            for iy in range(y0 // cy, (y1 - 1) // cy + 1):
                for ix in range(x0 // cx, (x1 - 1) // cx + 1):
                    assert owners.setdefault((iz, iy, ix), c.index) == c.index, "two chunks write one zarr chunk"
        # the crop lies inside what the block produces
        block_shape = t.output_shape(tuple(b - a for a, b in c.read), p)
        assert all(0 <= a < b <= s for (a, b), s in zip(c.crop, block_shape))
        assert [b - a for a, b in c.crop] == [b - a for a, b in c.write]
    assert (count == 1).all()


@pytest.mark.parametrize("task,params,method", CASES)
def test_chunked_equals_in_memory_bit_for_bit(tmp_path, stack, task, params, method):
    src = tmp_path / "in.tif"
    write_tiff(src, stack, (2.0, 0.5, 0.5))
    out = tmp_path / "out.zarr"
    events = []
    run_chunked(task, str(src), str(out), params, method, scheduler="synchronous", planes=4, tile=20, on_event=events.append)
    got = read_volume(out)
    ref = run_job(Job(task, stack, params, method))["result"]
    assert got.data.shape == ref.shape
    assert np.array_equal(got.data, ref)
    want_voxel = get_task(task).output_voxel_size((2.0, 0.5, 0.5), {**params, "lateral_factor": params.get("lateral_factor", 1)})
    assert np.allclose(got.voxel_size, want_voxel)
    done = [e for e in events if isinstance(e, ChunkDone)]
    assert len(done) == zarr_progress(out)["job"]["chunked"]["count"]
    assert zarr_progress(out)["complete"] is True


def test_lazy_zarr_input_with_a_singleton_axis(tmp_path, stack):
    import zarr

    src = tmp_path / "in.zarr"
    arr = zarr.create_array(str(src), shape=(1, *stack.shape), chunks=(1, 3, 16, 16), dtype=np.float32)
    arr[...] = stack[None]
    vol = open_lazy(src)
    assert vol.shape == stack.shape
    assert np.array_equal(vol.read(slice(2, 5), slice(3, 9), slice(10, 30)), stack[2:5, 3:9, 10:30])
    out = tmp_path / "out.zarr"
    run_chunked("sparse", str(src), str(out), {"interval": 2}, "linear", scheduler="synchronous", planes=3, tile=25)
    assert np.array_equal(read_volume(out).data, run_job(Job("sparse", stack, {"interval": 2}))["result"])


def test_compressed_tiff_is_read_lazily(tmp_path, stack):
    import tifffile

    src = tmp_path / "in.tif"
    tifffile.imwrite(src, stack, compression="zlib", metadata={"axes": "ZYX"})
    vol = open_lazy(src)
    assert not isinstance(vol.array, np.memmap)
    assert np.array_equal(vol.read(slice(0, 2), slice(5, 7), slice(0, 4)), stack[0:2, 5:7, 0:4])


def test_cancel_then_resume_gives_the_uninterrupted_result(tmp_path, stack):
    src = tmp_path / "in.tif"
    write_tiff(src, stack, (1, 1, 1))
    whole = tmp_path / "whole.zarr"
    run_chunked("restore", str(src), str(whole), {"axial_factor": 2}, "tricubic", scheduler="synchronous", planes=4, tile=20)
    out = tmp_path / "out.zarr"
    job = ChunkedJob("restore", str(src), str(out), {"axial_factor": 2}, "tricubic", planes=4, tile=20)
    cancel = CancelToken()
    finished = 0
    with pytest.raises(JobCancelled):
        for ev in job.run(None, cancel):
            if isinstance(ev, ChunkDone):
                finished += 1
                if finished == 5:
                    cancel.cancel()
    progress = zarr_progress(out)
    assert progress["complete"] is False and len(progress["chunks_done"]) == 5
    with pytest.raises(InputError, match="unfinished"):
        read_volume(out)
    # The same request resumes: only the missing chunks are computed.
    again = ChunkedJob("restore", str(src), str(out), {"axial_factor": 2}, "tricubic", planes=4, tile=20)
    events = list(again.run(None))
    assert sum(isinstance(e, ChunkDone) for e in events) == len(job.plan.chunks) - 5
    assert np.array_equal(read_volume(out).data, read_volume(whole).data)
    # Complete: refused without --overwrite; another chunking of an unfinished one is refused too.
    with pytest.raises(VoxreconError, match="already complete"):
        list(ChunkedJob("restore", str(src), str(out), {"axial_factor": 2}, "tricubic", planes=4, tile=20).run(None))


def _cancelled_after_one_chunk(tmp_path: Path, stack: np.ndarray) -> tuple[Path, Path]:
    """A sparse interval-2 run of ``stack`` into out.zarr, cancelled after its first chunk."""
    src = tmp_path / "in.tif"
    write_tiff(src, stack, (1, 1, 1))
    out = tmp_path / "out.zarr"
    cancel = CancelToken()
    with pytest.raises(JobCancelled):
        for ev in ChunkedJob("sparse", str(src), str(out), {"interval": 2}, planes=2, tile=20).run(None, cancel):
            if isinstance(ev, ChunkDone):
                cancel.cancel()
    return src, out


def test_resume_drops_the_copy_a_killed_overwrite_left(tmp_path, stack):
    """An --overwrite run killed (-9) leaves the replaced store as a hidden .NAME.replaced; the
    run that resumes and completes the new store removes it."""
    src, out = _cancelled_after_one_chunk(tmp_path, stack)
    left = tmp_path / ".out.zarr.replaced"
    left.mkdir()  # what the killed run could neither restore nor drop
    (left / "zarr.json").write_text("{}")
    list(ChunkedJob("sparse", str(src), str(out), {"interval": 2}, planes=2, tile=20).run(None))
    assert zarr_progress(out)["complete"] is True and not left.exists()


def test_resume_refuses_a_different_job(tmp_path, stack):
    src, out = _cancelled_after_one_chunk(tmp_path, stack)
    with pytest.raises(VoxreconError, match="different job or chunking"):
        list(ChunkedJob("sparse", str(src), str(out), {"interval": 2}, planes=2, tile=30).run(None))
    other = tmp_path / "other.tif"
    write_tiff(other, stack + 1, (1, 1, 1))
    with pytest.raises(VoxreconError, match="different job"):
        list(ChunkedJob("sparse", str(other), str(out), {"interval": 2}, planes=2, tile=20).run(None))


def test_bad_input_is_named_with_its_block(tmp_path, stack):
    bad = stack.copy()
    bad[7, 40, 50] = np.nan  # found by the up-front sample or by the chunk that reads it
    src = tmp_path / "nan.tif"
    write_tiff(src, bad, (1, 1, 1))
    with pytest.raises(InputError, match="NaN"):
        run_chunked("sparse", str(src), str(tmp_path / "o.zarr"), {"interval": 2}, scheduler="synchronous", planes=2, tile=16)
    assert not (tmp_path / "o.zarr").exists() or zarr_progress(tmp_path / "o.zarr")["complete"] is False
    const = tmp_path / "const.tif"
    write_tiff(const, np.full((4, 16, 16), 3, np.float32), (1, 1, 1))
    with pytest.raises(InputError, match="same value"):
        ChunkedJob("sparse", str(const), str(tmp_path / "c.zarr"), {"interval": 2})
    good = tmp_path / "good.tif"
    write_tiff(good, stack, (1, 1, 1))
    with pytest.raises(VoxreconError, match="zarr"):
        run_chunked("sparse", str(good), str(tmp_path / "o.tif"), {"interval": 2}, scheduler="synchronous")


def test_empty_background_chunks_are_reconstructed_not_refused(tmp_path, stack):
    vol = np.zeros((6, 64, 64), np.float32)
    vol[:, :20, :20] = stack[:6, :20, :20]
    src = tmp_path / "in.tif"
    write_tiff(src, vol, (1, 1, 1))
    out = tmp_path / "o.zarr"
    run_chunked("sparse", str(src), str(out), {"interval": 2}, scheduler="synchronous", planes=4, tile=24)
    assert np.array_equal(read_volume(out).data, run_job(Job("sparse", vol, {"interval": 2}))["result"])


def test_two_worker_local_cluster_loads_weights_once_per_worker(tmp_path, stack):
    """The CI check of the distributed path: a 2-process LocalCluster, a learned method."""
    from napari_voxrecon.models.loading import load_count

    src = tmp_path / "in.tif"
    write_tiff(src, stack[:5, :40, :40], (1, 1, 1))
    sync = tmp_path / "sync.zarr"
    run_chunked("sparse", str(src), str(sync), {"interval": 2, "tile": 64}, "unet", scheduler="synchronous", planes=2, tile=20)
    job = ChunkedJob("sparse", str(src), str(tmp_path / "dist.zarr"), {"interval": 2, "tile": 64}, "unet", planes=2, tile=20)
    assert len(job.plan.chunks) == 16  # 4 gaps x 4 tiles
    with dask_client("processes", 2) as client:
        events = list(job.run(client))
        loads = client.run(load_count)
    assert len(loads) == 2 and all(n <= 1 for n in loads.values()) and sum(loads.values()) >= 1
    assert isinstance(events[-1], Progress) and events[-1].done == 16
    # Same chunks, same seeds: the cluster's result is the in-thread result, up to the order of
    # float sums (dask's worker processes run torch with one thread, this one with the machine's,
    # and oneDNN's convolutions may then add in another order: seen once in CI, equal to all printed digits).
    np.testing.assert_allclose(read_volume(tmp_path / "dist.zarr").data, read_volume(sync).data, rtol=1e-5, atol=1e-3)


def test_thread_pool_keeps_two_chunks_per_worker_in_flight(tmp_path, stack):
    """``threads`` hands out at most two chunks per worker at a time (bounded memory and
    scheduler state on a huge volume) and still computes every chunk, like the synchronous run."""
    from concurrent.futures import ThreadPoolExecutor

    class CountingPool(ThreadPoolExecutor):
        def __init__(self) -> None:
            super().__init__(2)
            self.outstanding: set = set()
            self.most = 0

        def submit(self, fn, *args, **kwargs):
            fut = super().submit(fn, *args, **kwargs)
            self.outstanding = {f for f in self.outstanding if not f.done()} | {fut}
            self.most = max(self.most, len(self.outstanding))
            return fut

    src = tmp_path / "in.tif"
    write_tiff(src, stack, (1, 1, 1))
    run_chunked("sparse", str(src), str(tmp_path / "sync.zarr"), {"interval": 2}, "linear", scheduler="synchronous",
                planes=2, tile=16)
    job = ChunkedJob("sparse", str(src), str(tmp_path / "pool.zarr"), {"interval": 2}, "linear", planes=2, tile=16)
    assert len(job.plan.chunks) == 120  # 10 gaps x 3 x 4 tiles
    with CountingPool() as pool:
        done = [e for e in job.run(pool) if isinstance(e, ChunkDone)]
    assert len(done) == 120 and 1 <= pool.most <= 4
    assert np.array_equal(read_volume(tmp_path / "pool.zarr").data, read_volume(tmp_path / "sync.zarr").data)
    with dask_client("threads", 2) as client:
        assert isinstance(client, ThreadPoolExecutor)


def test_cli_batch_and_auto_refusal(tmp_path, stack, capsys):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    write_tiff(a, stack, (1, 1, 1))
    write_tiff(b, stack[::-1].copy(), (1, 1, 1))
    outdir = tmp_path / "outs"
    rc = main(["reconstruct", "sparse", str(a), str(b), "--interval", "2", "-o", str(outdir), "--scheduler", "threads",
               "--workers", "2", "--chunk-planes", "4", "--chunk-tile", "32", "-q"])
    assert rc == 0
    for name, data in (("a", stack), ("b", stack[::-1])):
        assert np.array_equal(read_volume(outdir / f"{name}.zarr").data, run_job(Job("sparse", data, {"interval": 2}))["result"])
    rc = main(["reconstruct", "sparse", str(a), str(b), "--interval", "2", "-o", str(tmp_path / "x.zarr"), "-q"])
    assert rc == 2 and "must be a folder" in capsys.readouterr().err
    rc = main(["reconstruct", "sparse", str(a), "--interval", "2", "-o", str(tmp_path / "x.tif"), "--chunked", "-q"])
    assert rc == 2 and "zarr" in capsys.readouterr().err


def test_kill_9_midway_then_resume_is_bit_identical(tmp_path, rng):
    """A real ``kill -9`` of the command line while it writes, then the same command again."""
    vol = (rng.random((16, 72, 72)) * 1000).astype(np.float32)  # 16 x 36 = 576 chunks
    src = tmp_path / "in.tif"
    write_tiff(src, vol, (1, 1, 1))
    cmd = [sys.executable, "-m", "napari_voxrecon.cli", "reconstruct", "restore", str(src), "--axial-factor", "2",
           "--method", "tricubic", "--chunk-planes", "2", "--chunk-tile", "12", "--scheduler", "synchronous", "-q"]
    ref = tmp_path / "ref.zarr"
    assert subprocess.run(cmd + ["-o", str(ref)], capture_output=True).returncode == 0
    out = tmp_path / "out.zarr"
    proc = subprocess.Popen(cmd + ["-o", str(out)])
    deadline = time.time() + 60
    while time.time() < deadline:
        progress = zarr_progress(out) if out.exists() else None
        if progress and len(progress.get("chunks_done", [])) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    progress = zarr_progress(out)
    assert progress is not None and progress["complete"] is False, "the run finished before it could be killed"
    assert subprocess.run(cmd + ["-o", str(out)], capture_output=True).returncode == 0
    assert zarr_progress(out)["complete"] is True
    assert np.array_equal(read_volume(out).data, read_volume(ref).data)


def test_a_whole_volume_fit_is_one_chunk():
    """diffraction fits all images at once: its plan is a single chunk covering everything."""
    t, m = get_task("diffraction"), get_method("diffraction", "explicit")
    p = {**{q.name: q.default for q in (*t.params, *m.params)}, "depth": 8}
    plan = plan_chunks(t, m, p, (6, 32, 40), planes=2, tile=8)
    assert len(plan.chunks) == 1
    only = plan.chunks[0]
    assert only.read == ((0, 6), (0, 32), (0, 40)) and only.write == tuple((0, s) for s in plan.output_shape)
