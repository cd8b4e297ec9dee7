"""Quality and speed of the ``sparse`` methods on real data the models never saw.

Usage:
  python benchmarks/sparse_models.py ../shared/data/cells3d_nuclei.tif \
      --sparse3diff WEIGHTS --unet WEIGHTS [--intervals 4 6 8] [--out benchmarks/out/sparse.md]

Held-out data: the last 37.5 % of x of the real volume (training used only the rest,
``training.windows.split_holdout``), reconstructed along z (XY planes missing) and along y
(the same region resliced so that XZ planes are missing: an axis the model never saw as z
in this region). Scores on the planes that were not acquired, against the raw truth and
against a lightly smoothed truth (3D Gaussian, sigma 1 voxel), where denoising earns nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
from report import finish  # benchmarks/report.py (scripts run from benchmarks/ on sys.path)

from napari_voxrecon.engine import Job, run_job
from napari_voxrecon.io import read_volume
from napari_voxrecon.metrics import evaluate, missing_planes
from napari_voxrecon.simulate import simulate_sparse
from napari_voxrecon.training.windows import split_holdout


def run(method: str, sparse: np.ndarray, n: int, params: dict | None = None, seed: int = 0) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = run_job(Job("sparse", sparse, {"interval": n, **(params or {})}, method=method, seed=seed, device="cpu"))["result"]
    return out, time.perf_counter() - t0


def score(pred: np.ndarray, truth: np.ndarray, smooth: np.ndarray, n: int) -> tuple[dict, dict]:
    planes = missing_planes(truth.shape[0], n)
    return (evaluate(pred, truth, planes, metrics=("psnr", "ssim")), evaluate(pred, smooth, planes, metrics=("psnr", "ssim")))


def main() -> None:
    from scipy.ndimage import gaussian_filter

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ground_truth")
    ap.add_argument("--sparse3diff", help="weights for sparse3diff (default: embedded)", default="default")
    ap.add_argument("--unet", help="weights for unet (default: embedded)", default="default")
    ap.add_argument("--intervals", type=int, nargs="+", default=[4, 6, 8])
    ap.add_argument("--samples", type=int, nargs="+", default=[2, 4], help="K of the K-sample-mean rows; the first is used for +CFG and +self-alignment")
    ap.add_argument("--steps", type=int, default=2, help="sampling steps (the registry default)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="network arithmetic of the learned rows")
    ap.add_argument("--guidance", type=float, default=1.0, help="CFG weight of the '+CFG' row")
    ap.add_argument("--finetune-rounds", type=int, default=1, help="self-alignment rounds of the '+SA' row (0: skip)")
    ap.add_argument("--finetune-intervals", type=int, nargs="+", default=[6])
    ap.add_argument("--finetune-steps", type=int, default=10, help="sampler steps of the self-alignment pseudo-data")
    ap.add_argument("--finetune-axes", default="zy", help="axes with a self-alignment row")
    ap.add_argument("--finetune-lr", type=float, nargs="+", default=[5e-5], help="self-alignment learning rates (one row each)")
    ap.add_argument("--axes", default="zy", help="reconstruction axes: z (XY planes missing), y (XZ planes missing)")
    ap.add_argument("--y-intervals", type=int, nargs="+", default=[6], help="intervals for the y axis (costly)")
    ap.add_argument("--ablation-guided", help="weights of sparse3diff trained for the slice-guidance ablation (same budget as --ablation-unguided)")
    ap.add_argument("--ablation-unguided", help="weights trained with `voxrecon train sparse3diff --no-slice-guidance`")
    ap.add_argument("--ablation-steps", type=int, nargs="+", default=[2, 25], help="sampling steps of the unguided rows")
    ap.add_argument("--only-ablation", action="store_true", help="only the linear row and the ablation rows")
    ap.add_argument("--z-stride", type=int, default=1,
                    help="domain shift: keep every S-th plane of the held-out region (a microscope with an S times coarser "
                         "z-step than the training data's)")
    ap.add_argument("--only-self-alignment", action="store_true",
                    help="only the linear, sparse3diff (mean of K) and self-alignment rows")
    ap.add_argument("--out")
    args = ap.parse_args()

    vol = read_volume(args.ground_truth)
    held = np.ascontiguousarray(split_holdout(vol.data.astype(np.float32))[1][::args.z_stride])
    lines = [
        f"Data: held-out part (last 37.5 % of x, {held.shape}) of `{Path(args.ground_truth).name}`; "
        f"date {datetime.date.today().isoformat()}; machine {platform.machine()}, {os.cpu_count()} CPU cores, no GPU.",
        "",
        f"Command: `python benchmarks/sparse_models.py {args.ground_truth} --sparse3diff {args.sparse3diff} --unet {args.unet} "
        f"--intervals {' '.join(map(str, args.intervals))} --samples {' '.join(map(str, args.samples))} --steps {args.steps} --precision {args.precision} "
        f"--guidance {args.guidance} --finetune-steps {args.finetune_steps} --finetune-axes {args.finetune_axes} --finetune-lr {' '.join(f'{x:g}' for x in args.finetune_lr)}"
        + (f" --ablation-guided {args.ablation_guided} --ablation-unguided {args.ablation_unguided} --ablation-steps {' '.join(map(str, args.ablation_steps))}"
           if args.ablation_unguided else "") + (" --only-ablation" if args.only_ablation else "")
        + (f" --z-stride {args.z_stride}" if args.z_stride > 1 else "") + (" --only-self-alignment" if args.only_self_alignment else "")
        + f" --finetune-rounds {args.finetune_rounds} --finetune-intervals {' '.join(map(str, args.finetune_intervals))} --axes {args.axes}`",
        "",
        "| axis | n | method | PSNR | SSIM | PSNR vs smoothed GT | SSIM vs smoothed GT | s / plane |",
        "|---|---|---|---|---|---|---|---|",
    ]
    s3d = {"weights": args.sparse3diff, "steps": args.steps, "precision": args.precision}
    k0 = args.samples[0]
    for axis in args.axes:
        data = held if axis == "z" else np.ascontiguousarray(held.transpose(1, 0, 2))
        for n in (args.intervals if axis == "z" else args.y_intervals):
            sparse = simulate_sparse(data, n)
            n_out = (sparse.shape[0] - 1) * n + 1
            truth = data[:n_out]
            smooth = gaussian_filter(truth, 1.0)
            rows = [
                ("nearest", "nearest", {}), ("linear", "linear", {}), ("cubic", "cubic", {}),
                ("linear + lateral Gaussian (σ=1)", "linear_smooth", {}),
                ("unet", "unet", {"weights": args.unet, "precision": args.precision}),
                ("sparse3diff, 1 sample", "sparse3diff", {**s3d, "samples": 1}),
                *[(f"sparse3diff, mean of {k}", "sparse3diff", {**s3d, "samples": k}) for k in args.samples],
                (f"sparse3diff, mean of {k0}, CFG w={args.guidance}", "sparse3diff", {**s3d, "samples": k0, "guidance": args.guidance}),
            ]
            if args.only_ablation:
                rows = [("linear", "linear", {})]
            if args.only_self_alignment:
                rows = [("linear", "linear", {}), (f"sparse3diff, mean of {k0}", "sparse3diff", {**s3d, "samples": k0})]
            if args.ablation_guided:
                rows.append((f"ablation: slice-guided (equal budget), {args.steps} steps, mean of {k0}", "sparse3diff",
                             {**s3d, "weights": args.ablation_guided, "samples": k0}))
            if args.ablation_unguided:
                rows += [(f"ablation: unguided DDPM (no slice guidance, replacement sampling), {st} steps, mean of {k0}", "sparse3diff",
                          {**s3d, "weights": args.ablation_unguided, "samples": k0, "steps": st}) for st in args.ablation_steps]
            for label, method, params in rows:
                pred, dt = run(method, sparse, n, params)
                raw, sm = score(pred, truth, smooth, n)
                lines.append(f"| {axis} | {n} | {label} | {raw['psnr']:.2f} | {raw['ssim']:.4f} | {sm['psnr']:.2f} | {sm['ssim']:.4f} | {dt / len(missing_planes(n_out, n)):.2f} |")
                print(lines[-1], flush=True)
            for lr in (args.finetune_lr if args.finetune_rounds and not args.only_ablation and axis in args.finetune_axes and n in args.finetune_intervals else []):
                from napari_voxrecon.models.self_alignment import finetune_to_folder

                folder = Path("benchmarks/out") / f"aligned_{axis}{n}_lr{lr:g}"
                t0 = time.perf_counter()
                finetune_to_folder(sparse, n, str(folder), args.sparse3diff, overwrite=True, source_name="held-out",
                                   rounds=args.finetune_rounds, steps=args.finetune_steps, lr=lr)
                ft = time.perf_counter() - t0
                pred, dt = run("sparse3diff", sparse, n, {**s3d, "weights": str(folder), "samples": k0})
                raw, sm = score(pred, truth, smooth, n)
                lines.append(f"| {axis} | {n} | sparse3diff, mean of {k0}, + self-alignment ({args.finetune_steps}-step pseudo-data, lr {lr:g}, {args.finetune_rounds} round(s), {ft / 60:.1f} min) | {raw['psnr']:.2f} | {raw['ssim']:.4f} | {sm['psnr']:.2f} | {sm['ssim']:.4f} | {dt / len(missing_planes(n_out, n)):.2f} |")
                print(lines[-1], flush=True)
    finish(lines, args.out)


if __name__ == "__main__":
    main()
