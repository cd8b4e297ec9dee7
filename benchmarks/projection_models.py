"""Quality and speed of the ``projection`` methods on real data the models never saw.

Usage:
  python benchmarks/projection_models.py ../shared/data/cells3d_nuclei.tif \
      [--unet WEIGHTS] [--microdiffusion WEIGHTS] [--naive WEIGHTS] [--intervals 6 4 8 16] [--out benchmarks/out/projection.md]

Held-out data: the last 37.5 % of x of the real volume (the learned models trained on the rest,
``training.windows.split_holdout``). Each group of n planes is replaced by its mean (a
non-diffracting beam's projection) and every method recovers all planes. PSNR and SSIM are
means over planes; Dice compares Otsu foregrounds of the whole volumes (MicroDiffusion's
Table 1 reports the same three). Rows: the classical baselines, the INR (grid and Fourier
encodings, with and without the neighbouring-based inference of eq. 3), the `unet` baseline
and MicroDiffusion with one sample and a K-sample mean, with and without the measurement
consistency step. Times are wall-clock seconds on this machine (INR fit included where there
is one) and per output plane.
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
from napari_voxrecon.metrics import evaluate
from napari_voxrecon.simulate import simulate_projection
from napari_voxrecon.training.windows import split_holdout


def run(method: str, proj: np.ndarray, n: int, params: dict | None = None, seed: int = 0) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = run_job(Job("projection", proj, {"interval": n, **(params or {})}, method=method, seed=seed, device="cpu"))["result"]
    return out, time.perf_counter() - t0


def consistent(pred: np.ndarray, proj: np.ndarray, n: int) -> np.ndarray:
    """The measurement-consistency step of the projection methods, applied to every group."""
    from napari_voxrecon.methods.projection_baselines import enforce_group_means, measurement_floor

    floor = measurement_floor(proj)
    return np.concatenate([enforce_group_means(pred[k * n:(k + 1) * n], proj[k], floor) for k in range(proj.shape[0])])


def gflop_per_plane(method: str, weights: str, n: int, calls: int = 1) -> float:
    """Network GFLOP per output plane of a 256 x 256 group (torch's FLOP counter; one call per
    group for unet, steps x samples calls for microdiffusion)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_voxrecon.engine.registry import get_method
    from napari_voxrecon.models.loading import load_model

    net = load_model(get_method("projection", method).weights_method, weights, "cpu").network
    x = torch.randn(1, n, 256, 256)
    fc = FlopCounterMode(display=False)
    with torch.no_grad(), fc:
        net(x if net.diffusion else None, x, torch.randn(1, 3, 256, 256), torch.ones(1), torch.ones(1, dtype=torch.bool), torch.zeros(1))
    return fc.get_total_flops() * calls / n / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ground_truth")
    ap.add_argument("--unet", help="projection unet weights (default: embedded)", default="default")
    ap.add_argument("--microdiffusion", help="microdiffusion weights (default: embedded; 'none' skips its rows)", default="default")
    ap.add_argument("--naive", help="naive-diffusion ablation weights (voxrecon train microdiffusion --no-inr-prior): "
                    "rows with the same steps and samples as microdiffusion")
    ap.add_argument("--intervals", type=int, nargs="+", default=[6, 4, 8, 16])
    ap.add_argument("--samples", type=int, default=4, help="K of the K-sample-mean rows")
    ap.add_argument("--steps", type=int, nargs="+", default=[4], help="microdiffusion sampling steps (one row set each)")
    ap.add_argument("--guidance", type=float, default=0.0, help="CFG weight of the microdiffusion rows")
    ap.add_argument("--iterations", type=int, default=600, help="INR fit iterations (grid)")
    ap.add_argument("--fourier-iterations", type=int, default=600, help="INR fit iterations (Fourier features)")
    ap.add_argument("--steps-curve", type=int, nargs="*", default=[1, 2, 8], help="extra microdiffusion step counts (1 sample) at the first interval")
    ap.add_argument("--fourier-intervals", type=int, nargs="*", default=[6], help="intervals with a Fourier-feature INR row (slow)")
    ap.add_argument("--skip", nargs="*", default=[], help="row groups to skip: classical inr fourier unet microdiffusion")
    ap.add_argument("--out")
    args = ap.parse_args()

    vol = read_volume(args.ground_truth)
    held = np.ascontiguousarray(split_holdout(vol.data.astype(np.float32))[1])
    lines = [
        f"Data: held-out part (last 37.5 % of x, {held.shape}) of `{Path(args.ground_truth).name}`; "
        f"date {datetime.date.today().isoformat()}; machine {platform.machine()}, {os.cpu_count()} CPU cores, no GPU.",
        "",
        f"Command: `python benchmarks/projection_models.py {args.ground_truth} --unet {args.unet} --microdiffusion {args.microdiffusion} "
        f"--intervals {' '.join(map(str, args.intervals))} --samples {args.samples} --steps {' '.join(map(str, args.steps))} "
        f"--guidance {args.guidance} --iterations {args.iterations} --fourier-iterations {args.fourier_iterations} "
        f"--fourier-intervals {' '.join(map(str, args.fourier_intervals))} --steps-curve {' '.join(map(str, args.steps_curve))}"
        + (f" --skip {' '.join(args.skip)}" if args.skip else "") + (f" --naive {args.naive}" if args.naive else "") + "`",
        "",
        "| n | method | PSNR | SSIM | Dice (Otsu) | s total | s / plane |",
        "|---|---|---|---|---|---|---|",
    ]
    md = {"weights": args.microdiffusion, "iterations": args.iterations, "guidance": args.guidance}
    for n in args.intervals:
        proj = simulate_projection(held, n)
        truth = held[: proj.shape[0] * n]
        rows = []
        if "classical" not in args.skip:
            rows += [("linear", "linear", {}), ("cubic", "cubic", {})]
        if "inr" not in args.skip:
            rows += [(f"INR grid ({args.iterations} it.)", "inr", {"iterations": args.iterations}),
                     ("INR grid + eq. 3 neighbours (σ 0.2)", "inr", {"iterations": args.iterations, "neighbour_sigma": 0.2})]
        if "fourier" not in args.skip and n in args.fourier_intervals:
            rows += [(f"INR Fourier features ({args.fourier_iterations} it.)", "inr", {"iterations": args.fourier_iterations, "encoding": "fourier"}),
                     (f"INR Fourier features ({args.fourier_iterations} it.) + eq. 3 neighbours (σ 0.2)", "inr",
                      {"iterations": args.fourier_iterations, "encoding": "fourier", "neighbour_sigma": 0.2})]
        if "unet" not in args.skip:
            rows += [("unet", "unet", {"weights": args.unet})]
        if "microdiffusion" not in args.skip and args.microdiffusion != "none":
            # Run without the consistency step; the "+ consistency" row applies the method's own
            # correction (the same function, so it equals a run with consistency on).
            for steps in args.steps:
                for k in (1, args.samples):
                    label = f"microdiffusion, {steps} steps, {'1 sample' if k == 1 else f'mean of {k}'}"
                    rows.append((label, "microdiffusion", {**md, "steps": steps, "samples": k, "consistency": False}))
            if n == args.intervals[0]:
                rows += [(f"microdiffusion, {steps} steps, 1 sample", "microdiffusion", {**md, "steps": steps, "samples": 1, "consistency": False})
                         for steps in args.steps_curve]
        if args.naive:
            for steps in args.steps:
                for k in (1, args.samples):
                    label = f"naive diffusion (linear prior, no INR), {steps} steps, {'1 sample' if k == 1 else f'mean of {k}'}"
                    rows.append((label, "microdiffusion", {**md, "weights": args.naive, "steps": steps, "samples": k,
                                                           "consistency": False}))
        for label, method, params in rows:
            pred, dt = run(method, proj, n, params)
            variants = [(label, pred)]
            if params.get("consistency") is False:
                variants.append((label + ", + consistency", consistent(pred, proj, n)))
            for name, p in variants:
                s = evaluate(p, truth, metrics=("psnr", "ssim", "dice"))
                lines.append(f"| {n} | {name} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['dice']:.4f} | {dt:.1f} | {dt / truth.shape[0]:.2f} |")
                print(lines[-1], flush=True)
    lines.append("")
    if "unet" not in args.skip:
        lines.append(f"Network cost at n = 6, 256 x 256: unet {gflop_per_plane('unet', args.unet, 6):.2f} GFLOP per plane.")
    if "microdiffusion" not in args.skip and args.microdiffusion != "none":
        for steps in args.steps:
            lines.append(f"microdiffusion, {steps} steps x {args.samples} samples: "
                         f"{gflop_per_plane('microdiffusion', args.microdiffusion, 6, steps * args.samples):.2f} GFLOP per plane.")
    finish(lines, args.out)


if __name__ == "__main__":
    main()
