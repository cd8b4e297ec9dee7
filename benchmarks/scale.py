"""Scale benchmarks of the chunked runner (issue 7): flat memory, workers, overhead, kill/resume.

    python benchmarks/scale.py make   --shape 400 4096 4096 -o runs/scale/in_400x4096.zarr
    python benchmarks/scale.py memory --input runs/scale/in_400x4096.zarr [--scheduler processes --workers 2]
    python benchmarks/scale.py workers --input runs/scale/in_100x2048.zarr
    python benchmarks/scale.py overhead
    python benchmarks/scale.py resume --input runs/scale/in_100x2048.zarr --kill-at 0.4
    python benchmarks/scale.py seams --ground-truth ../shared/data/cells3d_nuclei.tif
    python benchmarks/scale.py edge

Every run is the command line (``voxrecon reconstruct sparse ... --interval 2``, linear: a cheap
method, so the numbers are the runner's and the disk's) in a child process; a sampler thread
reads the resident memory of that process and all its children (dask workers) every 0.1 s.
Results are appended as JSON lines to ``--log`` (default runs/scale/results.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

LOG = Path("runs/scale/results.jsonl")


def make_input(path: Path, shape: tuple[int, int, int], block: int = 8) -> None:
    """A synthetic stack written block by block (never whole in memory): smooth structure plus
    bright spots and a few counts of noise, integer-valued like a camera's counts (zstd packs it
    about 3x, like real data), in zarr chunks of (8, 1024, 1024)."""
    import zarr

    from napari_voxrecon.io.zarr_store import create_zarr

    z, h, w = shape
    group, arr = create_zarr(path, shape, (1.0, 0.2, 0.2), np.float32, overwrite=True,
                             chunks=(block, min(h, 1024), min(w, 1024)))
    yy = np.sin(np.arange(h, dtype=np.float32) / 37.0)[:, None]
    xx = np.cos(np.arange(w, dtype=np.float32) / 53.0)[None, :]
    rng = np.random.default_rng(0)
    spots = rng.integers(0, [h, w], size=(max(1, h * w // 4096), 2))
    for z0 in range(0, z, block):
        z1 = min(z, z0 + block)
        planes = np.empty((z1 - z0, h, w), np.float32)
        for k in range(z0, z1):
            phase = np.float32(np.sin(k / 11.0))
            plane = 300 + 200 * (yy * xx) * phase + 100 * yy
            plane[spots[:, 0], spots[:, 1]] += 2000 * (1 + np.sin(k / 5.0 + spots[:, 0]))
            planes[k - z0] = np.round(plane) + rng.integers(0, 16, size=plane.shape, dtype=np.uint8)
        arr[z0:z1] = planes
    state = dict(group.attrs["voxrecon"])
    state.update(complete=True, done=[])
    group.attrs["voxrecon"] = state


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_cli(args: list[str], kill_at: float | None = None, out: Path | None = None) -> dict:
    """Run ``voxrecon`` in a child; sample its process tree's RSS. ``kill_at``: SIGKILL once that
    share of the chunks is recorded as done in ``out``."""
    import psutil

    from napari_voxrecon.io.zarr_store import zarr_progress

    cmd = [sys.executable, "-m", "napari_voxrecon.cli", *args]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc = psutil.Process(child.pid)
    peak = [0]
    timeline: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = _tree_rss(proc)
            peak[0] = max(peak[0], rss)
            timeline.append((time.perf_counter() - start, rss))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    killed = False
    orphans: list[int] = []
    while child.poll() is None:
        if kill_at is not None and out is not None and out.exists():
            prog = zarr_progress(out) or {}
            total = (prog.get("job") or {}).get("chunked", {}).get("count", 0)
            if total and len(prog.get("chunks_done", [])) >= kill_at * total:
                kids = proc.children(recursive=True)
                os.kill(child.pid, signal.SIGKILL)
                killed = True
                child.wait()
                time.sleep(3)
                orphans = [k.pid for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
                for k in orphans:  # workers that outlived their driver (reported, then stopped)
                    try:
                        os.kill(k, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                break
        time.sleep(0.1)
    child.wait()
    stop.set()
    t.join()
    err = child.stderr.read() if child.stderr else ""
    seconds = time.perf_counter() - start
    if child.returncode not in (0, -9) and not killed:
        raise SystemExit(f"voxrecon failed ({child.returncode}):\n{err[-2000:]}")
    # the peak in each tenth of the run: flat memory is a flat row, a leak a rising one
    tenths = [max([r for t, r in timeline if i * seconds / 10 <= t < (i + 1) * seconds / 10] or [0]) / 2**30
              for i in range(10)]
    return {"seconds": seconds, "peak_rss_gb": peak[0] / 2**30, "rss_gb_by_tenth": [round(v, 3) for v in tenths],
            "killed": killed, "orphans_after_kill": len(orphans), "returncode": child.returncode}


def _log(path: Path, rec: dict) -> None:
    import datetime
    import platform

    rec = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cpu", **rec}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def _input_info(path: Path) -> dict:
    from napari_voxrecon.io.lazy import open_lazy

    vol = open_lazy(path)
    du = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return {"input": str(path), "input_shape": list(vol.shape), "input_gb_float32": vol.nbytes_float32 / 2**30,
            "input_gb_on_disk": du / 2**30}


def _recon_args(inp: Path, out: Path, scheduler: str, workers: int, extra: list[str]) -> list[str]:
    return ["reconstruct", "sparse", str(inp), "--interval", "2", "-o", str(out), "--overwrite", "-q", "--chunked",
            "--scheduler", scheduler, "--workers", str(workers), *extra]


def cmd_memory(a) -> None:
    out = Path(a.out or str(a.input).replace(".zarr", "_recon.zarr"))
    res = run_cli(_recon_args(a.input, out, a.scheduler, a.workers, a.extra))
    info = _input_info(a.input)
    z, h, w = info["input_shape"]
    out_vox = (2 * z - 1) * h * w
    du = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    _log(a.log, {"bench": "memory", **info, "scheduler": a.scheduler, "workers": a.workers, "extra": a.extra, **res,
                 "output_gb_float32": out_vox * 4 / 2**30, "output_gb_on_disk": du / 2**30,
                 "output_mvox_per_s": out_vox / res["seconds"] / 1e6})
    if a.cleanup:
        shutil.rmtree(out)


def cmd_workers(a) -> None:
    for scheduler in ("threads", "processes"):
        for workers in (1, 2):
            out = a.input.with_name(a.input.stem + f"_w{workers}{scheduler[0]}.zarr")
            res = run_cli(_recon_args(a.input, out, scheduler, workers, a.extra))
            _log(a.log, {"bench": "workers", **_input_info(a.input), "scheduler": scheduler, "workers": workers, **res})
            shutil.rmtree(out)


def cmd_overhead(a) -> None:
    """In-memory path against the chunked path on a small volume, same method, same machine."""
    tmp = Path(a.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    inp = tmp / "small.zarr"
    make_input(inp, tuple(a.shape))
    runs = [("in-memory", ["reconstruct", "sparse", str(inp), "--interval", "2", "-o", str(tmp / "mem.zarr"), "--overwrite", "-q"]),
            ("chunked synchronous", _recon_args(inp, tmp / "c0.zarr", "synchronous", 1, a.extra)),
            ("chunked threads x1", _recon_args(inp, tmp / "c1.zarr", "threads", 1, a.extra)),
            ("chunked processes x2", _recon_args(inp, tmp / "c2.zarr", "processes", 2, a.extra))]
    import zarr

    results = {}
    for name, args in runs:
        res = run_cli(args)
        results[name] = res
        _log(a.log, {"bench": "overhead", "path": name, **_input_info(inp), **res})
    ref = zarr.open_group(str(tmp / "mem.zarr"), mode="r")["0"][...]
    for k, f in (("c0", "chunked synchronous"), ("c1", "chunked threads x1"), ("c2", "chunked processes x2")):
        same = bool(np.array_equal(zarr.open_group(str(tmp / f"{k}.zarr"), mode="r")["0"][...], ref))
        _log(a.log, {"bench": "overhead-identity", "path": f, "identical_to_in_memory": same})


def _same(p: Path, q: Path, planes: int = 16) -> bool:
    """Compare two stores block by block (never whole in memory)."""
    import zarr

    x, y = zarr.open_group(str(p), mode="r")["0"], zarr.open_group(str(q), mode="r")["0"]
    if x.shape != y.shape:
        return False
    for z0 in range(0, x.shape[0], planes):
        if not np.array_equal(x[z0:z0 + planes], y[z0:z0 + planes]):
            return False
    return True


def cmd_resume(a) -> None:
    ref = a.input.with_name(a.input.stem + "_ref.zarr")
    out = a.input.with_name(a.input.stem + "_killed.zarr")
    r0 = run_cli(_recon_args(a.input, ref, a.scheduler, a.workers, a.extra))
    if out.exists():
        shutil.rmtree(out)
    args = [x for x in _recon_args(a.input, out, a.scheduler, a.workers, a.extra) if x != "--overwrite"]
    r1 = run_cli(args, kill_at=a.kill_at, out=out)
    from napari_voxrecon.io.zarr_store import zarr_progress

    prog = zarr_progress(out)
    done_at_kill = len(prog.get("chunks_done", []))
    total = prog["job"]["chunked"]["count"]
    r2 = run_cli(args)
    same = _same(out, ref)
    _log(a.log, {"bench": "resume", **_input_info(a.input), "scheduler": a.scheduler, "workers": a.workers,
                 "uninterrupted_s": r0["seconds"], "killed_after_s": r1["seconds"], "chunks_done_at_kill": done_at_kill,
                 "chunks": total, "orphan_workers_after_kill": r1["orphans_after_kill"], "resume_s": r2["seconds"],
                 "bit_identical": same})
    if a.cleanup:
        shutil.rmtree(ref)
        shutil.rmtree(out)


SEAM_CASES = [  # (task, params, method, how the input is made from the ground truth)
    ("sparse", {"interval": 4}, "linear", "sparse"),
    ("sparse", {"interval": 4}, "unet", "sparse"),
    ("sparse", {"interval": 4}, "sparse3diff", "sparse"),
    ("projection", {"interval": 4}, "unet", "projection"),
    ("projection", {"interval": 4}, "microdiffusion", "projection"),
    ("restore", {"axial_factor": 4}, "care", "restore"),
    ("restore", {"axial_factor": 4}, "dit", "restore"),
]


def seam_steps(vol: np.ndarray, tile: int, planes: list[int] | None = None) -> tuple[float, float]:
    """Mean absolute step between neighbouring pixels across the chunk borders (x and y at
    multiples of ``tile``) and everywhere else: a seam is a border step larger than the rest."""
    v = vol if planes is None else vol[planes]
    border, inner = [], []
    for axis in (1, 2):
        steps = np.abs(np.diff(v, axis=axis))  # step k lies between pixels k and k + 1
        at = np.zeros(steps.shape[axis], bool)
        at[np.arange(tile - 1, steps.shape[axis], tile)] = True
        border.append(np.compress(at, steps, axis=axis).mean())
        inner.append(np.compress(~at, steps, axis=axis).mean())
    return float(np.mean(border)), float(np.mean(inner))


def cmd_seams(a) -> None:
    """Learned methods chunked (lateral tiles of ``--tile`` px, ``--planes`` output planes) against
    the same method in memory on a real volume; both scored against the truth on the held-out
    region (last 37.5 % of x, never trained on), plus how far the two outputs are apart."""
    from napari_voxrecon.engine import Job, run_job
    from napari_voxrecon.engine.dask_runner import run_chunked
    from napari_voxrecon.io import read_volume
    from napari_voxrecon.io.tiff import write_tiff
    from napari_voxrecon.metrics import evaluate, missing_planes
    from napari_voxrecon.simulate.acquisition import simulate_projection, simulate_sparse
    from napari_voxrecon.simulate.degrade import simulate_restore

    gt = read_volume(a.ground_truth)
    truth = gt.data.astype(np.float32)
    x0 = int(truth.shape[2] * 0.625)
    tmp = Path(a.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    for task, params, method, kind in SEAM_CASES:
        if a.methods and method not in a.methods:
            continue
        n = params.get("interval") or params.get("axial_factor")
        if kind == "sparse":
            inp, ref_gt = simulate_sparse(truth, n), truth[: (truth.shape[0] - 1) // n * n + 1]
        elif kind == "projection":
            inp, ref_gt = simulate_projection(truth, n), truth[: truth.shape[0] // n * n]
        else:
            inp, ref_gt = simulate_restore(truth, n, noise_level=0.05, seed=0), truth
        src = tmp / f"{kind}.tif"
        write_tiff(src, inp, gt.voxel_size)
        t = time.perf_counter()
        mem = run_job(Job(task, inp, params, method))["result"]
        t_mem = time.perf_counter() - t
        out = tmp / f"{task}_{method}.zarr"
        t = time.perf_counter()
        run_chunked(task, str(src), str(out), params, method, overwrite=True, scheduler="synchronous",
                    planes=a.planes, tile=a.tile)
        t_chunk = time.perf_counter() - t
        chunked = read_volume(out).data
        zs = ref_gt.shape[0]
        planes = missing_planes(zs, n) if kind == "sparse" else None  # acquired planes are exact either way
        s_mem = evaluate(mem[:zs, :, x0:], ref_gt[:, :, x0:], planes, metrics=("psnr", "ssim"))
        s_chunk = evaluate(chunked[:zs, :, x0:], ref_gt[:, :, x0:], planes, metrics=("psnr", "ssim"))
        agree = evaluate(chunked[:zs], mem[:zs], metrics=("psnr",))["psnr"]
        # border steps over inner steps, chunked and in memory: 1.0 means no seam at the borders
        steps = {name: seam_steps(v[:zs], a.tile, planes) for name, v in (("chunked", chunked), ("in_memory", mem))}
        seam = {name: b / i for name, (b, i) in steps.items()}
        _log(a.log, {"bench": "seams", "task": task, "method": method, "params": params, "tile": a.tile,
                     "planes": a.planes, "in_memory": s_mem, "chunked": s_chunk,
                     "chunked_vs_in_memory_psnr": agree, "max_abs_diff": float(np.abs(chunked - mem).max()),
                     "border_over_inner_step": seam,
                     "in_memory_s": t_mem, "chunked_s": t_chunk})


def cmd_edge(a) -> None:
    """Peak allocation of writing one full (32, 1024, 1024) float32 zarr chunk against an edge
    chunk holding 31 of its 32 planes (zarr pads an edge chunk to the full chunk first)."""
    import tempfile
    import tracemalloc

    from napari_voxrecon.io.zarr_store import create_zarr

    with tempfile.TemporaryDirectory() as tmp:
        _, arr = create_zarr(Path(tmp) / "edge.zarr", (63, 1024, 1024), (1.0, 1.0, 1.0), np.float32, None,
                             overwrite=True, chunks=(32, 1024, 1024))
        full = np.random.default_rng(0).random((32, 1024, 1024), dtype=np.float32)
        peaks = {}
        for name, where, data in (("full", slice(0, 32), full), ("edge", slice(32, 63), full[:31].copy())):
            tracemalloc.start()
            arr[where] = data
            peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    _log(a.log, {"bench": "edge", "peak_mb_full_chunk": peaks["full"], "peak_mb_edge_chunk": peaks["edge"]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", type=Path, default=LOG)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make")
    p.add_argument("--shape", type=int, nargs=3, required=True)
    p.add_argument("-o", "--output", type=Path, required=True)
    for name in ("memory", "workers", "resume"):
        p = sub.add_parser(name)
        p.add_argument("--input", type=Path, required=True)
        p.add_argument("--scheduler", default="threads")
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--out")
        p.add_argument("--kill-at", type=float, default=0.4)
        p.add_argument("--cleanup", action="store_true")
        p.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    p = sub.add_parser("seams")
    p.add_argument("--ground-truth", default="../shared/data/cells3d_nuclei.tif")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--planes", type=int, default=16)
    p.add_argument("--methods", nargs="*")
    p.add_argument("--tmp", default="runs/scale/seams")
    sub.add_parser("edge")
    p = sub.add_parser("overhead")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 512, 512))
    p.add_argument("--tmp", default="runs/scale/overhead")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    a = ap.parse_args()
    if a.cmd == "make":
        t = time.perf_counter()
        make_input(a.output, tuple(a.shape))
        _log(a.log, {"bench": "make", **_input_info(a.output), "seconds": time.perf_counter() - t})
        return
    {"memory": cmd_memory, "workers": cmd_workers, "overhead": cmd_overhead, "resume": cmd_resume,
     "seams": cmd_seams, "edge": cmd_edge}[a.cmd](a)


if __name__ == "__main__":
    main()
