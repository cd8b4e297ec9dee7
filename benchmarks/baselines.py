"""Classical baselines on real data: the numbers every learned model has to beat.

Usage:  python benchmarks/baselines.py ../shared/data/cells3d_nuclei.tif [--out benchmarks/out/baselines.md]

For each task the ground truth is degraded with the package's own simulators and reconstructed
with every classical method through the same engine the CLI uses; scores are the package's
metrics (GT percentile normalisation, slice-wise means along z). Sparse scores are on the planes
that were not acquired only. Prints a markdown section with the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
from report import finish  # benchmarks/report.py (scripts run from benchmarks/ on sys.path)

from napari_voxrecon.engine import Job, run_job
from napari_voxrecon.io import read_volume
from napari_voxrecon.metrics import evaluate, missing_planes
from napari_voxrecon.simulate import simulate_projection, simulate_restore, simulate_sparse


def _row(name: str, scores: dict, seconds: float, planes: int) -> str:
    return (f"| {name} | {scores['psnr']:.2f} | {scores['ssim']:.4f} | {scores['ms_ssim']:.4f} | "
            f"{scores['dice']:.4f} | {scores['ccc']:.4f} | {1000 * seconds / planes:.2f} |")


HEADER = "| method | PSNR | SSIM | MS-SSIM | Dice (Otsu) | CCC | ms / plane |\n|---|---|---|---|---|---|---|"


def bench_sparse(gt: np.ndarray, intervals: list[int]) -> list[str]:
    lines = []
    for n in intervals:
        sparse = simulate_sparse(gt, n)
        n_out = (sparse.shape[0] - 1) * n + 1
        truth = gt[:n_out]
        lines += [f"\n**sparse, n = {n}** ({sparse.shape[0]} acquired planes, scored on the {len(missing_planes(n_out, n))} missing ones)\n", HEADER]
        for method in ("nearest", "linear", "cubic"):
            t0 = time.perf_counter()
            pred = run_job(Job("sparse", sparse, {"interval": n}, method=method))["result"]
            dt = time.perf_counter() - t0
            lines.append(_row(method, evaluate(pred, truth, planes=missing_planes(n_out, n)), dt, n_out))
    return lines


def bench_projection(gt: np.ndarray, intervals: list[int]) -> list[str]:
    lines = []
    for n in intervals:
        proj = simulate_projection(gt, n)
        truth = gt[: proj.shape[0] * n]
        lines += [f"\n**projection, n = {n}** ({proj.shape[0]} projections, all {truth.shape[0]} planes scored)\n", HEADER]
        for method in ("linear", "cubic"):
            t0 = time.perf_counter()
            pred = run_job(Job("projection", proj, {"interval": n}, method=method))["result"]
            dt = time.perf_counter() - t0
            lines.append(_row(method, evaluate(pred, truth), dt, truth.shape[0]))
    return lines


def bench_restore(gt: np.ndarray, settings: list[tuple[int, int, float]]) -> list[str]:
    lines = []
    for a, l, noise in settings:
        low = simulate_restore(gt, a, l, noise, seed=0)
        zo = low.shape[0] * a
        truth = gt[:zo, : low.shape[1] * l, : low.shape[2] * l]
        lines += [f"\n**restore, axial x{a}, lateral x{l}, noise {noise}** (input {low.shape}, all planes scored)\n", HEADER]
        for method in ("trilinear", "tricubic"):
            t0 = time.perf_counter()
            pred = run_job(Job("restore", low, {"axial_factor": a, "lateral_factor": l}, method=method))["result"]
            dt = time.perf_counter() - t0
            lines.append(_row(method, evaluate(pred[: truth.shape[0]], truth), dt, zo))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ground_truth")
    ap.add_argument("--out", help="also write the markdown section to this file")
    args = ap.parse_args()
    vol = read_volume(args.ground_truth)
    gt = vol.data.astype(np.float32)
    head = [
        f"Data: `{Path(args.ground_truth).name}` {gt.shape} (real confocal nuclei; no model involved). "
        f"Date {datetime.date.today().isoformat()}, machine: {platform.machine()}, "
        f"{__import__('os').cpu_count()} CPU cores, Python {platform.python_version()}, numpy {np.__version__}.",
        "",
        f"Command: `python benchmarks/baselines.py {args.ground_truth}`",
    ]
    lines = head + bench_sparse(gt, [4, 6, 8]) + bench_projection(gt, [4, 6, 8]) + bench_restore(gt, [(4, 1, 0.05), (2, 2, 0.05), (1, 1, 0.1)])
    finish(lines, args.out)


if __name__ == "__main__":
    main()
