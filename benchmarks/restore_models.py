"""Quality, speed and memory of the ``restore`` methods on real data the models never saw.

Usage:
  python benchmarks/restore_models.py ../shared/data/cells3d_nuclei.tif [--care W] [--dit W] \
      [--settings axial4 denoise] [--samples 2] [--steps-curve 1 2 4 10] [--attention-cost] \
      [--figure docs/images/restore_xz.png] [--out benchmarks/out/restore.md]

Held-out data: the last 37.5 % of x of the real volume (the learned models trained on the
rest, ``training.windows.split_holdout``), degraded by ``simulate_restore``:
- axial4: x4 axial subsampling after an axial blur of sigma 2 planes, noise level 0.05;
- denoise: no subsampling, noise level 0.1 and 0.2.
All output planes are scored against the clean held-out volume (PSNR, SSIM, MS-SSIM per plane,
averaged). Each learned row runs in a fresh process, so its peak memory (max RSS) is its own.
``--attention-cost`` times one forward pass of the dit network with decomposed and with full 3D
attention at a few volume sizes (fresh process each, peak memory included).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from report import finish  # benchmarks/report.py (scripts run from benchmarks/ on sys.path)

#: Full 3D attention is timed only up to this many tokens (its cost grows with their square).
FULL_ATTENTION_MAX_TOKENS = 16384
SETTINGS = {"axial4": [(4, 0.05)], "denoise": [(1, 0.1), (1, 0.2)]}


def _job(method: str, lq: np.ndarray, a: int, params: dict, threads: int) -> tuple[np.ndarray, float, float]:
    import torch

    from napari_voxrecon.engine import Job, run_job

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out = run_job(Job("restore", lq, {"axial_factor": a, **params}, method=method, seed=0, device="cpu"))["result"]
    return out, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(method: str, lq: np.ndarray, a: int, params: dict, threads: int) -> tuple[np.ndarray, float, float]:
    """(result, seconds, peak MiB) from a fresh process."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(_job, method, lq, a, params, threads).result()


def _attention_probe(shape: tuple[int, int, int], attention: str, dim: int, blocks: int, threads: int) -> tuple[float, float]:
    import torch

    from napari_voxrecon.models.restore_dit import RestoreDiT

    torch.set_num_threads(threads)
    net = RestoreDiT(dim=dim, depth=blocks, attention=attention).eval()
    x = torch.zeros(1, *shape)
    with torch.no_grad():
        net(x, x, torch.ones_like(x), torch.ones(1))  # warm-up
        t0 = time.perf_counter()
        net(x, x, torch.ones_like(x), torch.ones(1))
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def attention_cost(sizes: list[tuple[int, int, int]], dim: int, blocks: int, threads: int) -> list[str]:
    lines = ["| volume (D×H×W) | tokens | attention | s / forward | peak MiB |", "|---|---|---|---|---|"]
    for shape in sizes:
        tokens = shape[0] * (shape[1] // 4) * (shape[2] // 4)
        for attention in ("decomposed", "full"):
            if attention == "full" and tokens > FULL_ATTENTION_MAX_TOKENS:
                lines.append(f"| {shape[0]}×{shape[1]}×{shape[2]} | {tokens} | full | not run ((D·N)² = {tokens ** 2 / 1e9:.1f} G scores per head and block) | |")
                print(lines[-1], flush=True)
                continue
            try:
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
                    sec, mib = ex.submit(_attention_probe, shape, attention, dim, blocks, threads).result()
                row = f"{sec:.2f} | {mib:.0f}"
            except Exception as err:  # out of memory in the child: say so in the table
                row = f"failed ({type(err).__name__}) | –"
            lines.append(f"| {shape[0]}×{shape[1]}×{shape[2]} | {tokens} | {attention} | {row} |")
            print(lines[-1], flush=True)
    return lines


def gflop_per_plane(method: str, weights: str, axial_factor: int) -> tuple[float, float]:
    """Network GFLOP per 256 x 256 output plane: (per network call, once per tile for a dit's
    regression prior, 0 without one). Torch's FLOP counter on a 16 x 128 x 128 slab, the
    default tile; slab and tile overlaps not counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_voxrecon.methods.restore_models import default_weights_name
    from napari_voxrecon.models.loading import load_model

    spec = default_weights_name(method, axial_factor) if weights == "default" else weights
    net = load_model(method, spec, "cpu").network
    x = torch.zeros(1, 16, 128, 128)
    per_plane = 1 / 1e9 / 16 * 4
    kw, prior_gflop = {}, 0.0
    if getattr(net, "prior", None) is not None:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            kw["prior"] = net.prior_residual(x, torch.ones_like(x))
        prior_gflop = counter.get_total_flops() * per_plane
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, x, torch.ones_like(x), torch.ones(1), **kw)
    return counter.get_total_flops() * per_plane, prior_gflop


def xz_figure(views: dict[str, np.ndarray], path: str, gt: np.ndarray) -> None:
    """One PNG: the XZ section through the middle row of each volume, side by side, in the
    ground truth's 0.1-99.9 % window (z stretched 2x: the planes are 2x thicker than pixels)."""
    from PIL import Image, ImageDraw

    lo, hi = np.percentile(gt, [0.1, 99.9])
    tiles = []
    for name, vol in views.items():
        xz = vol[:, vol.shape[1] // 2, :]
        img = np.clip((xz - lo) / (hi - lo), 0, 1)
        img = np.repeat((img * 255).astype(np.uint8), 2, axis=0)
        tile = Image.fromarray(np.pad(img, ((18, 4), (4, 4)), constant_values=255))
        ImageDraw.Draw(tile).text((6, 3), name, fill=0)
        tiles.append(tile)
    width = sum(t.width for t in tiles)
    canvas = Image.new("L", (width, max(t.height for t in tiles)), 255)
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main() -> None:
    from napari_voxrecon.io import read_volume
    from napari_voxrecon.metrics import evaluate
    from napari_voxrecon.simulate import simulate_restore
    from napari_voxrecon.training.windows import split_holdout

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ground_truth")
    ap.add_argument("--care", default="default", help="care weights ('default': the embedded ones for each setting; 'none' skips)")
    ap.add_argument("--dit", default="default", help="dit weights ('default': the embedded ones for each setting; 'none' skips)")
    ap.add_argument("--settings", nargs="+", default=["axial4", "denoise"], choices=list(SETTINGS))
    ap.add_argument("--samples", type=int, default=2, help="K of the dit K-sample-mean row")
    ap.add_argument("--steps", type=int, default=2, help="dit sampling steps")
    ap.add_argument("--steps-curve", type=int, nargs="*", default=[], help="extra dit rows (1 sample) at these step counts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention-cost", action="store_true", help="also time decomposed vs full attention")
    ap.add_argument("--attention-dim", type=int, default=128)
    ap.add_argument("--figure", help="PNG of the XZ views (first setting)")
    ap.add_argument("--out")
    args = ap.parse_args()

    held = np.ascontiguousarray(split_holdout(read_volume(args.ground_truth).data.astype(np.float32))[1])
    lines = [
        f"Data: held-out part (last 37.5 % of x, {held.shape}) of `{Path(args.ground_truth).name}`; date "
        f"{datetime.date.today().isoformat()}; machine {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, "
        f"{args.threads} threads.",
        "",
        f"Command: `python benchmarks/restore_models.py {args.ground_truth} --care {args.care} --dit {args.dit} "
        f"--settings {' '.join(args.settings)} --samples {args.samples} --steps {args.steps}"
        + (f" --steps-curve {' '.join(map(str, args.steps_curve))}" if args.steps_curve else "")
        + (" --attention-cost" if args.attention_cost else "") + "`",
        "",
        "| setting | method | PSNR | SSIM | MS-SSIM | s / volume | peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    figure_views: dict[str, np.ndarray] = {}
    for setting in args.settings:
        for a, noise in SETTINGS[setting]:
            lq = simulate_restore(held, a, 1, noise, seed=0)
            label = f"{setting} (x{a}, noise {noise})"
            rows = [("trilinear", "trilinear", {}), ("tricubic", "tricubic", {})]
            if args.care != "none":
                rows.append(("care", "care", {"weights": args.care}))
            if args.dit != "none":
                rows.append((f"dit, 1 sample, {args.steps} steps", "dit", {"weights": args.dit, "samples": 1, "steps": args.steps}))
                if args.samples > 1:
                    rows.append((f"dit, mean of {args.samples}, {args.steps} steps", "dit",
                                 {"weights": args.dit, "samples": args.samples, "steps": args.steps}))
                rows += [(f"dit, 1 sample, {s} steps", "dit", {"weights": args.dit, "samples": 1, "steps": s})
                         for s in args.steps_curve if s != args.steps]
            for name, method, params in rows:
                pred, sec, mib = run_isolated(method, lq, a, params, args.threads)
                truth = held[: pred.shape[0]]
                m = evaluate(pred, truth, metrics=("psnr", "ssim", "ms_ssim"))
                lines.append(f"| {label} | {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['ms_ssim']:.4f} | {sec:.1f} | {mib:.0f} |")
                print(lines[-1], flush=True)
                if args.figure and setting == args.settings[0] and not figure_views.get(name):
                    figure_views.setdefault("truth", truth)
                    figure_views[name] = pred
    lines.append("")
    for setting in args.settings:
        a = SETTINGS[setting][0][0]
        for method in ("care", "dit"):
            weights = getattr(args, method)
            if weights != "none":
                call, prior = gflop_per_plane(method, weights, a)
                lines.append(f"{method} ({setting}): {call:.1f} GFLOP per 256 x 256 output plane per network call"
                             + (f" (x {args.steps} steps x {args.samples} samples for the K-sample row)" if method == "dit" else "")
                             + (f", plus {prior:.1f} GFLOP once for its regression prior" if prior else "") + ".")
    if args.attention_cost:
        lines += ["", f"**Attention cost** (one forward pass of a dit network, width {args.attention_dim}, 6 blocks, "
                  f"patch 4, {args.threads} threads):", ""]
        lines += attention_cost([(8, 64, 64), (16, 64, 64), (16, 128, 128), (32, 128, 128), (16, 256, 256)], args.attention_dim, 6, args.threads)
    if args.figure and figure_views:
        xz_figure(figure_views, args.figure, held)
        lines += ["", f"XZ views: `{args.figure}`"]
    finish(lines, args.out)


if __name__ == "__main__":
    main()
