"""``voxrecon demo``: the main job on the embedded sample, end to end, with scores.

The embedded nuclei crop is sparsely sampled (every n-th plane kept), reconstructed with the
best method available in this installation and with the classical baselines, and all are scored
on the planes that were not acquired. Files land in a new folder so nothing is overwritten.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .io import Volume, read_volume

#: Preference order for the demo's method; the first one registered is used. Linear beats
#: cubic on real data (docs/benchmarks.md), so it is the classical choice.
DEMO_METHODS = ("sparse3diff", "linear")
#: Classical baselines the demo's method is compared with.
DEMO_BASELINES = ("nearest", "linear", "cubic")
SAMPLE_FILE = "cells3d_nuclei_crop.ome.tif"


def load_sample() -> Volume:
    """The embedded real sample (see data/README.md for its source and licence)."""
    with resources.as_file(resources.files("napari_voxrecon") / "data" / SAMPLE_FILE) as path:
        return read_volume(path)


def pick_demo_method() -> str:
    """The first of DEMO_METHODS that is registered and, if it needs weights, has embedded ones."""
    from .engine.registry import list_methods
    from .errors import VoxreconError
    from .weights import default_weights

    methods = {m.name: m for m in list_methods("sparse")}
    for name in DEMO_METHODS:
        if name not in methods:
            continue
        if methods[name].uses_weights:
            try:
                default_weights(methods[name].weights_method)
            except VoxreconError:
                continue
        return name
    return "linear"


def run_demo(folder: Path, interval: int = 4, device: str = "auto", quiet: bool = False, overwrite: bool = False) -> dict:
    from .cli import _say, run_reconstruction
    from .io import write_volume
    from .metrics import evaluate, missing_planes
    from .simulate import simulate_sparse

    folder.mkdir(parents=True, exist_ok=True)
    gt = load_sample()
    method = pick_demo_method()
    _say(f"demo: embedded sample {SAMPLE_FILE} {gt.shape}, keeping every {interval}th plane, reconstructing with '{method}'", quiet)
    gt_path, sparse_path = folder / "ground_truth.tif", folder / f"sparse_n{interval}.tif"
    vz, vy, vx = gt.voxel_size
    write_volume(gt_path, gt.data, gt.voxel_size, overwrite=overwrite)
    write_volume(sparse_path, simulate_sparse(gt.data, interval), (vz * interval, vy, vx), overwrite=overwrite)
    # Only the planes that fit whole intervals are reconstructable: (M-1)*n+1 of them.
    n_out = (len(range(0, gt.shape[0], interval)) - 1) * interval + 1
    truth = gt.data[:n_out]
    report: dict = {"sample": SAMPLE_FILE, "interval": interval, "scored_planes": "not acquired", "methods": {}}
    for name in dict.fromkeys((method, *DEMO_BASELINES)):
        out = folder / f"{name}.tif"
        info = run_reconstruction("sparse", str(sparse_path), str(out), {"interval": interval}, name, 0, device, overwrite, quiet)
        pred = read_volume(out).data
        scores = evaluate(pred, truth, planes=missing_planes(n_out, interval))
        report["methods"][name] = {"seconds": round(info["seconds"], 3), **{k: round(v, 4) for k, v in scores.items()}}
    (folder / "scores.json").write_text(json.dumps(report, indent=2))
    if not quiet:
        print(f"\nscores on the {len(missing_planes(n_out, interval))} planes that were not acquired:")
        print(f"{'method':14s}{'PSNR':>8s}{'SSIM':>8s}{'seconds':>9s}")
        for name, s in report["methods"].items():
            print(f"{name:14s}{s['psnr']:8.2f}{s['ssim']:8.4f}{s['seconds']:9.2f}")
        print(f"\nfiles in {folder}/ ; view them with:  napari {folder}/*.tif")
    return report
