"""Steps-vs-quality curve of ``sparse3diff`` samplers on held-out real data.

Usage: python benchmarks/sparse_steps.py ../shared/data/cells3d_nuclei.tif --weights W [--n 6] [--crop 96]

Scores (missing planes, raw truth) of single samples and K-sample means for several step
counts of DPM-Solver++(2M) and DDIM, plus ancestral DDPM with its full 1000-step schedule on a
central crop of the held-out region (DDPM's cost limits the size). With zero terminal SNR and
v-prediction, one step returns the network's x0 prediction from pure noise, i.e. its estimate
of the posterior mean: the curve shows what more steps trade (sharper single samples) for what
(PSNR).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_voxrecon.engine import Job, run_job
from napari_voxrecon.io import read_volume
from napari_voxrecon.metrics import evaluate, missing_planes
from napari_voxrecon.simulate import simulate_sparse
from napari_voxrecon.training.windows import split_holdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ground_truth")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--crop", type=int, default=96, help="central lateral crop of the held-out region (y)")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--ddpm", action="store_true", help="also run 1000-step ancestral DDPM (slow) on a smaller crop")
    ap.add_argument("--ddpm-crop", type=int, default=32, help="lateral crop (y and x) for the DDPM comparison")
    args = ap.parse_args()
    held = split_holdout(read_volume(args.ground_truth).data.astype(np.float32))[1]
    y0 = (held.shape[1] - args.crop) // 2
    data = np.ascontiguousarray(held[:, y0:y0 + args.crop])
    n = args.n
    sparse = simulate_sparse(data, n)
    n_out = (sparse.shape[0] - 1) * n + 1
    truth = data[:n_out]
    planes = missing_planes(n_out, n)
    print(f"held-out crop {data.shape}, n={n}, weights {args.weights}")
    print("| sampler | steps | K | PSNR | SSIM | s / plane |\n|---|---|---|---|---|---|")
    lin = run_job(Job("sparse", sparse, {"interval": n}, method="linear"))["result"]
    s = evaluate(lin, truth, planes, ("psnr", "ssim"))
    print(f"| linear | | | {s['psnr']:.2f} | {s['ssim']:.4f} | |", flush=True)
    # One step from pure noise returns the network's posterior-mean estimate; its K-sample mean
    # still differs slightly, because the network does not ignore the noise input entirely.
    ks = sorted({1, 2, args.samples})
    runs = [(sm, st, k) for sm in ("dpmpp_2m",) for st in (1, 2, 4, 10) for k in ks]
    runs += [("ddim", 10, 1), ("ddim", 10, args.samples)]
    for sampler, steps, k in runs:
        out, dt = _run(sparse, n, args.weights, steps, sampler, k)
        s = evaluate(out, truth, planes, ("psnr", "ssim"))
        print(f"| {sampler} | {steps} | {k} | {s['psnr']:.2f} | {s['ssim']:.4f} | {dt / len(planes):.2f} |", flush=True)
    if args.ddpm:
        c = args.ddpm_crop
        x0 = (data.shape[2] - c) // 2
        small = np.ascontiguousarray(sparse[:, (args.crop - c) // 2:(args.crop - c) // 2 + c, x0:x0 + c])
        small_truth = truth[:, (args.crop - c) // 2:(args.crop - c) // 2 + c, x0:x0 + c]
        for sampler, steps in (("dpmpp_2m", 2), ("ddpm", 1000)):
            out, dt = _run(small, n, args.weights, steps, sampler, 1)
            s = evaluate(out, small_truth, planes, ("psnr", "ssim"))
            print(f"| {sampler} ({c}x{c} crop) | {steps} | 1 | {s['psnr']:.2f} | {s['ssim']:.4f} | {dt / len(planes):.2f} |", flush=True)


def _run(sparse: np.ndarray, n: int, weights: str, steps: int, sampler: str, k: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = run_job(Job("sparse", sparse, {"interval": n, "weights": weights, "steps": steps, "sampler": sampler,
                                         "samples": k}, method="sparse3diff", device="cpu"))["result"]
    return out, time.perf_counter() - t0


if __name__ == "__main__":
    main()
